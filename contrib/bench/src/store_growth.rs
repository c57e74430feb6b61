//! `lb-bench store-growth`: the embedded store's file size under steady
//! churn. Puts `rate` updates a second (one put each, spread over `keys`
//! keys, values of `value_bytes`) for `seconds`, on a fixed schedule, and
//! prints the file size every `every` seconds beside the bytes of live
//! values. Not a test: the figures are for reading (the goal: 50 updates/s
//! to 100 keys for an hour stays under 64 MiB).

use std::time::{Duration, Instant};

use anyhow::Context;
use lb_store::embedded::{EmbeddedStore, FILE_NAME};
use lb_store::StoreExt;

/// What to run.
pub struct Options {
    /// Updates per second.
    pub rate: u64,
    /// Seconds in all.
    pub seconds: u64,
    /// Distinct keys updated in turn.
    pub keys: u64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Seconds between size reports.
    pub every: u64,
    /// Store directory (a temp dir when absent).
    pub dir: Option<std::path::PathBuf>,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = o.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let store = EmbeddedStore::open_dir(&dir)
        .await
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    println!(
        "{} updates/s to {} keys, {} B values, for {} s: {}",
        o.rate,
        o.keys,
        o.value_bytes,
        o.seconds,
        dir.join(FILE_NAME).display()
    );
    println!(
        "{:>8} {:>10} {:>10} {:>10}",
        "seconds", "updates", "file MiB", "live MiB"
    );
    let rate = o.rate.max(1);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let every = Duration::from_secs(o.every.max(1));
    let live = (o.keys * o.value_bytes as u64) as f64 / 1048576.0;
    let report = |elapsed: Duration, n: u64| -> anyhow::Result<u64> {
        let size = store.file_size()?;
        println!(
            "{:>8.0} {:>10} {:>10.1} {:>10.2}",
            elapsed.as_secs_f64(),
            n,
            size as f64 / 1048576.0,
            live
        );
        Ok(size)
    };
    let started = Instant::now();
    let total = rate * o.seconds;
    let mut next_report = every;
    let mut largest = report(Duration::ZERO, 0)?;
    let mut behind = 0u64;
    for n in 0..total {
        let due = started + interval.mul_f64(n as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        } else if Instant::now() - due > Duration::from_secs(1) {
            behind += 1;
        }
        let mut value = format!("{n:020}").into_bytes();
        value.resize(o.value_bytes.max(20), b'v');
        store
            .put(&format!("/bench/growth/{:06}", n % o.keys.max(1)), value)
            .await?;
        if started.elapsed() >= next_report {
            largest = largest.max(report(started.elapsed(), n + 1)?);
            next_report += every;
        }
    }
    let end = report(started.elapsed(), total)?;
    largest = largest.max(end);
    println!(
        "largest file {:.1} MiB, at the end {:.1} MiB{}",
        largest as f64 / 1048576.0,
        end as f64 / 1048576.0,
        if behind > 0 {
            format!(" ({behind} updates ran more than 1 s late: the rate was not kept)")
        } else {
            String::new()
        }
    );
    Ok(())
}
