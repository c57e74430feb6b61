//! Nodes: machines running replicas under a node daemon.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// What a node offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Capacity {
    /// CPUs.
    pub cpus: f64,
    /// Memory in MiB.
    pub memory: u64,
    /// Disk in MiB.
    #[serde(default)]
    pub disk: u64,
}

/// A node's record, at `/lb/nodes/<id>/meta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The node id.
    pub id: String,
    /// Its name, a DNS label.
    pub name: String,
    /// Labels matched by node selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Address other hosts reach it at.
    #[serde(default)]
    pub address: String,
    /// What it offers.
    pub capacity: Capacity,
    /// When it joined.
    pub created: Timestamp,
}

/// A node's heartbeat, at `/lb/nodes/<id>/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeStatus {
    /// Free memory in MiB.
    pub free_memory: u64,
    /// Free disk in MiB.
    pub free_disk: u64,
    /// 1, 5 and 15 minute load averages.
    pub load_average: [f64; 3],
    /// Containers lb runs there.
    pub containers: u32,
    /// When it was reported.
    pub time: Timestamp,
    /// The node's `--min-free-disk`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_free_disk: Option<DiskLimit>,
    /// Set while the free disk (of Docker's data root) is below
    /// `min_free_disk`, saying so: the node is given no new replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_disk: Option<String>,
    /// What keeps the node from enforcing tenant isolation, each naming
    /// the part at fault (`firewall: iptables-restore not found`); empty
    /// when everything is in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A node's `--min-free-disk`: a percentage of the disk or a size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiskLimit {
    /// Percent of the file system's size (0 to 100).
    Percent(f64),
    /// Bytes.
    Bytes(u64),
}

const UNITS: [(&str, u64); 9] = [
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("k", 1000),
    ("m", 1_000_000),
    ("g", 1_000_000_000),
    ("t", 1_000_000_000_000),
    ("b", 1),
];

/// A size such as `5GiB`, `500MiB`, `2G`, `10GB` or `1048576` (bytes).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size like 5GiB, 500MiB or 1073741824");
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let unit = if unit.len() == 2 && unit.ends_with('b') && unit != "kb" {
        &unit[..1]
    } else if unit == "kb" {
        "k"
    } else {
        unit
    };
    let factor = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, f)| *f)
            .ok_or_else(bad)?
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    Ok((n * factor as f64) as u64)
}

fn human(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if bytes >= GIB {
        format!("{:.1}GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{:.1}MiB", bytes as f64 / MIB as f64)
    }
}

impl std::str::FromStr for DiskLimit {
    type Err = String;

    /// `10%` or a size (see [`parse_bytes`]).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().strip_suffix('%') {
            Some(p) => {
                let p: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("{s:?} is not a percentage like 10%"))?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!("{s:?}: a percentage is between 0% and 100%"));
                }
                Ok(DiskLimit::Percent(p))
            }
            None => parse_bytes(s).map(DiskLimit::Bytes),
        }
    }
}

impl std::fmt::Display for DiskLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskLimit::Percent(p) => write!(f, "{p}%"),
            DiskLimit::Bytes(b) if b % (1 << 30) == 0 => write!(f, "{}GiB", b >> 30),
            DiskLimit::Bytes(b) if b % (1 << 20) == 0 => write!(f, "{}MiB", b >> 20),
            DiskLimit::Bytes(b) => write!(f, "{b}"),
        }
    }
}

impl Serialize for DiskLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DiskLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl DiskLimit {
    /// Why `free` of `total` bytes is below the limit (e.g. `3% disk free
    /// (1.2GiB of 40.0GiB), below --min-free-disk 10%`), or `None`.
    pub fn check(&self, free: u64, total: u64) -> Option<String> {
        let low = match *self {
            DiskLimit::Percent(p) => (free as f64) < p / 100.0 * total as f64,
            DiskLimit::Bytes(b) => free < b,
        };
        let percent = if total == 0 {
            0
        } else {
            (free as u128 * 100 / total as u128) as u64
        };
        low.then(|| {
            format!(
                "{percent}% disk free ({} of {}), below --min-free-disk {self}",
                human(free),
                human(total)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_limits_parse_print_and_check() {
        let check = |s: &str, expect: &str| {
            let got = match s.parse::<DiskLimit>() {
                Ok(l) => format!("{l:?} {l}"),
                Err(e) => format!("error: {e}"),
            };
            assert_eq!(got, expect, "{s}");
        };
        check("10%", "Percent(10.0) 10%");
        check("2.5%", "Percent(2.5) 2.5%");
        check("5GiB", "Bytes(5368709120) 5GiB");
        check("500MiB", "Bytes(524288000) 500MiB");
        check("1G", "Bytes(1000000000) 1000000000");
        check("10GB", "Bytes(10000000000) 10000000000");
        check("1024", "Bytes(1024) 1024");
        check(
            "101%",
            "error: \"101%\": a percentage is between 0% and 100%",
        );
        check(
            "ten",
            "error: \"ten\" is not a size like 5GiB, 500MiB or 1073741824",
        );
        check(
            "5XB",
            "error: \"5XB\" is not a size like 5GiB, 500MiB or 1073741824",
        );
        let ten = DiskLimit::Percent(10.0);
        assert_eq!(ten.check(50, 100), None);
        assert_eq!(
            ten.check(3 << 30, 100 << 30).as_deref(),
            Some("3% disk free (3.0GiB of 100.0GiB), below --min-free-disk 10%")
        );
        assert!(DiskLimit::Percent(100.0).check(99, 100).is_some());
        assert_eq!(DiskLimit::Bytes(1 << 30).check(2 << 30, 10 << 30), None);
        let status: NodeStatus =
            serde_json::from_str(r#"{"free_memory":1,"free_disk":2,"load_average":[0,0,0],"containers":0,"time":0,"min_free_disk":"10%"}"#)
                .unwrap();
        assert_eq!(status.min_free_disk, Some(ten));
        assert!(
            serde_json::to_string(&NodeStatus::default()).is_ok_and(|s| !s.contains("low_disk"))
        );
    }
}
