//! `lbc domains ls | add | rm | cert` (a service's domains and their
//! certificates) and `lbc open` (a service's first URL, in the browser).
//!
//! Every failure about one domain names it, with the exit code of the API's
//! answer (2 for a domain refused, 3 not found, 4 taken by another service).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lb_model::views::ServiceView;
use lb_model::{CertView, Timestamp};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::args::DomainsCmd;
use crate::client::{segment, typed};
use crate::error::{Error, Kind, Result};
use crate::output::{duration, paint_state, word, Shown, Table};
use crate::session::Session;

/// A domain as `GET .../domains` shows it.
#[derive(Debug, Deserialize)]
struct DomainView {
    domain: String,
    #[serde(default)]
    certificate: Option<CertView>,
}

/// Runs `lbc domains ...`.
pub async fn run(session: &mut Session, cmd: DomainsCmd) -> Result<()> {
    match cmd {
        DomainsCmd::Ls { service } => ls(session, &service).await,
        DomainsCmd::Add { service, domain } => {
            let path = format!("{}/domains", session.service_path(&service)?);
            let answer = session
                .client()?
                .post(&path, &json!({ "domain": domain }))
                .await
                .map_err(|e| naming(&domain, e))?;
            session.out.show(Shown::Message {
                text: format!("Domain {domain:?} added to service {service:?}."),
                value: answer,
            })
        }
        DomainsCmd::Rm {
            service,
            domain,
            yes,
        } => {
            let path = domain_path(session, &service, &domain)?;
            super::confirm::confirm(
                yes,
                &format!("remove domain {domain:?} (and its certificate) from service {service:?}"),
            )?;
            session
                .client()?
                .call(Method::DELETE, &path, None)
                .await
                .map_err(|e| naming(&domain, e))?;
            session.out.show(Shown::Message {
                value: json!({ "deleted": domain }),
                text: format!("Domain {domain:?} removed from service {service:?}."),
            })
        }
        DomainsCmd::Cert {
            service,
            domain,
            chain,
            key,
            remove,
        } => {
            let path = format!("{}/certificate", domain_path(session, &service, &domain)?);
            if remove {
                session
                    .client()?
                    .call(Method::DELETE, &path, None)
                    .await
                    .map_err(|e| naming(&domain, e))?;
                return session.out.show(Shown::Message {
                    value: json!({ "deleted": domain }),
                    text: format!("Certificate of {domain:?} removed."),
                });
            }
            let (Some(chain), Some(key)) = (chain, key) else {
                return Err(Error::usage(
                    "give --chain FILE and --key FILE, or --remove",
                ));
            };
            let body = json!({ "chain": read_pem(&chain)?, "key": read_pem(&key)? });
            let answer = session
                .client()?
                .call(Method::PUT, &path, Some(&body))
                .await
                .map_err(|e| naming(&domain, e))?;
            let cert: CertView = typed(&answer)?;
            let expires = cert.not_after.map(expiry).unwrap_or_default();
            session.out.show(Shown::Message {
                text: format!(
                    "Certificate of {domain:?} uploaded ({}, {}).",
                    cert.names.join(", "),
                    expires
                ),
                value: answer,
            })
        }
    }
}

async fn ls(session: &mut Session, service: &str) -> Result<()> {
    let path = format!("{}/domains", session.service_path(service)?);
    let list = session.client()?.get(&path).await?;
    let items: Vec<DomainView> = typed(&list)?;
    let color = session.out.color;
    let table = Table {
        headers: vec!["DOMAIN", "CERTIFICATE", "SOURCE", "EXPIRES", "ERROR"],
        rows: items
            .iter()
            .map(|d| match &d.certificate {
                None => vec![
                    d.domain.clone(),
                    "none".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
                Some(c) => vec![
                    d.domain.clone(),
                    paint_state(&word(&c.status), color),
                    word(&c.source),
                    c.not_after.map(expiry).unwrap_or_default(),
                    c.error.clone().unwrap_or_default(),
                ],
            })
            .collect(),
    };
    let ids = items.into_iter().map(|d| d.domain).collect();
    session.out.show(Shown::List {
        value: list,
        table,
        ids,
    })
}

/// `lbc open SERVICE`.
pub async fn open(session: &mut Session, service: &str) -> Result<()> {
    let path = session.service_path(service)?;
    let value = session.client()?.get(&path).await?;
    let view: ServiceView = typed(&value)?;
    let Some(url) = view.urls.first().cloned() else {
        return Err(no_url(service, &view));
    };
    session.out.show(Shown::Message {
        value: json!({ "url": url, "urls": view.urls }),
        text: url.clone(),
    })?;
    if let Some(opener) = find_in_path("xdg-open") {
        // Detached and quiet: a missing or failing browser is not lbc's
        // failure, the URL is printed already.
        let spawned = Command::new(opener)
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!("lbc: cannot run xdg-open: {e}");
        }
    }
    Ok(())
}

/// Why a service has no URL, and how to give it one.
fn no_url(service: &str, view: &ServiceView) -> Error {
    let spec = &view.spec;
    let why = if spec.ingress_port().is_none() {
        if spec.ports.is_empty() {
            "it publishes no port: add the port it listens on (`lbc service update SERVICE -p PORT`)"
        } else {
            "it has several ports: choose one with `lbc service update SERVICE --ingress-port PORT`"
        }
    } else if !spec.domains.iter().any(|d| !d.starts_with("*.")) {
        "it has no domain: add one (`lbc domains add SERVICE DOMAIN`) or start lb with \
         --base-domain for a generated name"
    } else {
        "the API shows none"
    };
    Error::new(
        Kind::Conflict,
        format!("service {service:?} has no URL: {why}"),
    )
}

/// The API path of one of a service's domains.
fn domain_path(session: &Session, service: &str, domain: &str) -> Result<String> {
    Ok(format!(
        "{}/domains/{}",
        session.service_path(service)?,
        segment(domain)
    ))
}

/// An error that names the domain (the API's own messages usually do).
fn naming(domain: &str, e: Error) -> Error {
    match e {
        Error::Message { kind, message } if !message.contains(domain) => {
            Error::new(kind, format!("domain {domain:?}: {message}"))
        }
        e => e,
    }
}

/// A PEM file's text; errors name the file.
fn read_pem(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))?;
    if !text.contains("-----BEGIN ") {
        return Err(Error::usage(format!(
            "{} is not PEM (no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(text)
}

/// `in 89d` or `expired 3d ago`, from seconds since the epoch.
fn expiry(at: Timestamp) -> String {
    let now = lb_model::now();
    if at >= now {
        format!("in {}", duration((at - now) as u64))
    } else {
        format!("expired {} ago", duration((now - at) as u64))
    }
}

/// An executable `name` on `PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_domain_once() {
        let e = naming("a.example.com", Error::new(Kind::Conflict, "taken"));
        assert_eq!(e.to_string(), "domain \"a.example.com\": taken");
        assert_eq!(e.exit_code(), crate::error::code::CONFLICT);
        let e = naming(
            "a.example.com",
            Error::new(Kind::Usage, "domain a.example.com is invalid"),
        );
        assert_eq!(e.to_string(), "domain a.example.com is invalid");
    }

    #[test]
    fn expiries() {
        let now = lb_model::now();
        assert_eq!(expiry(now + 3 * 86400 + 5), "in 3d");
        assert_eq!(expiry(now - 7200), "expired 2h ago");
    }
}
