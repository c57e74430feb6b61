//! `lbc project create | ls | get | update | rm | use`.

use lb_model::views::{List, ProjectInput, ProjectView};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::args::ProjectCmd;
use crate::client::{segment, typed};
use crate::error::{Error, Result};
use crate::output::{age, Shown, Table};
use crate::session::Session;

fn one(value: Value) -> Result<Shown> {
    let project: ProjectView = typed(&value)?;
    let fields = vec![
        ("Name", project.name),
        ("Id", project.id.clone()),
        ("Description", project.description),
        ("Revision", project.revision.to_string()),
        ("Age", age(project.created)),
    ];
    Ok(Shown::One {
        id: project.id,
        fields,
        value,
    })
}

/// Runs `lbc project ...`.
pub async fn run(session: &mut Session, cmd: ProjectCmd) -> Result<()> {
    let client = session.client()?;
    match cmd {
        ProjectCmd::Create { name, description } => {
            let body = json!(ProjectInput {
                name,
                description: description.unwrap_or_default(),
            });
            let project = client.post("/projects", &body).await?;
            session.out.show(one(project)?)
        }
        ProjectCmd::Ls => {
            let list = client.get("/projects?limit=1000").await?;
            let items = typed::<List<ProjectView>>(&list)?.items;
            let default = session.context()?.and_then(|c| c.project.clone());
            let table = Table {
                headers: vec!["NAME", "DESCRIPTION", "AGE"],
                rows: items
                    .iter()
                    .map(|p| {
                        let mut name = p.name.clone();
                        if default.as_deref() == Some(name.as_str()) {
                            name.push_str(" (default)");
                        }
                        vec![name, p.description.clone(), age(p.created)]
                    })
                    .collect(),
            };
            let ids = items.into_iter().map(|p| p.id).collect();
            session.out.show(Shown::List {
                value: list,
                table,
                ids,
            })
        }
        ProjectCmd::Get { name } => {
            let project = client.get(&format!("/projects/{}", segment(&name))).await?;
            session.out.show(one(project)?)
        }
        ProjectCmd::Update {
            name,
            rename,
            description,
        } => {
            let mut patch = Map::new();
            if let Some(new) = &rename {
                patch.insert("name".into(), json!(new));
            }
            if let Some(d) = description {
                patch.insert("description".into(), json!(d));
            }
            if patch.is_empty() {
                return Err(Error::usage(
                    "nothing to change: pass --rename or --description",
                ));
            }
            let project = client
                .call(
                    Method::PATCH,
                    &format!("/projects/{}", segment(&name)),
                    Some(&Value::Object(patch)),
                )
                .await?;
            // Keep the default project pointing at the renamed one.
            if let (Some(new), Some(context)) = (rename, session.context_name()) {
                if let Some(c) = session.config.contexts.get_mut(&context) {
                    if c.project.as_deref() == Some(name.as_str()) {
                        c.project = Some(new);
                        session.save()?;
                    }
                }
            }
            session.out.show(one(project)?)
        }
        ProjectCmd::Rm { name, yes } => {
            if !yes {
                // Unknown projects fail before the question, which counts
                // what goes with the project.
                let path = format!("/projects/{}/services?limit=1000", segment(&name));
                let services = typed::<List<Value>>(&client.get(&path).await?)?.total;
                let what = match services {
                    0 => String::new(),
                    1 => " with its service".to_owned(),
                    n => format!(" with its {n} services"),
                };
                super::confirm::confirm(yes, &format!("delete project {name:?}{what}"))?;
            }
            client
                .call(
                    Method::DELETE,
                    &format!("/projects/{}", segment(&name)),
                    None,
                )
                .await?;
            session.out.show(Shown::Message {
                value: json!({"deleted": name}),
                text: format!("Project {name:?} deleted."),
            })
        }
        ProjectCmd::Use { name } => {
            let project = client.get(&format!("/projects/{}", segment(&name))).await?;
            let context = session.context_name().ok_or_else(|| {
                Error::usage("no current context to keep the default project in: run `lbc login --api URL` first")
            })?;
            let project_name = typed::<ProjectView>(&project)?.name;
            session.config.context_mut(&context)?.project = Some(project_name.clone());
            session.save()?;
            session.out.show(Shown::Message {
                value: json!({"project": project_name, "context": context}),
                text: format!("Default project is now {project_name:?} (context {context:?})."),
            })
        }
    }
}
