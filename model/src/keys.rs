//! The key tree: the only place store keys are spelled. Every key lives under
//! a root prefix (`/lb` by default). Layout (values are JSON):
//!
//! ```text
//! <root>/users/<user id>                                   user
//! <root>/index/users/<username>                            -> user id
//! <root>/users/<user id>/vendors/<vendor>                  linked vendor account
//! <root>/projects/<pid>/meta                               project
//! <root>/index/projects/<user id>/<project name>           -> project id
//! <root>/projects/<pid>/services/<sid>/meta                service meta
//! <root>/projects/<pid>/services/<sid>/spec                desired spec
//! <root>/projects/<pid>/services/<sid>/builds/<number>     build
//! <root>/projects/<pid>/services/<sid>/build-logs/<number>/<seq>  a build's output, one chunk per flush (raw bytes)
//! <root>/projects/<pid>/services/<sid>/replicas/<rid>      placement
//! <root>/projects/<pid>/services/<sid>/replicas/<rid>/status  replica status
//! <root>/index/services/<pid>/<service name>               -> service id
//! <root>/nodes/<node id>/meta | status | alive             node
//! <root>/nodes/<node id>/replicas/<rid>                    what the node runs (an assignment)
//! <root>/nodes/<node id>/credential                        the node's credential (hashed)
//! <root>/index/nodes/<name>                                -> node id
//! <root>/cluster/join-tokens/<id>                          single-use join token (hashed)
//! <root>/images/<project>/<service>/...                    registry metadata
//! <root>/cluster/<name>                                    cluster settings (e.g. signing keys)
//! <root>/cluster/allowlist                                 repository owners builds may come from
//! <root>/hooks/<sid>                                       a service's push webhook (vendor hook id, deliveries seen)
//! <root>/oauth/<state hash>                                a pending vendor OAuth link (user, vendor, expiry)
//! <root>/index/domains/<domain>                            -> the service that claimed it (project id, service id)
//! <root>/certs/<domain>                                    a domain's certificate: chain, sealed key, status (ACME or uploaded)
//! <root>/acme/account                                      the cluster's ACME account (sealed key)
//! <root>/acme/challenges/<token>                           a pending HTTP-01 answer (key authorization)
//! <root>/quotas/<user id>                                  a user's quota (limits set by an admin)
//! <root>/acme/lock                                         the ACME issuer's lease (one issuer per cluster)
//! <root>/projects/<pid>/services/<sid>/jobs/<job id>       a one-off job (command, state, exit code, output tail)
//! <root>/projects/<pid>/services/<sid>/schedules/<name>    a cron schedule's last tick (written by the scheduler leader)
//! <root>/projects/<pid>/scripts/<name>                     a stored script
//! <root>/projects/<pid>/script-runs/<name>/<run id>        a script's run (the last 20 kept)
//! ```

/// The default root prefix.
pub const DEFAULT_ROOT: &str = "/lb";

/// Builds keys under one root prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new(DEFAULT_ROOT)
    }
}

impl Keys {
    /// Keys under `root` (e.g. `/lb`); a trailing slash is dropped.
    pub fn new(root: &str) -> Self {
        Self {
            root: root.trim_end_matches('/').to_owned(),
        }
    }

    /// The root prefix itself, followed by a slash: every lb key starts with it.
    pub fn all(&self) -> String {
        format!("{}/", self.root)
    }

    /// `<root>/users/<uid>`.
    pub fn user(&self, uid: &str) -> String {
        format!("{}/users/{uid}", self.root)
    }

    /// Prefix of all users (user records and their sub-keys).
    pub fn users(&self) -> String {
        format!("{}/users/", self.root)
    }

    /// `<root>/index/users/<username>`.
    pub fn user_index(&self, username: &str) -> String {
        format!("{}/index/users/{username}", self.root)
    }

    /// `<root>/users/<uid>/vendors/<vendor>`.
    pub fn user_vendor(&self, uid: &str, vendor: &str) -> String {
        format!("{}/users/{uid}/vendors/{vendor}", self.root)
    }

