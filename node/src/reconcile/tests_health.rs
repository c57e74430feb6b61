//! Health checks in the loop, against the fake runtime with paused time:
//! probes on their timers, unhealthy replicas restarted after `retries`
//! failures in a row, the start period, statuses sent only on change, the
//! image's own `HEALTHCHECK`, and no spinning with many replicas.

use lb_model::{Assignment, Health, HealthCheck, Port, Protocol, ReplicaState};
use tokio::time::Instant;

use super::tests::{assignment, Harness, MS, SEC};
use crate::runtime::fake::{Call, Fake};

/// A replica with container port 80 and a TCP check on it.
fn checked(n: usize, retries: u32, start_period: u32) -> Assignment {
    Assignment {
        ports: vec![Port {
            container: 80,
            host: None,
            protocol: Protocol::Tcp,
        }],
        health: Some(HealthCheck {
            http: None,
            tcp: Some(true),
            command: None,
            interval: 10,
            timeout: 3,
            retries,
            start_period,
            port: Some(80),
        }),
        ..assignment(n)
    }
}

fn health_of(h: &Harness, a: &Assignment) -> Option<Health> {
    h.status(&a.replica).and_then(|s| s.health)
}

fn checks_of(h: &Harness, a: &Assignment) -> usize {
    h.fake
        .state()
        .count(|c| *c == Call::Check(a.replica.clone()))
}

#[tokio::test(start_paused = true)]
async fn a_passing_check_makes_a_replica_healthy_within_a_second() {
    let a = checked(1, 3, 0);
    let h = Harness::start(Fake::new(MS, MS), vec![a.clone()]).await;
    h.until(5 * SEC, "not starting", |h| {
        h.status(&a.replica).is_some_and(|s| {
            s.state == ReplicaState::Running
                && s.health == Some(Health::Starting)
                && s.health_since.is_some()
        })
    })
    .await;
    let started = Instant::now();
    h.until(2 * SEC, "not healthy", |h| {
        health_of(h, &a) == Some(Health::Healthy)
    })
    .await;
    assert!(
        started.elapsed() <= SEC + 10 * MS,
        "{:?}",
        started.elapsed()
    );
    let status = h.status(&a.replica).unwrap();
    assert!(status.takes_traffic() && status.health_message.is_empty());
}

#[tokio::test(start_paused = true)]
async fn unhealthy_after_retries_in_a_row_is_restarted() {
    let a = checked(1, 3, 0);
    let fake = Fake::new(MS, MS);
    fake.state()
        .checks
        .insert(a.replica.clone(), Err("connection refused".into()));
    let h = Harness::start(fake, vec![a.clone()]).await;
    h.all_running(std::slice::from_ref(&a), 5 * SEC).await;
    let started = Instant::now();
    h.until(2 * SEC, "no failing check reported", |h| {
        h.status(&a.replica).is_some_and(|s| {
            s.health == Some(Health::Starting)
                && s.health_message == "TCP port 80: connection refused"
        })
    })
    .await;
    // Checks at 1, 11 and 21 s: the third failure in a row restarts it.
    h.restarted(&a, 1, 30 * SEC).await;
    let took = started.elapsed();
    assert!(
        20 * SEC <= took && took <= 22 * SEC,
        "restarted after {took:?}"
    );
    let status = h.status(&a.replica).unwrap();
    assert_eq!(
        status.message,
        "restarted: unhealthy (TCP port 80: connection refused)"
    );
    assert_eq!(status.health, Some(Health::Starting), "checked anew");
    assert_eq!(status.health_message, "TCP port 80: connection refused");
    // It was reported unhealthy (out of the routes) before it was stopped.
    let history = h.history.lock().unwrap().clone();
    let unhealthy = history
        .iter()
        .position(|(_, s)| s.health == Some(Health::Unhealthy))
        .expect("reported unhealthy");
    assert!(!history[unhealthy].1.takes_traffic());
    let s = h.fake.state();
    assert_eq!(s.stops(), vec![("c1".to_owned(), 7)], "a graceful stop");
    assert_eq!(s.count(|c| *c == Call::Check(a.replica.clone())), 3);
    assert_eq!(s.overlaps, 0);
}

