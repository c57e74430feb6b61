//! `PUT /projects/{p}/apply`: a document (lb's format or a compose file,
//! as JSON or YAML by `Content-Type`) made the project's state; the work is
//! in [`crate::ops::apply`].

use lb_model::apply::{self, Document, Format};
use warp::http::StatusCode;

use super::{json, Response};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::ops::apply::{self as ops, Options};

/// `?prune=` and `?dry_run=`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyQuery {
    /// Delete the services the document does not name.
    pub prune: bool,
    /// Answer the plan without writing.
    pub dry_run: bool,
}

impl ApplyQuery {
    /// Parses the raw query; an unknown parameter or a value other than
    /// true/false/1/0 is a 400 naming it.
    pub fn parse(raw: &str) -> Result<Self> {
        let mut query = Self::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
            let flag = match value {
                "true" | "1" | "" => true,
                "false" | "0" => false,
                other => {
                    return Err(ApiError::invalid(
                        key,
                        format!("{other:?} is not true or false"),
                    ))
                }
            };
            match key {
                "prune" => query.prune = flag,
                "dry_run" => query.dry_run = flag,
                other => {
                    return Err(ApiError::invalid(
                        other,
                        format!("unknown query parameter {other:?} (prune, dry_run)"),
                    ))
                }
            }
        }
        Ok(query)
    }
}

/// Reads the body: YAML when the content type says so (`application/yaml`,
/// `text/yaml`, `application/x-yaml`), else JSON; lb's format or compose,
/// told apart by content. A compose file's `env_file`s cannot be read here.
pub fn document(content_type: Option<&str>, body: &[u8]) -> Result<Document> {
    let yaml = content_type.is_some_and(|t| t.to_ascii_lowercase().contains("yaml"));
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the document is not UTF-8 text"))?;
    let value = if yaml {
        apply::parse_yaml(text).map_err(ops::invalid)?
    } else {
        serde_json::from_str(text).map_err(|e| {
            ops::invalid(apply::DocumentError::Syntax {
                format: "JSON",
                line: e.line(),
                column: e.column(),
                message: e
                    .to_string()
                    .split(" at line ")
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            })
        })?
    };
    match apply::detect(None, &value) {
        Format::Lb => Document::from_value(value).map_err(ops::invalid),
        Format::Compose => apply::compose::convert(&value, &|path: &str| {
            Err(format!(
                "the API cannot read {path:?}: apply the file with lbc, which reads env files"
            ))
        })
        .map_err(ops::invalid),
    }
}

/// `PUT /projects/{p}/apply`.
pub async fn apply(
    ctx: Ctx,
    caller: Caller,
    p: String,
    query: ApplyQuery,
    content_type: Option<String>,
    body: Vec<u8>,
) -> Result<Response> {
    let doc = document(content_type.as_deref(), &body)?;
    let options = Options {
        prune: query.prune,
        dry_run: query.dry_run,
    };
    let applied = ops::apply(&ctx, &caller, &p, doc, options).await?;
    Ok(json(StatusCode::OK, &applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_bodies() {
        let q = ApplyQuery::parse("prune=true&dry_run=1").unwrap();
        assert!(q.prune && q.dry_run);
        assert!(!ApplyQuery::parse("").unwrap().prune);
        assert_eq!(
            ApplyQuery::parse("prune=yes").unwrap_err().field.as_deref(),
            Some("prune")
        );
        assert_eq!(
            ApplyQuery::parse("force=true")
                .unwrap_err()
                .field
                .as_deref(),
            Some("force")
        );
        let doc = document(
            Some("application/yaml"),
            b"services:\n  web: {image: x, replicas: 2}\n",
        )
        .unwrap();
        assert_eq!(doc.services["web"].spec.replicas, 2);
        let doc = document(None, br#"{"services": {"web": {"image": "x"}}}"#).unwrap();
        assert_eq!(doc.services["web"].spec.name, "web");
        let e = document(Some("application/yaml"), b"services:\n  web: [\n").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("line 3 column"), "{}", e.message);
        let e = document(None, b"{\"services\": }").unwrap_err();
        assert!(
            e.message.contains("invalid JSON at line 1 column 14"),
            "{}",
            e.message
        );
        let e = document(
            Some("text/yaml"),
            b"services:\n  web: {image: x, privileged: true, env_file: .env}\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("services.web.env_file"));
        assert!(
            e.message.contains("services.web.privileged"),
            "{}",
            e.message
        );
    }
}