    /// `<root>/users/<uid>/tokens/<token id>`: an API token (hashed).
    pub fn user_token(&self, uid: &str, tid: &str) -> String {
        format!("{}/users/{uid}/tokens/{tid}", self.root)
    }

    /// Prefix of a user's API tokens.
    pub fn user_tokens(&self, uid: &str) -> String {
        format!("{}/users/{uid}/tokens/", self.root)
    }

    /// Prefix of the user name index.
    pub fn user_index_prefix(&self) -> String {
        format!("{}/index/users/", self.root)
    }

    /// Prefix of the whole project name index (every user).
    pub fn project_index_all(&self) -> String {
        format!("{}/index/projects/", self.root)
    }

    /// `<root>/index/domains/<domain>`: the service that claimed a domain.
    pub fn domain(&self, domain: &str) -> String {
        format!("{}/index/domains/{domain}", self.root)
    }

    /// Prefix of the domain index.
    pub fn domains(&self) -> String {
        format!("{}/index/domains/", self.root)
    }

    /// `<root>/certs/<domain>`: a domain's certificate and its status.
    pub fn cert(&self, domain: &str) -> String {
        format!("{}/certs/{domain}", self.root)
    }

    /// Prefix of the certificates.
    pub fn certs(&self) -> String {
        format!("{}/certs/", self.root)
    }

    /// `<root>/acme/account`: the cluster's ACME account.
    pub fn acme_account(&self) -> String {
        format!("{}/acme/account", self.root)
    }

    /// `<root>/acme/challenges/<token>`: a pending HTTP-01 answer.
    pub fn acme_challenge(&self, token: &str) -> String {
        format!("{}/acme/challenges/{token}", self.root)
    }

    /// Prefix of the pending HTTP-01 answers.
    pub fn acme_challenges(&self) -> String {
        format!("{}/acme/challenges/", self.root)
    }

    /// `<root>/acme/lock`: held by the one API server that issues.
    pub fn acme_lock(&self) -> String {
        format!("{}/acme/lock", self.root)
    }

    /// Prefix of a project's service name index.
    pub fn service_index_prefix(&self, pid: &str) -> String {
        format!("{}/index/services/{pid}/", self.root)
    }

    /// Prefix of a service's replicas (placements and statuses).
    pub fn replicas_prefix(&self, pid: &str, sid: &str) -> String {
        format!("{}replicas/", self.service_prefix(pid, sid))
    }

    /// Prefix of a service's builds.
    pub fn builds_prefix(&self, pid: &str, sid: &str) -> String {
        format!("{}builds/", self.service_prefix(pid, sid))
    }