#[tokio::test(start_paused = true)]
async fn failures_within_the_start_period_do_not_count() {
    let a = checked(1, 1, 30);
    let fake = Fake::new(MS, MS);
    fake.state()
        .checks
        .insert(a.replica.clone(), Err("refused".into()));
    let h = Harness::start(fake, vec![a.clone()]).await;
    h.all_running(std::slice::from_ref(&a), 5 * SEC).await;
    tokio::time::sleep(29 * SEC).await;
    assert_eq!(checks_of(&h, &a), 3, "checks at 1, 11 and 21 s");
    assert_eq!(health_of(&h, &a), Some(Health::Starting));
    assert_eq!(h.status(&a.replica).unwrap().restarts, 0);
    // The check at 31 s counts, and one failure is all it takes.
    h.restarted(&a, 1, 5 * SEC).await;

    // Passing again: healthy, and a later failure short of `retries`
    // keeps it so.
    h.fake.state().checks.remove(&a.replica);
    h.until(3 * SEC, "not healthy", |h| {
        health_of(h, &a) == Some(Health::Healthy)
    })
    .await;
    assert_eq!(
        h.status(&a.replica).unwrap().health_message,
        "",
        "the failure text goes once a check passes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_check_that_never_answers_fails_at_its_timeout() {
    let a = checked(1, 1, 0);
    let fake = Fake::new(MS, MS);
    fake.state().hanging.insert(a.replica.clone());
    let h = Harness::start(fake, vec![a.clone()]).await;
    h.restarted(&a, 1, 10 * SEC).await;
    assert_eq!(
        h.status(&a.replica).unwrap().message,
        "restarted: unhealthy (TCP port 80: no answer within 3 s)"
    );
}

#[tokio::test(start_paused = true)]
async fn statuses_are_sent_only_on_change() {
    let a = checked(1, 3, 0);
    let h = Harness::start(Fake::new(MS, MS), vec![a.clone()]).await;
    h.until(5 * SEC, "not healthy", |h| {
        health_of(h, &a) == Some(Health::Healthy)
    })
    .await;
    let sent = || h.history.lock().unwrap().len();
    let before = sent();
    // Ten passing checks and a few resyncs later: nothing new to say.
    tokio::time::sleep(100 * SEC).await;
    assert!(checks_of(&h, &a) >= 10);
    assert_eq!(sent(), before, "{:#?}", h.history.lock().unwrap());
    // One failure (short of 3) is news: its text; the pass after is too.
    h.fake
        .state()
        .checks
        .insert(a.replica.clone(), Err("503".into()));
    tokio::time::sleep(10 * SEC).await;
    h.fake.state().checks.remove(&a.replica);
    tokio::time::sleep(10 * SEC).await;
    let history = h.history.lock().unwrap();
    let news: Vec<_> = history[before..]
        .iter()
        .map(|(_, s)| (s.health, s.health_message.clone()))
        .collect();
    assert_eq!(
        news,
        vec![
            (Some(Health::Healthy), "TCP port 80: 503".to_owned()),
            (Some(Health::Healthy), String::new()),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn fifty_checked_replicas_do_not_spin() {
    let replicas: Vec<Assignment> = (0..50).map(|n| checked(n, 3, 0)).collect();
    let h = Harness::start(Fake::new(MS, MS), replicas.clone()).await;
    h.until(10 * SEC, "not all healthy", |h| {
        replicas
            .iter()
            .all(|a| health_of(h, a) == Some(Health::Healthy))
    })
    .await;
    let (checks, lists, sent) = {
        let s = h.fake.state();
        (
            s.count(|c| matches!(c, Call::Check(_))),
            s.count(|c| *c == Call::List),
            h.history.lock().unwrap().len(),
        )
    };
    tokio::time::sleep(100 * SEC).await;
    let s = h.fake.state();
    let checks = s.count(|c| matches!(c, Call::Check(_))) - checks;
    let lists = s.count(|c| *c == Call::List) - lists;
    // One check per replica per 10 s interval, and passes only from the
    // 10 s resync: checks that pass start no pass and send nothing.
    assert!((450..=550).contains(&checks), "{checks} checks in 100 s");
    assert!(lists <= 11, "{lists} passes in 100 s");
    assert_eq!(h.history.lock().unwrap().len(), sent, "statuses resent");
}

#[tokio::test(start_paused = true)]
async fn the_images_healthcheck_is_reported_and_an_unhealthy_one_restarted() {
    let a = assignment(1);
    let h = Harness::start(Fake::new(MS, MS), vec![a.clone()]).await;
    h.all_running(std::slice::from_ref(&a), 5 * SEC).await;
    assert_eq!(health_of(&h, &a), None, "no check at all");
    let set = |health: Health| {
        for c in h.fake.state().containers.values_mut() {
            c.health = Some(health);
        }
        let _ = h.fake.events.send(());
    };
    set(Health::Healthy);
    h.until(2 * SEC, "Docker's verdict not reported", |h| {
        health_of(h, &a) == Some(Health::Healthy)
    })
    .await;
    assert_eq!(checks_of(&h, &a), 0, "Docker runs the image's check");
    // Docker's record of the last probe says why.
    h.fake
        .state()
        .checks
        .insert(a.replica.clone(), Err("exit code 1: down".into()));
    set(Health::Unhealthy);
    h.restarted(&a, 1, 5 * SEC).await;
    let status = h.status(&a.replica).unwrap();
    assert_eq!(
        status.message,
        "restarted: unhealthy (HEALTHCHECK: exit code 1: down)"
    );
    assert_eq!(status.health, Some(Health::Starting));
}
