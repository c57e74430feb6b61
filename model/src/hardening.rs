//! How tightly a replica's container is confined: the capabilities every
//! container loses, the few a service may take back (`cap_add`), its pids
//! limit and whether its root filesystem is read-only. The service spec
//! carries the choices, the assignment a copy, the node applies them.

use serde::{Deserialize, Serialize};

use super::{truncate, Result, ValidationError};

/// Capabilities of Docker's default set that every lb container loses: an
/// ordinary app (a web server, a worker) never needs them. Kept are CHOWN,
/// DAC_OVERRIDE, FOWNER, SETUID, SETGID, NET_BIND_SERVICE and KILL, so
/// images that start as root and drop to a user still start.
pub const DROPPED_CAPS: &[&str] = &[
    "NET_RAW",
    "SYS_CHROOT",
    "MKNOD",
    "AUDIT_WRITE",
    "SETFCAP",
    "SETPCAP",
    "FSETID",
];

/// The capabilities a service may take back with `cap_add`: only those of
/// [`DROPPED_CAPS`], never one beyond Docker's default set.
pub const ALLOWED_CAP_ADD: &[&str] = DROPPED_CAPS;

/// The pids limit of a replica unless its service says otherwise.
pub const DEFAULT_PIDS: u32 = 1024;
/// The largest pids limit a service may ask for (the cluster's maximum).
pub const MAX_PIDS: u32 = 16384;
/// The smallest pids limit (a shell and a few children).
pub const MIN_PIDS: u32 = 16;

fn default_pids() -> u32 {
    DEFAULT_PIDS
}

/// A replica's confinement as its node applies it. Records older than it
/// decode with the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardening {
    /// Capabilities taken back from [`DROPPED_CAPS`].
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// The most processes (and threads) in the container.
    #[serde(default = "default_pids")]
    pub pids: u32,
    /// A read-only root filesystem (with a writable tmpfs at /tmp).
    #[serde(default)]
    pub read_only: bool,
}

impl Default for Hardening {
    fn default() -> Self {
        Self {
            cap_add: Vec::new(),
            pids: DEFAULT_PIDS,
            read_only: false,
        }
    }
}

impl Hardening {
    /// Checks `cap_add` against [`ALLOWED_CAP_ADD`] and `pids` against
    /// [`MIN_PIDS`]..=[`MAX_PIDS`]; the error names the field at fault.
    pub fn validate(&self) -> Result<()> {
        for (i, cap) in self.cap_add.iter().enumerate() {
            if !ALLOWED_CAP_ADD.contains(&cap.as_str()) {
                return Err(ValidationError::new(
                    format!("cap_add[{i}]"),
                    format!(
                        "{:?} is not a capability a service may add (allowed: {})",
                        truncate(cap),
                        ALLOWED_CAP_ADD.join(", ")
                    ),
                ));
            }
            if self.cap_add[..i].contains(cap) {
                return Err(ValidationError::new(
                    format!("cap_add[{i}]"),
                    format!("{cap:?} is listed twice"),
                ));
            }
        }
        if !(MIN_PIDS..=MAX_PIDS).contains(&self.pids) {
            return Err(ValidationError::new(
                "pids",
                format!("{} is out of range ({MIN_PIDS}–{MAX_PIDS})", self.pids),
            ));
        }
        Ok(())
    }

    /// The capabilities the container drops: [`DROPPED_CAPS`] less
    /// `cap_add`. Anything in `cap_add` outside the allowed list is ignored
    /// here too, whatever a stored record says.
    pub fn cap_drop(&self) -> Vec<String> {
        DROPPED_CAPS
            .iter()
            .filter(|c| !self.cap_add.iter().any(|a| a == *c))
            .map(|c| (*c).to_owned())
            .collect()
    }

    /// The capabilities the container gets back: `cap_add` limited to
    /// [`ALLOWED_CAP_ADD`].
    pub fn cap_add(&self) -> Vec<String> {
        self.cap_add
            .iter()
            .filter(|c| ALLOWED_CAP_ADD.contains(&c.as_str()))
            .cloned()
            .collect()
    }

    /// The pids limit, clamped to [`MIN_PIDS`]..=[`MAX_PIDS`] whatever a
    /// stored record says.
    pub fn pids_limit(&self) -> u32 {
        self.pids.clamp(MIN_PIDS, MAX_PIDS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(h: Hardening, expect: std::result::Result<(), &str>) {
        assert_eq!(
            h.validate().map_err(|e| e.field),
            expect.map_err(str::to_owned),
            "{h:?}"
        );
    }

    #[test]
    fn only_allowed_capabilities_and_pids_in_range_pass() {
        check(Hardening::default(), Ok(()));
        let cap = |caps: &[&str]| Hardening {
            cap_add: caps.iter().map(|c| (*c).to_owned()).collect(),
            ..Hardening::default()
        };
        check(cap(&["NET_RAW", "MKNOD"]), Ok(()));
        check(cap(&["NET_RAW", "SYS_ADMIN"]), Err("cap_add[1]"));
        check(cap(&["net_raw"]), Err("cap_add[0]"));
        check(cap(&["NET_RAW", "NET_RAW"]), Err("cap_add[1]"));
        let pids = |pids| Hardening {
            pids,
            ..Hardening::default()
        };
        check(pids(MAX_PIDS), Ok(()));
        check(pids(MAX_PIDS + 1), Err("pids"));
        check(pids(MIN_PIDS - 1), Err("pids"));
    }

    #[test]
    fn the_container_drops_what_is_not_added_and_nothing_else_is_added() {
        let h = Hardening {
            cap_add: vec!["NET_RAW".into(), "SYS_ADMIN".into()],
            pids: 1 << 30,
            read_only: false,
        };
        assert!(!h.cap_drop().contains(&"NET_RAW".to_owned()));
        assert!(h.cap_drop().contains(&"MKNOD".to_owned()));
        assert_eq!(h.cap_add(), vec!["NET_RAW".to_owned()]);
        assert_eq!(h.pids_limit(), MAX_PIDS);
        let old: Hardening = serde_json::from_str("{}").unwrap();
        assert_eq!(old, Hardening::default());
    }
}