    /// What a key under the root is, parsed: the inverse of the builders.
    pub fn parse<'a>(&self, key: &'a str) -> Option<Parsed<'a>> {
        let rest = key.strip_prefix(self.root.as_str())?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        Some(match parts.as_slice() {
            ["projects", pid, "meta"] => Parsed::Project { pid },
            ["projects", pid, "services", sid, "meta"] => Parsed::ServiceMeta { pid, sid },
            ["projects", pid, "services", sid, "spec"] => Parsed::ServiceSpec { pid, sid },
            ["projects", pid, "services", sid, "replicas", rid] => {
                Parsed::Replica { pid, sid, rid }
            }
            ["projects", pid, "services", sid, "replicas", rid, "status"] => {
                Parsed::ReplicaStatus { pid, sid, rid }
            }
            ["projects", pid, "services", sid, "builds", number] => {
                Parsed::Build { pid, sid, number }
            }
            ["projects", pid, "services", sid, "deploys", generation] => Parsed::Deploy {
                pid,
                sid,
                generation,
            },
            ["projects", pid, "scripts", name] => Parsed::Script { pid, name },
            ["projects", pid, "script-runs", name, run] => Parsed::ScriptRun { pid, name, run },
            ["nodes", nid, "meta"] => Parsed::NodeMeta { nid },
            ["nodes", nid, "status"] => Parsed::NodeStatus { nid },
            ["nodes", nid, "alive"] => Parsed::NodeAlive { nid },
            ["nodes", nid, "replicas", rid] => Parsed::NodeReplica { nid, rid },
            _ => Parsed::Other,
        })
    }

    /// `<root>/projects/<pid>/meta`.
    pub fn project(&self, pid: &str) -> String {
        format!("{}/projects/{pid}/meta", self.root)
    }

    /// Prefix of everything a project holds.
    pub fn project_prefix(&self, pid: &str) -> String {
        format!("{}/projects/{pid}/", self.root)
    }

    /// Prefix of all projects.
    pub fn projects(&self) -> String {
        format!("{}/projects/", self.root)
    }

    /// `<root>/index/projects/<uid>/<name>`.
    pub fn project_index(&self, uid: &str, name: &str) -> String {
        format!("{}/index/projects/{uid}/{name}", self.root)
    }

    /// Prefix of one user's project name index.
    pub fn project_index_prefix(&self, uid: &str) -> String {
        format!("{}/index/projects/{uid}/", self.root)
    }

    /// Prefix of everything a service holds.
    pub fn service_prefix(&self, pid: &str, sid: &str) -> String {
        format!("{}/projects/{pid}/services/{sid}/", self.root)
    }

    /// `<root>/projects/<pid>/services/<sid>/meta`.
    pub fn service_meta(&self, pid: &str, sid: &str) -> String {
        format!("{}meta", self.service_prefix(pid, sid))
    }

    /// `<root>/projects/<pid>/services/<sid>/spec`.
    pub fn service_spec(&self, pid: &str, sid: &str) -> String {
        format!("{}spec", self.service_prefix(pid, sid))
    }

    /// `<root>/projects/<pid>/services/<sid>/source`.
    pub fn service_source(&self, pid: &str, sid: &str) -> String {
        format!("{}source", self.service_prefix(pid, sid))
    }

    /// `<root>/projects/<pid>/services/<sid>/deploys/<generation>`, the
    /// generation zero-padded so deploys sort by it.
    pub fn deploy(&self, pid: &str, sid: &str, generation: u64) -> String {
        format!("{}{generation:012}", self.deploys_prefix(pid, sid))
    }

    /// Prefix of a service's deploys.
    pub fn deploys_prefix(&self, pid: &str, sid: &str) -> String {
        format!("{}deploys/", self.service_prefix(pid, sid))
    }

    /// `<root>/projects/<pid>/services/<sid>/builds/<number>`, the number
    /// zero-padded so builds sort by number.
    pub fn build(&self, pid: &str, sid: &str, number: u64) -> String {
        format!("{}builds/{number:010}", self.service_prefix(pid, sid))
    }

    /// `<root>/projects/<pid>/services/<sid>/build-logs/<number>/`: prefix
    /// of a build's output, stored beside the build so that listing builds
    /// stays small. The output is appended as chunks
    /// ([`Keys::build_log_chunk`]): read it by listing this prefix and
    /// joining the values in key order; follow it by watching the prefix.
    /// The builder keeps the newest 256 KiB by deleting the oldest chunks, so
    /// a list not starting at chunk 0 means earlier output was dropped.
    /// Inside the service's prefix: deleting the service or its project
    /// deletes the logs.
    pub fn build_log_prefix(&self, pid: &str, sid: &str, number: u64) -> String {
        format!("{}build-logs/{number:010}/", self.service_prefix(pid, sid))
    }

    /// `<root>/projects/<pid>/services/<sid>/build-logs/<number>/<seq>`:
    /// chunk `seq` (from 0, zero-padded so chunks sort in order) of a
    /// build's output, what was new since the chunk before.
    pub fn build_log_chunk(&self, pid: &str, sid: &str, number: u64, seq: u64) -> String {
        format!("{}{seq:010}", self.build_log_prefix(pid, sid, number))
    }

    /// The chunk number of a key under [`Keys::build_log_prefix`].
    pub fn build_log_seq(&self, prefix: &str, key: &str) -> Option<u64> {
        key.strip_prefix(prefix)?.parse().ok()
    }

    /// `<root>/projects/<pid>/services/<sid>/build-logs/<number>`: where
    /// lb before chunked logs kept a build's whole output as one value.
    /// Read only, for builds logged then; inside the service's prefix too.
    pub fn build_log_legacy(&self, pid: &str, sid: &str, number: u64) -> String {
        format!("{}build-logs/{number:010}", self.service_prefix(pid, sid))
    }

    /// `<root>/queue/builds/<pid>.<sid>.<number>`: a queued build, until a
    /// builder claims it.
    pub fn build_queue(&self) -> String {
        format!("{}/queue/builds/", self.root)
    }

    /// A build's entry in [`Keys::build_queue`].
    pub fn build_queued(&self, pid: &str, sid: &str, number: u64) -> String {
        format!("{}{pid}.{sid}.{number:010}", self.build_queue())
    }

    /// `<root>/queue/claimed/<pid>.<sid>.<number>` -> builder id: a build a
    /// builder runs; `<root>/queue/running/...` is the same, bound to the
    /// builder's lease (gone = the builder died and the build failed).
    pub fn build_claimed(&self, pid: &str, sid: &str, number: u64) -> String {
        format!("{}{pid}.{sid}.{number:010}", self.build_claimed_prefix())
    }

    /// Prefix of [`Keys::build_claimed`].
    pub fn build_claimed_prefix(&self) -> String {
        format!("{}/queue/claimed/", self.root)
    }

    /// See [`Keys::build_claimed`].
    pub fn build_running(&self, pid: &str, sid: &str, number: u64) -> String {
        format!("{}/queue/running/{pid}.{sid}.{number:010}", self.root)
    }

    /// `<root>/projects/<pid>/services/<sid>/replicas/<rid>`.
    pub fn replica(&self, pid: &str, sid: &str, rid: &str) -> String {
        format!("{}replicas/{rid}", self.service_prefix(pid, sid))
    }

    /// `<root>/projects/<pid>/services/<sid>/replicas/<rid>/status`.
    pub fn replica_status(&self, pid: &str, sid: &str, rid: &str) -> String {
        format!("{}/status", self.replica(pid, sid, rid))
    }

    /// `<root>/index/services/<pid>/<name>`.
    pub fn service_index(&self, pid: &str, name: &str) -> String {
        format!("{}/index/services/{pid}/{name}", self.root)
    }

    /// `<root>/nodes/<nid>/meta`.
    pub fn node_meta(&self, nid: &str) -> String {
        format!("{}/nodes/{nid}/meta", self.root)
    }

    /// `<root>/nodes/<nid>/status`.
    pub fn node_status(&self, nid: &str) -> String {
        format!("{}/nodes/{nid}/status", self.root)
    }

    /// `<root>/nodes/<nid>/alive`, bound to the node's lease.
    pub fn node_alive(&self, nid: &str) -> String {
        format!("{}/nodes/{nid}/alive", self.root)
    }

    /// `<root>/nodes/<id>/channel` -> the URL of the API instance holding
    /// the node's channel (bound to the channel's lease).
    pub fn node_channel(&self, nid: &str) -> String {
        format!("{}/nodes/{nid}/channel", self.root)
    }

    /// `<root>/nodes/<nid>/replicas/<rid>`.
    pub fn node_replica(&self, nid: &str, rid: &str) -> String {
        format!("{}/nodes/{nid}/replicas/{rid}", self.root)
    }

    /// `<root>/projects/<pid>/services/<sid>/jobs/<jid>`: a one-off job.
    pub fn job(&self, pid: &str, sid: &str, jid: &str) -> String {
        format!("{}jobs/{jid}", self.service_prefix(pid, sid))
    }

    /// Prefix of a service's jobs.
    pub fn jobs_prefix(&self, pid: &str, sid: &str) -> String {
        format!("{}jobs/", self.service_prefix(pid, sid))
    }

    /// `<root>/projects/<pid>/services/<sid>/schedules/<name>`: a cron
    /// schedule's last tick.
    pub fn schedule_record(&self, pid: &str, sid: &str, name: &str) -> String {
        format!("{}schedules/{name}", self.service_prefix(pid, sid))
    }

    /// (project id, service id, job id) of a key made by [`Keys::job`].
    pub fn parse_job<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
        let rest = key.strip_prefix(self.root.as_str())?.strip_prefix('/')?;
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["projects", pid, "services", sid, "jobs", jid] => Some((pid, sid, jid)),
            _ => None,
        }
    }

    /// (project id, service id, name) of a key made by
    /// [`Keys::schedule_record`].
    pub fn parse_schedule_record<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
        let rest = key.strip_prefix(self.root.as_str())?.strip_prefix('/')?;
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["projects", pid, "services", sid, "schedules", name] => Some((pid, sid, name)),
            _ => None,
        }
    }

    /// `<root>/nodes/<nid>/credential`: the node's credential (hashed).
    pub fn node_credential(&self, nid: &str) -> String {
        format!("{}/nodes/{nid}/credential", self.root)
    }

    /// Prefix of a node's assignments.
    pub fn node_replicas(&self, nid: &str) -> String {
        format!("{}/nodes/{nid}/replicas/", self.root)
    }

    /// Prefix of everything a node holds.
    pub fn node_prefix(&self, nid: &str) -> String {
        format!("{}/nodes/{nid}/", self.root)
    }

    /// `<root>/index/nodes/<name>` -> node id.
    pub fn node_index(&self, name: &str) -> String {
        format!("{}/index/nodes/{name}", self.root)
    }

    /// `<root>/cluster/join-tokens/<id>`: a single-use join token (hashed).
    pub fn join_token(&self, id: &str) -> String {
        format!("{}/cluster/join-tokens/{id}", self.root)
    }

    /// Prefix of all nodes.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.root)
    }

    /// `<root>/images/`: every repository's metadata (the registry's
    /// garbage collection lists it whole).
    pub fn images_all(&self) -> String {
        format!("{}/images/", self.root)
    }

    /// `<root>/images/<project>/<service>/`: a repository's metadata
    /// (project and service ids).
    pub fn images(&self, project: &str, service: &str) -> String {
        format!("{}/images/{project}/{service}/", self.root)
    }

    /// `<root>/images/<pid>/<sid>/tags/<tag>` -> `{"digest"}`.
    pub fn image_tag(&self, pid: &str, sid: &str, tag: &str) -> String {
        format!("{}tags/{tag}", self.images(pid, sid))
    }

    /// `<root>/images/<pid>/<sid>/manifests/<digest>` -> `{"media_type", "size"}`.
    pub fn image_manifest(&self, pid: &str, sid: &str, digest: &str) -> String {
        format!("{}manifests/{digest}", self.images(pid, sid))
    }

    /// `<root>/images/<pid>/<sid>/blobs/<digest>` -> `{"size"}`: the blob
    /// is part of this repository (blobs are stored once, by digest).
    pub fn image_blob(&self, pid: &str, sid: &str, digest: &str) -> String {
        format!("{}blobs/{digest}", self.images(pid, sid))
    }

    /// `<root>/hooks/<sid>`: a service's push webhook registration.
    pub fn hook(&self, sid: &str) -> String {
        format!("{}/hooks/{sid}", self.root)
    }

    /// Prefix of the whole service name index (every project).
    pub fn service_index_all(&self) -> String {
        format!("{}/index/services/", self.root)
    }

    /// Prefix of [`Keys::hook`].
    pub fn hooks(&self) -> String {
        format!("{}/hooks/", self.root)
    }

    /// `<root>/oauth/<state hash>`: a vendor link in progress (the OAuth
    /// `state`, hashed), deleted when used.
    pub fn oauth_state(&self, hash: &str) -> String {
        format!("{}/oauth/{hash}", self.root)
    }

    /// Prefix of a user's linked vendor accounts.
    pub fn user_vendors(&self, uid: &str) -> String {
        format!("{}/users/{uid}/vendors/", self.root)
    }

    /// `<root>/cluster/allowlist`: the repository owners builds may come
    /// from (empty or absent: any).
    pub fn allowlist(&self) -> String {
        self.cluster("allowlist")
    }

    /// `<root>/quotas/<uid>`: a user's quota (absent: unlimited).
    pub fn quota(&self, uid: &str) -> String {
        format!("{}/quotas/{uid}", self.root)
    }

    /// `<root>/images/<pid>/`: the registry metadata of every repository
    /// of a project.
    pub fn project_images(&self, pid: &str) -> String {
        format!("{}/images/{pid}/", self.root)
    }

    /// `<root>/projects/<pid>/scripts/<name>`: a stored script (inside the
    /// project's prefix: deleting the project deletes it).
    pub fn script(&self, pid: &str, name: &str) -> String {
        format!("{}{name}", self.scripts(pid))
    }

    /// Prefix of a project's scripts.
    pub fn scripts(&self, pid: &str) -> String {
        format!("{}scripts/", self.project_prefix(pid))
    }

    /// `<root>/projects/<pid>/script-runs/<name>/<run id>`: a script's run,
    /// the run ids time-sortable.
    pub fn script_run(&self, pid: &str, name: &str, run: &str) -> String {
        format!("{}{run}", self.script_runs(pid, name))
    }

    /// Prefix of a script's runs.
    pub fn script_runs(&self, pid: &str, name: &str) -> String {
        format!("{}script-runs/{name}/", self.project_prefix(pid))
    }

    /// `<root>/cluster/<name>`: cluster-wide settings.
    pub fn cluster(&self, name: &str) -> String {
        format!("{}/cluster/{name}", self.root)
    }
}

