//! Supervised roles: each role `lb up` runs beside the API (the scheduler,
//! the builder and registry, the local node) is a task started by
//! [`spawn`]. When the task fails — an error, a panic, or an end before
//! shutdown was asked — the cause is logged, the role is marked down for
//! `/readyz` (`lb_api::roles`), and it is started again after a backoff
//! (1 s doubling to 30 s, with jitter; reset once it ran a minute). The API
//! server is the one part that is not restarted (its address is bound
//! once): `src/up.rs` runs it as a task, and a panic there ends `lb` with a
//! non-zero exit.
//!
//! For tests only: `LB_TEST_PANIC_ROLE=<role>[:<n>]` makes the first `n`
//! starts (default 1) of that role panic, as a role's own bug would.

use std::future::Future;
use std::time::{Duration, Instant};

use lb_api::roles::{self, RoleState};
use lb_model::backoff::Backoff;

use crate::shutdown::Shutdown;

/// How long a role must run before its backoff starts over.
const STABLE: Duration = Duration::from_secs(60);

/// How a start of a role ended without failing.
pub enum Ended {
    /// It stopped because shutdown was asked (or it ended on its own: the
    /// supervisor tells the two apart by the shutdown signal).
    Stopped,
    /// The role does not run on this machine (the reason is shown in
    /// `/readyz`): not restarted, not a failure.
    Off(String),
}

/// How many starts of `role` the test hook makes panic.
fn test_panics(role: &str) -> u32 {
    let Ok(value) = std::env::var("LB_TEST_PANIC_ROLE") else {
        return 0;
    };
    let (name, count) = value.split_once(':').unwrap_or((&value, "1"));
    if name == role {
        count.parse().unwrap_or(1)
    } else {
        0
    }
}

/// A panic's message (`&str` or `String` payloads; others are unnamed).
fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            format!("panicked: {text}")
        }
        Err(err) => format!("task ended: {err}"),
    }
}

/// Runs `role` under supervision until shutdown. `start` makes one start of
/// the role (its argument is the number of the start, from 0); each start
/// runs as a task of its own, so a panic ends that task only.
pub fn spawn<F, Fut>(
    role: &'static str,
    shutdown: Shutdown,
    mut start: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(u32) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<Ended>> + Send + 'static,
{
    let mut panics = test_panics(role);
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut failures = 0u32;
        let mut attempt = 0u32;
        loop {
            let run = start(attempt);
            attempt += 1;
            let hook = std::mem::take(&mut panics);
            panics = hook.saturating_sub(1);
            if failures == 0 {
                roles::set(role, RoleState::Running);
            }
            let began = Instant::now();
            let mut task = tokio::spawn(async move {
                if hook > 0 {
                    panic!("LB_TEST_PANIC_ROLE: {role} panics at start, as asked");
                }
                run.await
            });
            // A start that fails at once leaves the role down; one that
            // runs a while is up again.
            let mut marked = false;
            let outcome = loop {
                tokio::select! {
                    outcome = &mut task => break outcome,
                    _ = tokio::time::sleep(Duration::from_secs(2)), if !marked => {
                        roles::set(role, RoleState::Running);
                        marked = true;
                    }
                }
            };
            let stopping = shutdown.is_set();
            let cause = match outcome {
                Ok(Ok(Ended::Stopped)) if stopping => return,
                Ok(Ok(Ended::Stopped)) => "ended before shutdown was asked".to_owned(),
                Ok(Ok(Ended::Off(why))) => {
                    tracing::warn!(role, "not running here: {why}");
                    roles::set(role, RoleState::Off(why));
                    return;
                }
                Ok(Err(err)) => format!("{err:#}"),
                Err(err) => panic_message(err),
            };
            if stopping {
                tracing::warn!(role, "failed while stopping: {cause}");
                return;
            }
            if began.elapsed() >= STABLE {
                backoff.reset();
                failures = 0;
            }
            failures += 1;
            roles::set(
                role,
                RoleState::Down {
                    cause: cause.clone(),
                    failures,
                },
            );
            let delay = backoff.next_delay();
            tracing::error!(role, failures, "failed: {cause}; restarting in {delay:?}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.clone().wait() => return,
            }
            tracing::info!(role, "restarting");
        }
    })
}
