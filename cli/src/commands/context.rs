//! `lbc context ls | use | add | rm`: named API URLs and tokens.

use std::io::Read;

use serde_json::json;

use crate::args::ContextCmd;
use crate::config::{check_context_name, normalize_api, Context};
use crate::error::{Error, Result};
use crate::output::{Shown, Table};
use crate::session::Session;

/// Runs `lbc context ...`.
pub fn run(session: &mut Session, cmd: ContextCmd) -> Result<()> {
    match cmd {
        ContextCmd::Ls => {
            let current = session.config.current_context.clone();
            let mut table = Table {
                headers: vec!["CURRENT", "NAME", "API", "PROJECT", "LOGGED IN"],
                rows: Vec::new(),
            };
            let mut items = Vec::new();
            for (name, c) in &session.config.contexts {
                let is_current = current.as_deref() == Some(name.as_str());
                table.rows.push(vec![
                    if is_current { "*" } else { "" }.to_owned(),
                    name.clone(),
                    c.api.clone(),
                    c.project.clone().unwrap_or_default(),
                    if c.token.is_some() { "yes" } else { "no" }.to_owned(),
                ]);
                // Never the token itself.
                items.push(json!({"name": name, "api": c.api, "project": c.project,
                    "current": is_current, "logged_in": c.token.is_some()}));
            }
            let ids = session.config.contexts.keys().cloned().collect();
            session.out.show(Shown::List {
                value: json!({"items": items, "total": items.len()}),
                table,
                ids,
            })
        }
        ContextCmd::Use { name } => {
            session.config.context(&name)?;
            session.config.current_context = Some(name.clone());
            session.save()?;
            session.out.show(Shown::Message {
                value: json!({"current": name}),
                text: format!("Switched to context {name:?}."),
            })
        }
        ContextCmd::Add {
            name,
            api,
            token_stdin,
            make_current,
        } => {
            check_context_name(&name)?;
            let api = normalize_api(&api)?;
            let token = if token_stdin {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| Error::usage(format!("cannot read the token from stdin: {e}")))?;
                let s = s.trim().to_owned();
                if s.is_empty() {
                    return Err(Error::usage("stdin held no token"));
                }
                Some(s)
            } else {
                None
            };
            let entry = session.config.contexts.entry(name.clone()).or_default();
            if entry.api != api {
                // Another API: the old token means nothing there.
                *entry = Context {
                    api,
                    token: None,
                    project: None,
                };
            }
            if token.is_some() {
                entry.token = token;
            }
            if make_current || session.config.current_context.is_none() {
                session.config.current_context = Some(name.clone());
            }
            session.save()?;
            session.out.show(Shown::Message {
                value: json!({"name": name}),
                text: format!("Context {name:?} saved."),
            })
        }
        ContextCmd::Rm { name } => {
            session.config.context(&name)?;
            session.config.contexts.remove(&name);
            if session.config.current_context.as_deref() == Some(name.as_str()) {
                session.config.current_context = None;
            }
            session.save()?;
            session.out.show(Shown::Message {
                value: json!({"name": name}),
                text: format!("Context {name:?} removed."),
            })
        }
    }
}
