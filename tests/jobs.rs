//! One-off jobs and cron schedules on the real Docker engine: the API and
//! the scheduler in this process, a real `lb node` (see `common`). A job's
//! exit code and output are recorded and its container is gone; a cancel
//! and a time limit stop it; a node lost mid-job fails it with the reason
//! (it is not run again); a schedule with a seconds field fires one job per
//! tick; `concurrency: replace` cancels a run not over for the next tick's,
//! `forbid` skips ticks while one runs; 50 jobs started at once each run
//! once, in a container of their own, and leave none behind.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, IMAGE};
use serde_json::{json, Value};

const JOBS: &str = "/projects/demo/services/work/jobs";

/// A service whose image jobs run (no replicas of its own).
async fn service(c: &Cluster, extra: Value) {
    let mut spec = json!({"name": "work", "image": IMAGE, "replicas": 0, "memory": 16,
        "cpu": 0.1, "stop_timeout": 1, "env": {"GREETING": "hello-from-env"}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    c.call("POST", "/projects/demo/services", spec).await;
}

/// Starts a job and answers its id.
async fn start(c: &Cluster, body: Value) -> String {
    let job = c.call("POST", JOBS, body).await;
    assert_eq!(job["state"], "pending", "{job}");
    job["id"].as_str().unwrap().to_owned()
}

/// Waits until the job satisfies `want`.
async fn wait_job(
    c: &Cluster,
    id: &str,
    what: &str,
    limit: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let job = c.call("GET", &format!("{JOBS}/{id}"), Value::Null).await;
        if want(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} not {what} within {limit:?}: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn over(job: &Value) -> bool {
    !matches!(job["state"].as_str(), Some("pending" | "running"))
}

/// The containers (any state) labelled with this replica or job id.
fn containers_of(id: &str) -> usize {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=lb.replica={id}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

async fn wait_gone(id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while containers_of(id) > 0 {
        assert!(
            Instant::now() < deadline,
            "the container of job {id} is still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_once_with_its_exit_code_and_output_recorded() {
    let mut c = Cluster::start().await;
    let _node = c.node("a").await;
    service(&c, json!({})).await;

    let script = "echo \"$GREETING\"; echo to-stderr >&2; exit 3";
    let failing = start(&c, json!({"command": ["/bin/busybox", "sh", "-c", script]})).await;
    let job = wait_job(&c, &failing, "over", Duration::from_secs(60), over).await;
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["exit_code"], 3, "{job:#}");
    let logs = job["logs"].as_str().unwrap();
    assert!(
        logs.contains("hello-from-env"),
        "the service's env reaches the job: {logs:?}"
    );
    assert!(logs.contains("to-stderr"), "stderr is kept: {logs:?}");
    assert!(
        job["node"].is_string() && job["started"].is_i64() && job["finished"].is_i64(),
        "{job:#}"
    );
    wait_gone(&failing).await;

    let ok = start(&c, json!({"command": ["/bin/busybox", "true"]})).await;
    let job = wait_job(&c, &ok, "over", Duration::from_secs(60), over).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["exit_code"], 0);
    wait_gone(&ok).await;

    // The list shows both, newest first, without output.
    let list = c.call("GET", JOBS, Value::Null).await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [ok.as_str(), failing.as_str()]);
    assert!(list["items"][1].get("logs").is_none(), "{list:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_cancelled_and_timed_out() {
    let mut c = Cluster::start().await;
    let _node = c.node("a").await;
    service(&c, json!({})).await;

    let long = start(&c, json!({"command": ["/bin/busybox", "sleep", "300"]})).await;
    wait_job(&c, &long, "running", Duration::from_secs(60), |j| {
        j["state"] == "running"
    })
    .await;
    assert_eq!(containers_of(&long), 1);
    let cancelled = c
        .call("DELETE", &format!("{JOBS}/{long}"), Value::Null)
        .await;
    assert_eq!(cancelled["cancel"], true, "{cancelled:#}");
    let job = wait_job(&c, &long, "over", Duration::from_secs(30), over).await;
    assert_eq!(job["state"], "cancelled", "{job:#}");
    wait_gone(&long).await;

    let started = Instant::now();
    let limited = start(
        &c,
        json!({"command": ["/bin/busybox", "sleep", "300"], "timeout": 2}),
    )
    .await;
    let job = wait_job(&c, &limited, "over", Duration::from_secs(60), over).await;
    assert_eq!(job["state"], "timed_out", "{job:#}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    wait_gone(&limited).await;

    // Bad input names the field; a job that is over cannot be cancelled.
    let r = c
        .client
        .post(format!("{}/api/v1{JOBS}", c.api))
        .bearer_auth(&c.token)
        .json(&json!({"command": [], "timeout": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "command", "{body}");
    let r = c
        .client
        .delete(format!("{}/api/v1{JOBS}/{limited}", c.api))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // A job counts against the owner's quota as one more replica.
    let r = c
        .client
        .put(format!("{}/api/v1/users/alice/quota", c.api))
        .bearer_auth(&c.admin_token)
        .json(&json!({"replicas": 0}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = c
        .client
        .post(format!("{}/api/v1{JOBS}", c.api))
        .bearer_auth(&c.token)
        .json(&json!({"command": ["/bin/busybox", "true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "replicas", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_jobs_output_is_followed_live() {
    use futures::StreamExt;
    let mut c = Cluster::start().await;
    let _node = c.node("a").await;
    service(&c, json!({})).await;
    let script = "echo first; sleep 20; echo second";
    let id = start(&c, json!({"command": ["/bin/busybox", "sh", "-c", script]})).await;
    wait_job(&c, &id, "running", Duration::from_secs(60), |j| {
        j["state"] == "running"
    })
    .await;
    let ws = c.api.replacen("http", "ws", 1);
    let url = format!("{ws}/api/v1{JOBS}/{id}/logs?access_token={}", c.token);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // The first line comes while the job still runs (the second is 20 s away).
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("no output within 10 s")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first.into_data()).contains("first"));
    let job = c.call("GET", &format!("{JOBS}/{id}"), Value::Null).await;
    assert_eq!(job["state"], "running", "{job:#}");
    c.call("DELETE", &format!("{JOBS}/{id}"), Value::Null).await;
    let job = wait_job(&c, &id, "over", Duration::from_secs(30), over).await;
    assert_eq!(job["state"], "cancelled", "{job:#}");
    // Over: the socket answers the output kept.
    let url = format!("{ws}/api/v1{JOBS}/{id}/logs?access_token={}", c.token);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let kept = socket.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&kept.into_data()).contains("first"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_on_a_lost_node_fails_and_is_not_run_again() {
    let mut c = Cluster::start().await;
    let node = c.node("a").await;
    service(&c, json!({})).await;
    let long = start(&c, json!({"command": ["/bin/busybox", "sleep", "300"]})).await;
    wait_job(&c, &long, "running", Duration::from_secs(60), |j| {
        j["state"] == "running"
    })
    .await;
    node.kill().await;
    let job = wait_job(&c, &long, "over", Duration::from_secs(60), over).await;
    assert_eq!(job["state"], "failed", "{job:#}");
    let message = job["message"].as_str().unwrap();
    assert!(message.contains("lost"), "{message}");
    // A new node does not get it.
    let _b = c.node("b").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = c.call("GET", &format!("{JOBS}/{long}"), Value::Null).await;
    assert_eq!(job["state"], "failed", "{job:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_fires_one_job_per_tick() {
    let mut c = Cluster::start().await;
    let _node = c.node("a").await;
    let schedules = json!({"schedules": [{"name": "tick", "cron": "*/2 * * * * *",
        "command": ["/bin/busybox", "echo", "tock"], "concurrency": "allow"}]});
    service(&c, schedules).await;
    // A bad expression is refused, naming the field.
    let r = c
        .client
        .patch(format!("{}/api/v1/projects/demo/services/work", c.api))
        .bearer_auth(&c.token)
        .header("content-type", "application/merge-patch+json")
        .json(&json!({"schedules": [{"name": "bad", "cron": "61 * * * *", "command": ["true"]}]}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "schedules[0].cron", "{body}");

    tokio::time::sleep(Duration::from_secs(9)).await;
    let list = c.call("GET", JOBS, Value::Null).await;
    let jobs = list["items"].as_array().unwrap();
    let mut ticks: Vec<i64> = jobs.iter().map(|j| j["tick"].as_i64().unwrap()).collect();
    ticks.sort();
    assert!(
        (3..=5).contains(&ticks.len()),
        "{} jobs in 9 s: {ticks:?}",
        ticks.len()
    );
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            2,
            "one job per tick, none missed: {ticks:?}"
        );
    }
    assert!(jobs.iter().all(|j| j["schedule"] == "tick"));
    let done = wait_job(
        &c,
        jobs.last().unwrap()["id"].as_str().unwrap(),
        "over",
        Duration::from_secs(30),
        over,
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert!(done["logs"].as_str().unwrap().contains("tock"));
    let schedules = c
        .call("GET", "/projects/demo/services/work/schedules", Value::Null)
        .await;
    let s = &schedules["items"][0];
    assert_eq!(s["name"], "tick");
    assert!(
        s["next_run"].as_i64().unwrap() > s["last_tick"].as_i64().unwrap(),
        "{s:#}"
    );
    assert!(s["last_job"]["id"].is_string(), "{s:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_replaces_or_skips_a_run_not_over() {
    let mut c = Cluster::start().await;
    let _node = c.node("a").await;
    let long = json!(["/bin/busybox", "sleep", "300"]);
    let schedules = json!({"schedules": [
        {"name": "replace", "cron": "*/4 * * * * *", "command": long, "concurrency": "replace"},
        {"name": "forbid", "cron": "*/2 * * * * *", "command": long, "concurrency": "forbid"}]});
    service(&c, schedules).await;
    tokio::time::sleep(Duration::from_secs(14)).await;
    // No more ticks from here on: what fired is what is checked.
    let r = c
        .client
        .patch(format!("{}/api/v1/projects/demo/services/work", c.api))
        .bearer_auth(&c.token)
        .header("content-type", "application/merge-patch+json")
        .json(&json!({"schedules": []}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let list = c.call("GET", JOBS, Value::Null).await;
    let of = |name: &str| -> Vec<Value> {
        let mut jobs: Vec<Value> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["schedule"] == name)
            .cloned()
            .collect();
        jobs.sort_by_key(|j| j["tick"].as_i64());
        jobs
    };

    // replace: each tick's job cancelled the one before it.
    let replaced = of("replace");
    assert!(
        (2..=4).contains(&replaced.len()),
        "{} replace jobs in 14 s: {list:#}",
        replaced.len()
    );
    let (last, earlier) = replaced.split_last().unwrap();
    for job in earlier {
        let id = job["id"].as_str().unwrap();
        let job = wait_job(&c, id, "over", Duration::from_secs(30), over).await;
        assert_eq!(job["state"], "cancelled", "replaced: {job:#}");
        assert!(job["started"].is_i64(), "it had been running: {job:#}");
        wait_gone(id).await;
    }
    let last_id = last["id"].as_str().unwrap();
    let job = wait_job(&c, last_id, "running", Duration::from_secs(30), |j| {
        j["state"] == "running"
    })
    .await;
    assert!(job["cancel"].is_null(), "the newest run goes on: {job:#}");

    // forbid: one job, the ticks after it skipped while it runs.
    let forbidden = of("forbid");
    assert_eq!(forbidden.len(), 1, "one forbid job: {list:#}");
    let forbid_id = forbidden[0]["id"].as_str().unwrap();
    let job = wait_job(&c, forbid_id, "running", Duration::from_secs(30), |j| {
        j["state"] == "running"
    })
    .await;
    assert!(job["tick"].is_i64(), "{job:#}");

    for id in [last_id, forbid_id] {
        c.call("DELETE", &format!("{JOBS}/{id}"), Value::Null).await;
        let job = wait_job(&c, id, "over", Duration::from_secs(30), over).await;
        assert_eq!(job["state"], "cancelled", "{job:#}");
        wait_gone(id).await;
    }
}

/// Docker's container events for lb's replicas and jobs, read as they
/// come (the daemon keeps only the last 256 for `--since`): each as
/// (Unix nanoseconds, action, replica or job id). Stopped when dropped.
struct Events {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(i64, String, String)>,
}

impl Events {
    fn watch() -> Events {
        use std::io::BufRead;
        let mut child = Command::new("docker")
            .args(["events", "--filter", "type=container"])
            .args(["--filter", "label=lb.replica"])
            .args([
                "--format",
                "{{.TimeNano}} {{.Action}} {{index .Actor.Attributes \"lb.replica\"}}",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run docker events");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut words = line.split_whitespace();
                if let (Some(t), Some(action), Some(id)) =
                    (words.next(), words.next(), words.next())
                {
                    let _ = tx.send((t.parse().unwrap_or(0), action.to_owned(), id.to_owned()));
                }
            }
        });
        // `docker events` reports from when it has connected.
        std::thread::sleep(Duration::from_millis(500));
        Events { child, lines }
    }

    /// The events seen so far.
    fn take(&self) -> Vec<(i64, String, String)> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_jobs_at_once_each_run_once() {
    const N: usize = 50;
    let mut c = Cluster::start().await;
    let _node = c.node("a").await;
    // 50 x 16 MiB and 50 x 0.01 CPU fit one node.
    service(&c, json!({"cpu": 0.01})).await;
    let events = Events::watch();
    let t0 = Instant::now();
    let ids: Vec<String> = futures::future::join_all((0..N).map(|i| {
        let command = json!(["/bin/busybox", "sh", "-c", format!("echo job-{i}")]);
        start(&c, json!({ "command": command }))
    }))
    .await;
    let posted = t0.elapsed();
    let jobs = futures::future::join_all(
        ids.iter()
            .map(|id| wait_job(&c, id, "over", Duration::from_secs(300), over)),
    )
    .await;
    let done = t0.elapsed();
    for id in &ids {
        wait_gone(id).await;
    }
    let gone = t0.elapsed();
    println!(
        "{N} jobs: created in {posted:?}, all over in {done:?}, containers gone in {gone:?} \
         ({:.0} ms a job)",
        done.as_secs_f64() * 1000.0 / N as f64
    );
    for (i, job) in jobs.iter().enumerate() {
        assert_eq!(job["state"], "succeeded", "{job:#}");
        assert_eq!(job["exit_code"], 0, "{job:#}");
        assert_eq!(job["logs"], format!("job-{i}\n"), "its own output: {job:#}");
    }
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), N, "{ids:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = events.take();
    let mut created: BTreeMap<&str, usize> = ids.iter().map(|id| (id.as_str(), 0)).collect();
    let mut times: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (at, action, id) in &events {
        if let Some(n) = created.get_mut(id.as_str()) {
            times.entry(action.as_str()).or_default().push(*at);
            if action == "create" {
                *n += 1;
            }
        }
    }
    let wrong: Vec<_> = created.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        wrong.is_empty(),
        "containers created per job, not one: {wrong:?}"
    );
    // When Docker saw each step, from the first create: is it spread out?
    let zero = times["create"].iter().min().copied().unwrap_or(0);
    for action in ["create", "start", "die", "destroy"] {
        let mut at: Vec<f64> = times
            .get(action)
            .map(|t| t.iter().map(|t| (t - zero) as f64 / 1e9).collect())
            .unwrap_or_default();
        at.sort_by(f64::total_cmp);
        if let (Some(first), Some(last)) = (at.first(), at.last()) {
            println!(
                "  {action:8} x{:2}: first at {first:5.2} s, median {:5.2} s, last {last:5.2} s",
                at.len(),
                at[at.len() / 2]
            );
        }
    }
    let list = c.call("GET", JOBS, Value::Null).await;
    assert_eq!(list["items"].as_array().unwrap().len(), N, "{list:#}");
    // The baseline: the same containers by `docker run --rm`, as many at
    // once as the node creates (a figure to compare, not a pass/fail).
    let t0 = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..lb_node::reconcile::CREATES {
            scope.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < N {
                    let out = Command::new("docker")
                        .args(["run", "--rm", "--memory", "16m", IMAGE])
                        .args(["/bin/busybox", "echo", "baseline"])
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "docker run: {out:?}");
                }
            });
        }
    });
    let baseline = t0.elapsed();
    println!(
        "baseline: {N} x docker run --rm, {} at once: {baseline:?}; lb's jobs took {:.2}x that",
        lb_node::reconcile::CREATES,
        done.as_secs_f64() / baseline.as_secs_f64()
    );
}
