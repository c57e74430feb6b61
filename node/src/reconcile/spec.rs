//! The identity of a container: a stable hash of everything it is made
//! from, written in its `lb.spec` label. A changed hash means a new
//! container; an unchanged one is adopted, also after the daemon restarts.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use lb_model::{Assignment, Hardening};
use sha2::{Digest, Sha256};

use crate::runtime::Container;

/// A hash of everything a container is made from: a change means a new one.
///
/// SHA-256 over a canonical encoding (JSON of a fixed tuple: maps are
/// ordered, the CPU count is its bit pattern), so it stays the same across
/// Rust releases and lb versions; a test pins it. `stop_timeout` is not in
/// it: a new grace period is no reason to kill a running replica, and the
/// container carries its own in a label.
///
/// The confinement ([`Assignment::hardening`]) counts only when it differs
/// from the default, so containers made before it existed keep their hash
/// and are adopted (they get the hardening on their next new container).
pub fn spec_hash(a: &Assignment) -> String {
    let version = if a.hardening == Hardening::default() {
        "lb-spec-1"
    } else {
        "lb-spec-2"
    };
    let mut encoding = serde_json::to_value((
        version,
        &a.image,
        a.memory,
        a.cpu.to_bits(),
        &a.env,
        &a.command,
        &a.ports,
        &a.volumes,
        a.generation,
        a.restart_generation,
    ))
    .unwrap_or_default();
    if a.hardening != Hardening::default() {
        if let (Some(fields), Ok(h)) = (encoding.as_array_mut(), serde_json::to_value(&a.hardening))
        {
            fields.push(h);
        }
    }
    let encoding = serde_json::to_vec(&encoding).unwrap_or_default();
    format!("{:x}", Sha256::digest(&encoding))
}

/// The hash lb wrote before [`spec_hash`] (16 hex digits from
/// `DefaultHasher`), only to recognise containers made by an older lb so an
/// upgrade adopts them instead of recreating them. Never written.
fn legacy_spec_hash(a: &Assignment) -> String {
    let mut h = DefaultHasher::new();
    serde_json::to_string(&(
        &a.image,
        a.memory,
        a.cpu.to_bits(),
        &a.env,
        &a.command,
        &a.ports,
        &a.volumes,
        a.generation,
        a.restart_generation,
    ))
    .unwrap_or_default()
    .hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Whether a container was made from this assignment's spec (`hash` is its
/// [`spec_hash`]).
pub(super) fn made_from(c: &Container, hash: &str, a: &Assignment) -> bool {
    c.spec == hash || (c.spec.len() == 16 && c.spec == legacy_spec_hash(a))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use lb_model::{Port, Protocol};

    use super::*;
    use crate::reconcile::tests::assignment;

    #[test]
    fn the_spec_hash_is_pinned() {
        let mut a = assignment(1);
        a.env = BTreeMap::from([("B".into(), "2".into()), ("A".into(), "1".into())]);
        a.command = Some(vec!["sh".into(), "-c".into(), "true".into()]);
        a.ports = vec![Port {
            container: 8080,
            host: Some(80),
            protocol: Protocol::Tcp,
        }];
        // If this changes, an upgrade recreates every container of every
        // node: change the encoding only on purpose.
        // The same as Python's
        // sha256(b'["lb-spec-1","busybox",16,4591870180066957722,{"A":"1","B":"2"},'
        //        b'["sh","-c","true"],[{"container":8080,"host":80,"protocol":"tcp"}],[],1,0]').
        assert_eq!(
            spec_hash(&a),
            "eb3a607d833e9940d78fd2eab253b191822618fff165d5bb5c0172c61f468cb5"
        );
        // Neither the grace period nor running/paused makes a new container.
        let b = Assignment {
            stop_timeout: 60,
            running: false,
            ..a.clone()
        };
        assert_eq!(spec_hash(&a), spec_hash(&b));
        let c = Assignment {
            restart_generation: 1,
            ..a.clone()
        };
        assert_ne!(spec_hash(&a), spec_hash(&c));
    }

    #[test]
    fn every_field_of_the_spec_counts() {
        let a = assignment(1);
        let changed = [
            Assignment {
                image: "busybox:2".into(),
                ..a.clone()
            },
            Assignment {
                memory: 32,
                ..a.clone()
            },
            Assignment {
                cpu: 0.2,
                ..a.clone()
            },
            Assignment {
                env: BTreeMap::from([("A".into(), "1".into())]),
                ..a.clone()
            },
            Assignment {
                command: Some(vec!["true".into()]),
                ..a.clone()
            },
            Assignment {
                ports: vec![Port {
                    container: 80,
                    host: None,
                    protocol: Protocol::Udp,
                }],
                ..a.clone()
            },
            Assignment {
                generation: 2,
                ..a.clone()
            },
            Assignment {
                hardening: Hardening {
                    pids: 100,
                    ..Hardening::default()
                },
                ..a.clone()
            },
            Assignment {
                hardening: Hardening {
                    read_only: true,
                    ..Hardening::default()
                },
                ..a.clone()
            },
            Assignment {
                hardening: Hardening {
                    cap_add: vec!["NET_RAW".into()],
                    ..Hardening::default()
                },
                ..a.clone()
            },
        ];
        for b in &changed {
            assert_ne!(spec_hash(&a), spec_hash(b), "{b:?}");
        }
    }

    #[test]
    fn containers_of_an_older_lb_are_adopted() {
        let a = assignment(1);
        let container = |spec: String| Container {
            id: "c".into(),
            replica: a.replica.clone(),
            state: "running".into(),
            spec,
            ports: Vec::new(),
            stop_timeout: None,
            health: None,
            address: None,
        };
        let hash = spec_hash(&a);
        assert!(made_from(&container(hash.clone()), &hash, &a));
        assert!(made_from(&container(legacy_spec_hash(&a)), &hash, &a));
        assert!(!made_from(&container("0123456789abcdef".into()), &hash, &a));
        assert!(!made_from(&container(String::new()), &hash, &a));
    }
}
