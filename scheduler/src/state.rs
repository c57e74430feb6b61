//! The scheduler's view of the cluster: nodes, services, replicas and
//! assignments, decoded once from a list and then kept current from the
//! watch's events. Each event marks what it can affect as dirty, so a pass
//! plans only the services something happened to; node heartbeats and other
//! keys change nothing and wake no pass, except a heartbeat whose disk
//! verdict changed (`low_disk`, from the node's `--min-free-disk`): a node
//! with room again wakes the services waiting for it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use lb_model::keys::{Keys, Parsed};
use lb_model::{
    Assignment, Node, NodeStatus, Replica, ReplicaState, ReplicaStatus, ServiceMeta, ServiceSpec,
};
use lb_store::{Changes, Event, KeyValue};

/// A service's key: (project id, service id).
pub type ServiceKey = (String, String);

/// A record with the revision it was read at.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The decoded value.
    pub value: T,
    /// Its `mod_revision`.
    pub revision: i64,
}

/// A replica as the scheduler sees it: its placement and the node's report.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The placement record.
    pub replica: Replica,
    /// Its `mod_revision`.
    pub revision: i64,
    /// The node's last report on it.
    pub status: Option<ReplicaStatus>,
}

impl Placed {
    /// The reported state (`pending` before any report).
    pub fn state(&self) -> ReplicaState {
        self.status
            .as_ref()
            .map_or(ReplicaState::Pending, |s| s.state)
    }
}

/// An assignment record on a node.
#[derive(Debug, Clone)]
pub struct Held {
    /// The node holding it.
    pub node: String,
    /// Its `mod_revision`.
    pub revision: i64,
    /// The decoded assignment (`None` when damaged).
    pub assignment: Option<Assignment>,
}

/// A service's two records (each may arrive before the other).
#[derive(Debug, Clone, Default)]
pub struct ServiceRecords {
    /// The meta record.
    pub meta: Option<Versioned<ServiceMeta>>,
    /// The spec record.
    pub spec: Option<Versioned<ServiceSpec>>,
}

/// The scheduler's memory of the cluster.
pub struct State {
    keys: Keys,
    /// The store revision the view reflects.
    pub revision: i64,
    /// Node records.
    pub nodes: BTreeMap<String, Node>,
    /// Nodes whose liveness key exists.
    pub alive: HashSet<String>,
    /// When each node was first seen not alive.
    pub dead_since: HashMap<String, Instant>,
    /// Nodes gone longer than the grace: their replicas move.
    pub lost: HashSet<String>,
    /// Nodes below their `--min-free-disk`, with what their heartbeat says.
    pub low_disk: HashMap<String, String>,
    /// Services' records.
    pub services: BTreeMap<ServiceKey, ServiceRecords>,
    /// Replicas per service, by replica id.
    pub replicas: HashMap<ServiceKey, BTreeMap<String, Placed>>,
    /// Reports that arrived before their replica's record.
    statuses: HashMap<String, ReplicaStatus>,
    /// Which service each replica id belongs to.
    pub replica_index: HashMap<String, ServiceKey>,
    /// Assignments by replica id.
    pub assignments: HashMap<String, Held>,
    /// Services to plan on the next pass.
    pub dirty: BTreeSet<ServiceKey>,
    /// Services left with replicas that found no node: planned again when
    /// capacity may have appeared.
    pub waiting: HashSet<ServiceKey>,
    /// Services waiting for a moment (a new replica to count as ready), and
    /// the earliest such moment.
    pub timed: HashSet<ServiceKey>,
    /// When the next timed look is due.
    pub wake_at: Option<Instant>,
    /// Assignments to check against their placements on the next pass.
    pub check_assignments: bool,
    /// A timer is due (a node's grace, a rollout's wait): pass even if no
    /// service is marked yet.
    pub due: bool,
    /// One-off jobs and schedule records (see [`crate::jobs`]).
    pub jobs: crate::jobs::Jobs,
    /// The generation of each service whose deploy is known settled (see
    /// [`crate::deploys`]).
    pub deploys_settled: HashMap<ServiceKey, u64>,
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key = %kv.key, error = %e, "skipping a damaged record");
            None
        }
    }
}

