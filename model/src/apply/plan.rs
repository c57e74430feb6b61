//! What applying a [`Document`] to a project changes: the services to
//! create (in start order), to update (each changed field, from and to) and,
//! with prune, to delete; the rest is unchanged. Pure: the caller reads the
//! project's services and carries out the plan (revision-checked).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{script_value, Document};
use crate::{Script, ServiceSpec};

/// A service of the project as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    /// Its name.
    pub name: String,
    /// Its spec.
    pub spec: ServiceSpec,
    /// Its revision, which an update or delete compares.
    pub revision: i64,
}

/// A service to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedCreate {
    /// Its name.
    pub name: String,
    /// Its spec.
    pub spec: ServiceSpec,
}

/// A service to update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedUpdate {
    /// Its name.
    pub name: String,
    /// The revision it was read at (the update's `If-Match`).
    pub revision: i64,
    /// What changes, field by field.
    pub changes: Vec<FieldChange>,
    /// The spec it gets.
    pub spec: ServiceSpec,
}

/// A service to delete (prune only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedDelete {
    /// Its name.
    pub name: String,
    /// The revision it was read at (the delete's `If-Match`).
    pub revision: i64,
}

/// One field that changes: its path in the spec (`replicas`, `env.KEY`,
/// `health.interval`), its value now and the value it gets (`null`:
/// absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field's path.
    pub field: String,
    /// The value now.
    pub from: Value,
    /// The value after.
    pub to: Value,
}

/// What applying a document changes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Services to create, each after those it depends on.
    pub creates: Vec<PlannedCreate>,
    /// Services to update, by name.
    pub updates: Vec<PlannedUpdate>,
    /// Services to delete, by name (with prune).
    pub deletes: Vec<PlannedDelete>,
    /// Services the document describes as they are.
    pub unchanged: Vec<String>,
    /// Services not in the document, kept because prune was not asked.
    pub kept: Vec<String>,
    /// The project's scripts.
    #[serde(default)]
    pub scripts: ScriptPlan,
}

impl Plan {
    /// Whether applying changes nothing.
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty()
            && self.updates.is_empty()
            && self.deletes.is_empty()
            && self.scripts.is_empty()
    }
}

/// A stored script of the project as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentScript {
    /// The script (its name inside).
    pub script: Script,
    /// Its record's revision.
    pub revision: i64,
}

/// A script to update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedScriptUpdate {
    /// Its name.
    pub name: String,
    /// The revision it was read at (the write's `If-Match`).
    pub revision: i64,
    /// What changes, field by field (`body`, `env.KEY`, `timeout`).
    pub changes: Vec<FieldChange>,
}

/// What applying a document changes in the project's scripts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScriptPlan {
    /// Scripts to create, by name.
    pub creates: Vec<String>,
    /// Scripts to replace, by name.
    pub updates: Vec<PlannedScriptUpdate>,
    /// Scripts to delete (with prune), by name.
    pub deletes: Vec<PlannedDelete>,
    /// Scripts the document describes as they are.
    pub unchanged: Vec<String>,
    /// Scripts not in the document, kept because prune was not asked.
    pub kept: Vec<String>,
}

impl ScriptPlan {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.updates.is_empty() && self.deletes.is_empty()
    }
}

/// Compares the document's scripts with the project's. A document without
/// `scripts` leaves them all alone (even with prune).
pub fn plan_scripts(doc: &Document, current: &[CurrentScript], prune: bool) -> ScriptPlan {
    let mut out = ScriptPlan::default();
    let Some(wanted) = &doc.scripts else {
        return out;
    };
    for (name, script) in wanted {
        match current.iter().find(|c| c.script.name == *name) {
            None => out.creates.push(name.clone()),
            Some(now) => {
                let mut changes = Vec::new();
                diff_values(
                    "",
                    &script_value(&now.script),
                    &script_value(script),
                    &mut changes,
                );
                if changes.is_empty() {
                    out.unchanged.push(name.clone());
                } else {
                    out.updates.push(PlannedScriptUpdate {
                        name: name.clone(),
                        revision: now.revision,
                        changes,
                    });
                }
            }
        }
    }
    let mut gone: Vec<&CurrentScript> = current
        .iter()
        .filter(|c| !wanted.contains_key(&c.script.name))
        .collect();
    gone.sort_by(|a, b| a.script.name.cmp(&b.script.name));
    for script in gone {
        if prune {
            out.deletes.push(PlannedDelete {
                name: script.script.name.clone(),
                revision: script.revision,
            });
        } else {
            out.kept.push(script.script.name.clone());
        }
    }
    out
}

/// Compares `doc` with the project's services `current`. A service with a
/// source and no image in the document keeps the image its builds deployed.
/// The document must be valid ([`Document::check`]): its start order is
/// taken as given, by name when it has a cycle.
pub fn plan(doc: &Document, current: &[Current], prune: bool) -> Plan {
    let mut out = Plan::default();
    let order = doc
        .start_order()
        .unwrap_or_else(|_| doc.services.keys().cloned().collect());
    for name in order {
        let wanted = &doc.services[&name];
        let mut spec = wanted.spec.clone();
        match current.iter().find(|c| c.name == name) {
            None => out.creates.push(PlannedCreate { name, spec }),
            Some(now) => {
                if spec.source.is_some() && spec.image.is_none() {
                    spec.image = now.spec.image.clone();
                }
                let changes = diff(&now.spec, &spec);
                if changes.is_empty() {
                    out.unchanged.push(name);
                } else {
                    out.updates.push(PlannedUpdate {
                        name,
                        revision: now.revision,
                        changes,
                        spec,
                    });
                }
            }
        }
    }
    out.updates.sort_by(|a, b| a.name.cmp(&b.name));
    out.unchanged.sort();
    let mut gone: Vec<&Current> = current
        .iter()
        .filter(|c| !doc.services.contains_key(&c.name))
        .collect();
    gone.sort_by(|a, b| a.name.cmp(&b.name));
    for service in gone {
        if prune {
            out.deletes.push(PlannedDelete {
                name: service.name.clone(),
                revision: service.revision,
            });
        } else {
            out.kept.push(service.name.clone());
        }
    }
    out
}

/// The fields that differ between two specs, nested objects (env, health,
/// source, node_selector) field by field, lists as a whole.
pub fn diff(old: &ServiceSpec, new: &ServiceSpec) -> Vec<FieldChange> {
    let old = serde_json::to_value(old).unwrap_or_default();
    let new = serde_json::to_value(new).unwrap_or_default();
    let mut out = Vec::new();
    diff_values("", &old, &new, &mut out);
    out
}

fn diff_values(path: &str, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    if let (Value::Object(a), Value::Object(b)) = (old, new) {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let field = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let null = Value::Null;
            diff_values(
                &field,
                a.get(key).unwrap_or(&null),
                b.get(key).unwrap_or(&null),
                out,
            );
        }
        return;
    }
    out.push(FieldChange {
        field: path.to_owned(),
        from: old.clone(),
        to: new.clone(),
    });
}
