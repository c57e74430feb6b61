//! Records as the release of 2026-11-30 stored them (format 1, no marker),
//! copied from a real `lb up` on etcd (`etcdctl get --prefix /lb/`) into
//! `fixtures/v1/`: each must still be read by [`lb_model::format::decode`],
//! and written again in the current format it reads back the same. When the
//! format changes, keep these files and add the new version's beside them.

use lb_model::format;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/v1/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Reads fixture `name` as `T`, writes it in the current format and reads
/// that back: the same value (compared as JSON).
fn check<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let bytes = fixture(name);
    let value: T = format::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let again = format::encode(&value).unwrap();
    let back: T = format::decode(&again).unwrap_or_else(|e| panic!("{name} re-read: {e}"));
    assert_eq!(
        serde_json::to_value(&value).unwrap(),
        serde_json::to_value(&back).unwrap(),
        "{name}: a round trip changes nothing"
    );
    assert_eq!(
        format::version_of(&serde_json::from_slice(&bytes).unwrap()).unwrap(),
        1,
        "{name} is format 1"
    );
    value
}

#[test]
fn todays_records_are_read() {
    let user: lb_model::User = check("user.json");
    assert_eq!(user.username, "admin");
    let project: lb_model::Project = check("project.json");
    assert_eq!(project.name, "demo");
    let meta: lb_model::ServiceMeta = check("service-meta.json");
    let spec: lb_model::ServiceSpec = check("service-spec.json");
    assert_eq!(spec.name, "web");
    let _ = meta;
    let build: lb_model::Build = check("build.json");
    assert_eq!(build.number, 1);
    let replica: lb_model::Replica = check("replica.json");
    assert!(replica.node.is_some(), "placed");
    let _: lb_model::ReplicaStatus = check("replica-status.json");
    let assignment: lb_model::Assignment = check("assignment.json");
    assert_eq!(assignment.replica, replica.id);
    let _: lb_model::Node = check("node.json");
    let _: lb_model::NodeStatus = check("node-status.json");
}

#[test]
fn a_record_from_a_newer_release_is_refused_by_name() {
    let mut value: serde_json::Value = serde_json::from_slice(&fixture("project.json")).unwrap();
    value[format::MARKER] = (format::CURRENT + 1).into();
    let err = format::decode::<lb_model::Project>(&serde_json::to_vec(&value).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("written by a newer lb"), "{err}");
}