impl State {
    /// An empty view.
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            revision: 0,
            nodes: BTreeMap::new(),
            alive: HashSet::new(),
            dead_since: HashMap::new(),
            lost: HashSet::new(),
            low_disk: HashMap::new(),
            services: BTreeMap::new(),
            replicas: HashMap::new(),
            statuses: HashMap::new(),
            replica_index: HashMap::new(),
            assignments: HashMap::new(),
            dirty: BTreeSet::new(),
            waiting: HashSet::new(),
            timed: HashSet::new(),
            wake_at: None,
            check_assignments: true,
            due: false,
            jobs: crate::jobs::Jobs::default(),
            deploys_settled: HashMap::new(),
        }
    }

    /// A view of a listing made at `revision`; every service is dirty and
    /// every node not alive starts its grace now.
    pub fn load(keys: Keys, kvs: Vec<KeyValue>, revision: i64) -> Self {
        let mut state = Self::new(keys);
        for kv in kvs {
            state.put(kv);
        }
        state.revision = revision;
        let now = Instant::now();
        for nid in state.nodes.keys() {
            if !state.alive.contains(nid) {
                state.dead_since.insert(nid.clone(), now);
            }
        }
        state.mark_all();
        state
    }

    /// Plans every service on the next pass (a resync).
    pub fn mark_all(&mut self) {
        self.dirty = self.services.keys().cloned().collect();
        self.check_assignments = true;
        self.jobs.dirty = true;
        self.jobs.cron_dirty = true;
    }

    /// Whether a pass has anything to do.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty() || self.check_assignments || self.due
    }

    /// Applies a batch of watch events.
    pub fn apply(&mut self, changes: Changes) {
        for event in changes.events {
            match event {
                Event::Put(kv) => self.put(kv),
                Event::Delete(kv) => self.delete(&kv.key),
            }
        }
        self.revision = self.revision.max(changes.revision);
    }

    /// Capacity may have appeared: plan the services that wait for it.
    fn capacity_changed(&mut self) {
        self.dirty.extend(self.waiting.iter().cloned());
        self.jobs.dirty = true;
    }

    fn touch(&mut self, key: ServiceKey) {
        self.dirty.insert(key);
    }

    fn put(&mut self, kv: KeyValue) {
        // The parsed parts borrow the key, not `self.keys`: no copy per event.
        match self.keys.parse(&kv.key) {
            Some(Parsed::NodeMeta { nid }) => {
                if let Some(node) = decode::<Node>(&kv) {
                    if !self.alive.contains(nid) {
                        self.dead_since
                            .entry(nid.to_owned())
                            .or_insert_with(Instant::now);
                    }
                    self.nodes.insert(nid.to_owned(), node);
                    self.capacity_changed();
                }
            }
            Some(Parsed::NodeStatus { nid }) => {
                // Only the disk verdict matters here; most heartbeats keep it.
                let low = decode::<NodeStatus>(&kv).and_then(|s| s.low_disk);
                if low.as_ref() != self.low_disk.get(nid) {
                    match low {
                        Some(why) => {
                            self.low_disk.insert(nid.to_owned(), why);
                        }
                        None => {
                            self.low_disk.remove(nid);
                            self.capacity_changed();
                        }
                    }
                }
            }
            Some(Parsed::NodeAlive { nid }) => {
                self.alive.insert(nid.to_owned());
                self.dead_since.remove(nid);
                self.lost.remove(nid);
                self.capacity_changed();
            }
            Some(Parsed::NodeReplica { nid, rid }) => {
                let assignment = decode::<Assignment>(&kv);
                if let Some(a) = &assignment {
                    self.touch((a.project.clone(), a.service.clone()));
                }
                self.assignments.insert(
                    rid.to_owned(),
                    Held {
                        node: nid.to_owned(),
                        revision: kv.mod_revision,
                        assignment,
                    },
                );
                self.check_assignments = true;
                self.jobs.dirty = true;
            }
            Some(Parsed::ServiceMeta { pid, sid }) => {
                let key = (pid.to_owned(), sid.to_owned());
                if let Some(value) = decode(&kv) {
                    self.services.entry(key.clone()).or_default().meta = Some(Versioned {
                        value,
                        revision: kv.mod_revision,
                    });
                }
                self.touch(key);
                // A paused service frees its requests, a resumed one takes them.
                self.capacity_changed();
            }
            Some(Parsed::ServiceSpec { pid, sid }) => {
                let key = (pid.to_owned(), sid.to_owned());
                if let Some(value) = decode(&kv) {
                    self.services.entry(key.clone()).or_default().spec = Some(Versioned {
                        value,
                        revision: kv.mod_revision,
                    });
                }
                self.touch(key);
                self.capacity_changed();
                self.jobs.cron_dirty = true;
            }
            Some(Parsed::Replica { pid, sid, rid }) => {
                let key = (pid.to_owned(), sid.to_owned());
                if let Some(replica) = decode::<Replica>(&kv) {
                    let list = self.replicas.entry(key.clone()).or_default();
                    let status = list
                        .remove(rid)
                        .and_then(|p| p.status)
                        .or_else(|| self.statuses.remove(rid));
                    list.insert(
                        rid.to_owned(),
                        Placed {
                            replica,
                            revision: kv.mod_revision,
                            status,
                        },
                    );
                    self.replica_index.insert(rid.to_owned(), key.clone());
                }
                self.check_assignments = true;
                self.touch(key);
            }
            Some(Parsed::ReplicaStatus { pid, sid, rid }) => {
                let key = (pid.to_owned(), sid.to_owned());
                let status = decode::<ReplicaStatus>(&kv);
                match self.replicas.get_mut(&key).and_then(|l| l.get_mut(rid)) {
                    Some(p) => p.status = status,
                    None => {
                        if let Some(status) = status {
                            self.statuses.insert(rid.to_owned(), status);
                        }
                    }
                }
                self.touch(key);
            }
            _ => self.jobs.put(&self.keys, &kv),
        }
    }

    fn delete(&mut self, key: &str) {
        match self.keys.parse(key) {
            Some(Parsed::NodeStatus { nid }) if self.low_disk.remove(nid).is_some() => {
                self.capacity_changed();
            }
            Some(Parsed::NodeMeta { nid }) => {
                self.nodes.remove(nid);
                self.dead_since.remove(nid);
                self.lost.remove(nid);
                // Its replicas go as a lost node's do.
                self.lost.insert(nid.to_owned());
                self.touch_node(nid);
            }
            Some(Parsed::NodeAlive { nid }) => {
                self.alive.remove(nid);
                self.dead_since
                    .entry(nid.to_owned())
                    .or_insert_with(Instant::now);
                // A pass sets the timer for the end of its grace.
                self.due = true;
            }
            Some(Parsed::NodeReplica { rid, .. }) => {
                if let Some(Some(a)) = self.assignments.remove(rid).map(|h| h.assignment) {
                    self.touch((a.project, a.service));
                }
                // Room freed: for jobs waiting for it too.
                self.jobs.dirty = true;
            }
            Some(Parsed::ServiceMeta { pid, sid }) => {
                let key = (pid.to_owned(), sid.to_owned());
                if let Some(records) = self.services.get_mut(&key) {
                    records.meta = None;
                }
                self.forget_if_gone(&key);
            }
            Some(Parsed::ServiceSpec { pid, sid }) => {
                let key = (pid.to_owned(), sid.to_owned());
                if let Some(records) = self.services.get_mut(&key) {
                    records.spec = None;
                }
                self.forget_if_gone(&key);
            }
            Some(Parsed::Replica { pid, sid, rid }) => {
                let key = (pid.to_owned(), sid.to_owned());
                if let Some(list) = self.replicas.get_mut(&key) {
                    list.remove(rid);
                    if list.is_empty() {
                        self.replicas.remove(&key);
                    }
                }
                self.replica_index.remove(rid);
                self.statuses.remove(rid);
                self.check_assignments = true;
                self.touch(key);
                self.capacity_changed();
            }
            Some(Parsed::ReplicaStatus { pid, sid, rid }) => {
                let key = (pid.to_owned(), sid.to_owned());
                if let Some(p) = self.replicas.get_mut(&key).and_then(|l| l.get_mut(rid)) {
                    p.status = None;
                }
                self.statuses.remove(rid);
                self.touch(key);
            }
            _ => self.jobs.delete(&self.keys, key),
        }
    }

    fn forget_if_gone(&mut self, key: &ServiceKey) {
        if self
            .services
            .get(key)
            .is_some_and(|r| r.meta.is_none() && r.spec.is_none())
        {
            self.services.remove(key);
            self.dirty.remove(key);
            self.waiting.remove(key);
            self.timed.remove(key);
            self.deploys_settled.remove(key);
        }
        self.check_assignments = true;
        self.capacity_changed();
    }

    /// Marks the services with replicas on `nid` dirty.
    fn touch_node(&mut self, nid: &str) {
        let touched: Vec<ServiceKey> = self
            .replicas
            .iter()
            .filter(|(_, list)| {
                list.values()
                    .any(|p| p.replica.node.as_deref() == Some(nid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.dirty.extend(touched);
        self.check_assignments = true;
        // Jobs on it fail.
        self.jobs.dirty = true;
    }

    /// Moves nodes gone for `grace` into `lost`, marking their services;
    /// returns when the next node's grace ends, if any is counting.
    pub fn expire_nodes(&mut self, grace: Duration, now: Instant) -> Option<Instant> {
        let expired: Vec<String> = self
            .dead_since
            .iter()
            .filter(|(nid, since)| {
                now.duration_since(**since) >= grace && !self.lost.contains(*nid)
            })
            .map(|(nid, _)| nid.clone())
            .collect();
        for nid in expired {
            self.lost.insert(nid.clone());
            self.touch_node(&nid);
        }
        self.dead_since
            .iter()
            .filter(|(nid, _)| !self.lost.contains(*nid))
            .map(|(_, since)| *since + grace)
            .min()
    }

    /// The timed services are due: plan them.
    pub fn wake(&mut self) {
        self.wake_at = None;
        self.due = true;
        let timed = std::mem::take(&mut self.timed);
        self.dirty.extend(timed);
    }
}