/// A key of the tree, parsed by [`Keys::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A project record.
    Project {
        /// Project id.
        pid: &'a str,
    },
    /// A service's meta.
    ServiceMeta {
        /// Project id.
        pid: &'a str,
        /// Service id.
        sid: &'a str,
    },
    /// A service's spec.
    ServiceSpec {
        /// Project id.
        pid: &'a str,
        /// Service id.
        sid: &'a str,
    },
    /// A replica placement.
    Replica {
        /// Project id.
        pid: &'a str,
        /// Service id.
        sid: &'a str,
        /// Replica id.
        rid: &'a str,
    },
    /// A replica status.
    ReplicaStatus {
        /// Project id.
        pid: &'a str,
        /// Service id.
        sid: &'a str,
        /// Replica id.
        rid: &'a str,
    },
    /// A build.
    Build {
        /// Project id.
        pid: &'a str,
        /// Service id.
        sid: &'a str,
        /// Build number, zero-padded.
        number: &'a str,
    },
    /// A deploy record.
    Deploy {
        /// Project id.
        pid: &'a str,
        /// Service id.
        sid: &'a str,
        /// Generation, zero-padded.
        generation: &'a str,
    },
    /// A node record.
    NodeMeta {
        /// Node id.
        nid: &'a str,
    },
    /// A node heartbeat.
    NodeStatus {
        /// Node id.
        nid: &'a str,
    },
    /// A node's liveness key.
    NodeAlive {
        /// Node id.
        nid: &'a str,
    },
    /// A node's assignment.
    NodeReplica {
        /// Node id.
        nid: &'a str,
        /// Replica id.
        rid: &'a str,
    },
    /// A stored script.
    Script {
        /// Project id.
        pid: &'a str,
        /// Script name.
        name: &'a str,
    },
    /// A script's run.
    ScriptRun {
        /// Project id.
        pid: &'a str,
        /// Script name.
        name: &'a str,
        /// Run id.
        run: &'a str,
    },
    /// Anything else (indexes, tokens, credentials, settings).
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_contract() {
        let k = Keys::new("/lb/");
        assert_eq!(k.user_index("admin"), "/lb/index/users/admin");
        assert_eq!(k.project("P1"), "/lb/projects/P1/meta");
        assert_eq!(k.service_spec("P", "S"), "/lb/projects/P/services/S/spec");
        assert_eq!(
            k.replica_status("P", "S", "R"),
            "/lb/projects/P/services/S/replicas/R/status"
        );
        assert_eq!(
            k.build("P", "S", 7),
            "/lb/projects/P/services/S/builds/0000000007"
        );
        assert_eq!(k.node_replica("N", "R"), "/lb/nodes/N/replicas/R");
        assert_eq!(k.job("P", "S", "J"), "/lb/projects/P/services/S/jobs/J");
        assert_eq!(k.parse_job(&k.job("P", "S", "J")), Some(("P", "S", "J")));
        assert_eq!(k.parse_job(&k.replica("P", "S", "J")), None);
        let r = k.schedule_record("P", "S", "nightly");
        assert_eq!(k.parse_schedule_record(&r), Some(("P", "S", "nightly")));
        let logs = k.build_log_prefix("P", "S", 7);
        assert_eq!(logs, "/lb/projects/P/services/S/build-logs/0000000007/");
        assert_eq!(
            k.build_log_chunk("P", "S", 7, 12),
            format!("{logs}0000000012")
        );
        assert!(k.build_log_chunk("P", "S", 7, 9) < k.build_log_chunk("P", "S", 7, 10));
        assert!(logs.starts_with(&k.service_prefix("P", "S")));
        assert!(!k.build_log_chunk("P", "S", 70, 0).starts_with(&logs));
        assert_eq!(
            k.build_log_seq(&logs, &k.build_log_chunk("P", "S", 7, 12)),
            Some(12)
        );
        assert_eq!(k.build_log_seq(&logs, "/lb/other"), None);
        assert!(k.service_meta("P", "S").starts_with(&k.project_prefix("P")));
        assert!(k.build("P", "S", 9) < k.build("P", "S", 10));
        assert_eq!(
            k.parse(&k.service_spec("P", "S")),
            Some(Parsed::ServiceSpec { pid: "P", sid: "S" })
        );
        assert_eq!(
            k.parse(&k.replica_status("P", "S", "R")),
            Some(Parsed::ReplicaStatus {
                pid: "P",
                sid: "S",
                rid: "R"
            })
        );
        assert_eq!(
            k.parse(&k.node_alive("N")),
            Some(Parsed::NodeAlive { nid: "N" })
        );
        assert_eq!(k.script("P", "migrate"), "/lb/projects/P/scripts/migrate");
        assert!(k.script("P", "m").starts_with(&k.project_prefix("P")));
        assert_eq!(
            k.parse(&k.script("P", "migrate")),
            Some(Parsed::Script {
                pid: "P",
                name: "migrate"
            })
        );
        let run = k.script_run("P", "migrate", "R1");
        assert_eq!(run, "/lb/projects/P/script-runs/migrate/R1");
        assert!(run.starts_with(&k.script_runs("P", "migrate")));
        assert!(!k
            .script_run("P", "migrate-2", "R1")
            .starts_with(&k.script_runs("P", "migrate")));
        assert_eq!(
            k.parse(&run),
            Some(Parsed::ScriptRun {
                pid: "P",
                name: "migrate",
                run: "R1"
            })
        );
        assert_eq!(
            k.parse(&k.deploy("P", "S", 7)),
            Some(Parsed::Deploy {
                pid: "P",
                sid: "S",
                generation: "000000000007"
            })
        );
        assert!(k
            .deploy("P", "S", 7)
            .starts_with(&k.deploys_prefix("P", "S")));
        assert_eq!(k.parse(&k.user_index("x")), Some(Parsed::Other));
        assert_eq!(k.parse("/other/x"), None);
    }
}
