//! One-off jobs against the recording fake with tokio's clock paused: a
//! job's container runs once and is never restarted, its end is reported
//! once per connection, and the time limit and a cancel stop it.

use std::time::Duration;

use lb_model::protocol::ToNode;
use lb_model::{Assignment, JobRun};

use super::tests::{assignment, Harness};
use crate::runtime::fake::{Call, Fake};

fn job(n: usize, timeout: u64) -> Assignment {
    Assignment {
        job: Some(JobRun {
            timeout,
            cancel: false,
        }),
        ..assignment(n)
    }
}

fn creates(h: &Harness) -> usize {
    h.fake.state().count(|c| matches!(c, Call::Create(..)))
}

#[tokio::test(start_paused = true)]
async fn a_job_runs_once_and_its_end_is_reported() {
    let a = job(1, 3600);
    let h = Harness::start(
        Fake::new(Duration::from_millis(100), Duration::ZERO),
        vec![a.clone()],
    )
    .await;
    h.all_running(std::slice::from_ref(&a), Duration::from_secs(5))
        .await;
    h.fake.crash(&a.replica, 3);
    h.until(Duration::from_secs(5), "no end reported", |h| {
        !h.ends.lock().unwrap().is_empty()
    })
    .await;
    // Time passes: no restart, no second report on this connection.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(creates(&h), 1, "a job's container is never made twice");
    let ends = h.ends.lock().unwrap().clone();
    assert_eq!(ends.len(), 1, "{ends:?}");
    let (id, end) = &ends[0];
    assert_eq!(id, &a.replica);
    assert_eq!(end.exit_code, Some(3));
    assert!(end.logs.contains("logs of"), "{end:?}");
    assert!(
        !end.timed_out && !end.cancelled && end.error.is_none(),
        "{end:?}"
    );
    // A new connection: the end is sent again (the API may have missed it).
    h.send(ToNode::Desired {
        replicas: vec![a.clone()],
        registry: None,
        grace_ms: None,
    })
    .await;
    h.until(Duration::from_secs(5), "the end not sent again", |h| {
        h.ends.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(creates(&h), 1);
    // The API recorded it and removed the assignment: the container goes.
    h.send(ToNode::Delete {
        replica: a.replica.clone(),
    })
    .await;
    h.until(Duration::from_secs(30), "the container stayed", |h| {
        h.fake.count() == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_time_limit_and_a_cancel_stop_a_job() {
    let limited = job(1, 30);
    let cancelled = job(2, 3600);
    let fake = Fake::new(Duration::from_millis(100), Duration::ZERO);
    let h = Harness::start(fake, vec![limited.clone(), cancelled.clone()]).await;
    h.all_running(
        &[limited.clone(), cancelled.clone()],
        Duration::from_secs(5),
    )
    .await;
    h.send(ToNode::Put(Box::new(Assignment {
        job: Some(JobRun {
            timeout: 3600,
            cancel: true,
        }),
        ..cancelled.clone()
    })))
    .await;
    h.until(Duration::from_secs(60), "no ends", |h| {
        h.ends.lock().unwrap().len() == 2
    })
    .await;
    let ends = h.ends.lock().unwrap().clone();
    let of = |id: &str| ends.iter().find(|(j, _)| j == id).unwrap().1.clone();
    let end = of(&cancelled.replica);
    assert!(end.cancelled && !end.timed_out, "{end:?}");
    let end = of(&limited.replica);
    assert!(end.timed_out && !end.cancelled, "{end:?}");
    assert_eq!(creates(&h), 2, "stopped jobs are not started again");
}
