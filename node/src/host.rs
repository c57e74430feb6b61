//! What this machine offers and how loaded it is, from `/proc` and statvfs.
//! Disk figures are of Docker's data root when the engine told where it is
//! (images and containers fill it), else of the node's data dir.

use std::path::Path;

use lb_model::{Capacity, NodeStatus};

fn meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn disk(dir: &Path) -> (u64, u64) {
    let (total, free) = disk_bytes(dir);
    (total / (1 << 20), free / (1 << 20))
}

/// The file system's size and what is free to unprivileged users, bytes.
fn disk_bytes(dir: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let unit = s.fragment_size();
            (s.blocks() * unit, s.blocks_available() * unit)
        }
        Err(_) => (0, 0),
    }
}

/// The directory whose file system the node's disk figures are of.
fn disk_dir(config: &crate::Config) -> &Path {
    config
        .disk
        .root
        .as_deref()
        .unwrap_or(config.data_dir.as_path())
}

/// [`capacity`] of the node's disk (Docker's data root).
pub fn capacity_of(config: &crate::Config) -> Capacity {
    capacity(disk_dir(config))
}

/// [`status`] of the node's disk (Docker's data root), with
/// `--min-free-disk` and whether the node is below it.
pub fn status_of(config: &crate::Config, containers: u32) -> NodeStatus {
    let dir = disk_dir(config);
    let mut status = status(dir, containers);
    status.min_free_disk = config.disk.min_free_disk;
    status.low_disk = config.disk.min_free_disk.and_then(|limit| {
        let (total, free) = disk_bytes(dir);
        limit.check(free, total)
    });
    status
}

/// The machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| lb_model::validate_name(s).is_ok())
        .unwrap_or_else(|| "node".into())
}

/// CPUs, memory and disk (of the data dir's file system).
pub fn capacity(dir: &Path) -> Capacity {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Capacity {
        cpus,
        memory: meminfo("MemTotal:"),
        disk: disk(dir).0,
    }
}

/// Free memory and disk, load averages, and the container count.
pub fn status(dir: &Path, containers: u32) -> NodeStatus {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut parts = load
        .split_whitespace()
        .map(|p| p.parse::<f64>().unwrap_or(0.0));
    let load_average = [
        parts.next().unwrap_or(0.0),
        parts.next().unwrap_or(0.0),
        parts.next().unwrap_or(0.0),
    ];
    NodeStatus {
        free_memory: meminfo("MemAvailable:"),
        free_disk: disk(dir).1,
        load_average,
        containers,
        time: lb_model::now(),
        ..Default::default()
    }
}
