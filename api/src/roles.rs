//! The health of the roles that run beside the API in this process (in `lb
//! up`: the scheduler, the builder, the local node), as their supervisor
//! (`src/supervise.rs` in the `lb` binary) reports it. `/readyz` answers
//! 503 while one of them is down, and lists each role's state.
//!
//! One table per process: the binary runs one API server, and a process
//! that registers no role (`lb api`, the API's tests) is ready on the store
//! alone.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// What a role is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleState {
    /// Started (or restarted) and running.
    Running,
    /// Failed; restarting after a backoff. The cause is the failure.
    Down {
        /// Why it failed (an error or a panic message).
        cause: String,
        /// How many times it failed in a row.
        failures: u32,
    },
    /// Not running here by design (no Docker engine for the local node).
    Off(String),
}

fn table() -> &'static Mutex<BTreeMap<String, RoleState>> {
    static ROLES: OnceLock<Mutex<BTreeMap<String, RoleState>>> = OnceLock::new();
    ROLES.get_or_init(Default::default)
}

/// Records `role`'s state.
pub fn set(role: &str, state: RoleState) {
    table()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(role.to_owned(), state);
}

/// Every role and its state, by name.
pub fn snapshot() -> Vec<(String, RoleState)> {
    table()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One line per role for `/readyz` (`builder: down (2 failures): ...`), and
/// whether every role is up.
pub fn report() -> (bool, String) {
    let mut up = true;
    let mut text = String::new();
    for (role, state) in snapshot() {
        let line = match state {
            RoleState::Running => format!("{role}: running"),
            RoleState::Off(why) => format!("{role}: off ({why})"),
            RoleState::Down { cause, failures } => {
                up = false;
                format!("{role}: down ({failures} failures in a row): {cause}")
            }
        };
        text.push_str(&line);
        text.push('\n');
    }
    (up, text)
}

/// Runs a controller of the API server (it runs as long as the process)
/// under supervision: when it panics, the cause is logged, it is
/// marked down and started again after a backoff (200 ms doubling to 30 s,
/// reset after a minute of running).
pub fn supervise<F, Fut>(role: &'static str, start: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use std::time::{Duration, Instant};
    tokio::spawn(async move {
        let mut backoff =
            lb_model::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut failures = 0;
        loop {
            set(role, RoleState::Running);
            let began = Instant::now();
            let cause = match tokio::spawn(start()).await {
                // It ended on purpose (nobody reads its output any more).
                Ok(()) => {
                    set(role, RoleState::Off("ended".into()));
                    return;
                }
                Err(err) => match err.try_into_panic() {
                    Ok(payload) => payload
                        .downcast_ref::<&str>()
                        .map(|s| format!("panicked: {s}"))
                        .or_else(|| {
                            payload
                                .downcast_ref::<String>()
                                .map(|s| format!("panicked: {s}"))
                        })
                        .unwrap_or_else(|| "panicked".into()),
                    Err(err) => format!("task ended: {err}"),
                },
            };
            if began.elapsed() > Duration::from_secs(60) {
                backoff.reset();
                failures = 0;
            }
            failures += 1;
            set(
                role,
                RoleState::Down {
                    cause: cause.clone(),
                    failures,
                },
            );
            let delay = backoff.next_delay();
            tracing::error!(role, failures, "failed: {cause}; restarting in {delay:?}");
            tokio::time::sleep(delay).await;
        }
    });
}
