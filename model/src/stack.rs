//! Stacks: a service whose source names a compose file (or an lb.yaml) in
//! its repository (`source.compose`), the testausdeploy flow. A build of a
//! stack reads the file at the commit (no image is built), and the API
//! applies it to the stack's project as the project's owner, then builds
//! the services it names that come from the same repository at that commit.
//!
//! A stack runs nothing itself: its spec has `replicas: 0`, no image, no
//! ports and no domains ([`check_spec`]). Here are the pure parts: the
//! checks, where a compose file's env files are in the repository
//! ([`env_file_path`]), and the document a stack's file gives
//! ([`document`]). Pure: no IO (the files are read by the caller).

use serde_json::{json, Map, Value};

use crate::apply::{compose, detect, parse_yaml, Document, DocumentError, Format};
use crate::{truncate, Result, ServiceSpec, Source, ValidationError};

/// The longest `source.compose` path, in bytes.
pub const MAX_FILE_PATH: usize = 255;

/// Checks `source.compose`: a relative path inside the repository (no
/// leading `/`, no `..` segment), at most [`MAX_FILE_PATH`] bytes.
pub fn check_file(path: &str) -> std::result::Result<(), String> {
    let shown = truncate(path);
    if path.is_empty() {
        return Err("must name a file in the repository".to_owned());
    }
    if path.len() > MAX_FILE_PATH {
        return Err(format!(
            "{shown:?} is {} bytes long (at most {MAX_FILE_PATH})",
            path.len()
        ));
    }
    if path.starts_with('/')
        || path.split('/').any(|p| p == "..")
        || path.chars().any(|c| c.is_control() || c == '\\')
    {
        return Err(format!(
            "{shown:?} must be a relative path inside the repository (no leading \"/\", no \"..\")"
        ));
    }
    if path.ends_with('/') || path.split('/').all(|p| p.is_empty() || p == ".") {
        return Err(format!("{shown:?} names a directory, not a file"));
    }
    Ok(())
}

/// Whether a spec is a stack's.
pub fn is_stack(spec: &ServiceSpec) -> bool {
    spec.source.as_ref().is_some_and(|s| s.compose.is_some())
}

/// A stack runs nothing itself: `replicas` 0, no `image`, no `ports`, no
/// `domains` (what it deploys are the services of its file).
pub(crate) fn check_spec(spec: &ServiceSpec) -> Result<()> {
    if !is_stack(spec) {
        return Ok(());
    }
    let why = "a stack (source.compose) runs nothing itself: its file's services do";
    if spec.replicas != 0 {
        return Err(ValidationError::new(
            "replicas",
            format!("must be 0 ({why})"),
        ));
    }
    if spec.image.is_some() {
        return Err(ValidationError::new(
            "image",
            format!("must be unset ({why})"),
        ));
    }
    if !spec.ports.is_empty() {
        return Err(ValidationError::new(
            "ports",
            format!("must be empty ({why})"),
        ));
    }
    if !spec.domains.is_empty() {
        return Err(ValidationError::new(
            "domains",
            format!("must be empty ({why})"),
        ));
    }
    Ok(())
}

/// The directory of a file's path in the repository (`""` at the root).
fn dir_of(file: &str) -> &str {
    file.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// `relative` joined to the directory `dir` of the repository, `.` and `..`
/// resolved; `None` when it leaves the repository (or is absolute).
fn join(dir: &str, relative: &str) -> Option<String> {
    if relative.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = dir
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Where an env file a compose file names (`written`, relative to the
/// compose file `file`) is in the repository; an error when it leaves it.
pub fn env_file_path(file: &str, written: &str) -> std::result::Result<String, String> {
    match join(dir_of(file), written) {
        Some(path) if !path.is_empty() => Ok(path),
        _ => Err(format!(
            "env_file {:?} leads outside the repository",
            truncate(written)
        )),
    }
}

/// Whether two clone URLs name the same repository (a trailing `/` or
/// `.git` aside).
pub fn same_repository(a: &str, b: &str) -> bool {
    let bare = |url: &str| {
        let url = url.trim_end_matches('/');
        url.strip_suffix(".git").unwrap_or(url).to_owned()
    };
    bare(a) == bare(b)
}

/// The document a stack's file gives: lb's format or compose (detected by
/// the file's name or content). A compose file without `x-lb.source` gets
/// the stack's own repository (url, branch, vendor), so `build: .` builds
/// from it, and its local build contexts are taken relative to the compose
/// file's directory as compose does. The file's project name (compose
/// `name`, lb's `project`) is ignored: a stack applies to its own project.
/// `env_file` reads an env file by the path written in the file.
pub fn document(
    file: &str,
    text: &str,
    source: &Source,
    env_file: &dyn Fn(&str) -> std::result::Result<String, String>,
) -> std::result::Result<(Format, Document), DocumentError> {
    let mut value = parse_yaml(text)?;
    let format = detect(Some(file), &value);
    let mut doc = match format {
        Format::Lb => {
            if let Some(top) = value.as_object_mut() {
                top.remove("project");
            }
            Document::from_value(value)?
        }
        Format::Compose => {
            if let Some(top) = value.as_object_mut() {
                top.remove("name");
                own_repository(top, dir_of(file), source);
            }
            compose::convert(&value, env_file)?
        }
    };
    doc.project = None;
    Ok((format, doc))
}

/// Compose's local build contexts: the stack's repository, unless the file
/// names one in `x-lb.source`; the contexts relative to the file's `dir`.
fn own_repository(top: &mut Map<String, Value>, dir: &str, source: &Source) {
    let x_lb = top
        .entry("x-lb")
        .and_modify(|v| {
            if v.is_null() {
                *v = json!({});
            }
        })
        .or_insert_with(|| json!({}));
    let Some(x_lb) = x_lb.as_object_mut() else {
        return; // not a mapping: the conversion names it
    };
    if x_lb.contains_key("source") {
        return;
    }
    let mut repository = Map::new();
    repository.insert("url".into(), source.url.clone().into());
    if let Some(branch) = &source.branch {
        repository.insert("branch".into(), branch.clone().into());
    }
    if let Some(vendor) = &source.vendor {
        repository.insert("vendor".into(), vendor.clone().into());
    }
    x_lb.insert("source".into(), Value::Object(repository));
    if dir.is_empty() {
        return;
    }
    let Some(services) = top.get_mut("services").and_then(Value::as_object_mut) else {
        return;
    };
    let git = |c: &str| {
        ["https://", "http://", "git://", "ssh://", "git@"]
            .iter()
            .any(|s| c.starts_with(s))
    };
    // A context leaving the repository keeps its `..`: the source's check
    // names it.
    let rebase = |c: &str| join(dir, c).unwrap_or_else(|| format!("{dir}/{c}"));
    for service in services.values_mut() {
        let Some(build) = service.as_object_mut().and_then(|s| s.get_mut("build")) else {
            continue;
        };
        match build {
            Value::String(context) if !git(context) => *context = rebase(context),
            Value::Object(map) => {
                let context = map
                    .get("context")
                    .and_then(Value::as_str)
                    .unwrap_or(".")
                    .to_owned();
                if !git(&context) && map.get("context").is_none_or(Value::is_string) {
                    map.insert("context".into(), rebase(&context).into());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: Value) -> ServiceSpec {
        serde_json::from_value(value).unwrap()
    }

    fn source() -> Source {
        serde_json::from_value(
            json!({"url": "https://git.example/o/app.git", "branch": "main",
            "compose": "docker-compose.yml"}),
        )
        .unwrap()
    }

    #[test]
    fn compose_paths_stay_in_the_repository() {
        for ok in [
            "docker-compose.yml",
            "deploy/compose.yaml",
            "./lb.yaml",
            "a..b/x.yml",
        ] {
            assert_eq!(check_file(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x.yml",
            "deploy/../../x.yml",
            "dir/",
            ".",
            "a\0b",
        ] {
            assert!(check_file(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}.yml", "a".repeat(252));
        assert!(check_file(&long).unwrap_err().contains("at most 255"));
        assert_eq!(check_file(&long[1..]), Ok(()));
        let e = spec(json!({"name": "s", "replicas": 0,
            "source": {"url": "https://h/r.git", "compose": "../up.yml"}}))
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "source.compose", "{e}");
        let e = spec(json!({"name": "s", "source": {"url": "https://h/r.git", "prune": true}}))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "source.prune", "{e}");
    }

    #[test]
    fn a_stack_runs_nothing_itself() {
        let check = |extra: Value, field: Option<&str>| {
            let mut value = json!({"name": "stack", "replicas": 0,
                "source": {"url": "https://h/r.git", "compose": "compose.yaml", "prune": true}});
            for (k, v) in extra.as_object().unwrap() {
                value[k] = v.clone();
            }
            let got = spec(value.clone()).validate().err();
            assert_eq!(
                got.as_ref().map(|e| e.field.as_str()),
                field,
                "{value} {got:?}"
            );
            if let Some(e) = got {
                assert!(e.message.contains("stack"), "{e}");
            }
        };
        check(json!({}), None);
        check(json!({"replicas": 1}), Some("replicas"));
        check(json!({"image": "nginx:1.25"}), Some("image"));
        check(json!({"ports": [{"container": 80}]}), Some("ports"));
        check(json!({"domains": ["a.example.com"]}), Some("domains"));
        // A default spec has one replica: a stack must say 0.
        let e = spec(json!({"name": "s", "source": {"url": "https://h/r.git",
            "compose": "compose.yaml"}}))
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "replicas");
        // Not a stack: as before.
        spec(json!({"name": "s", "replicas": 2, "source": {"url": "https://h/r.git"}}))
            .validate()
            .unwrap();
    }

    #[test]
    fn env_files_are_relative_to_the_compose_file() {
        assert_eq!(
            env_file_path("docker-compose.yml", "web.env").unwrap(),
            "web.env"
        );
        assert_eq!(
            env_file_path("deploy/compose.yml", "./web.env").unwrap(),
            "deploy/web.env"
        );
        assert_eq!(
            env_file_path("deploy/compose.yml", "../.env").unwrap(),
            ".env"
        );
        for bad in ["../x.env", "/etc/passwd", ".", "a/../.."] {
            let e = env_file_path("docker-compose.yml", bad).unwrap_err();
            assert!(e.contains("outside the repository"), "{bad}: {e}");
        }
        assert!(env_file_path("deploy/compose.yml", "../../x").is_err());
    }

    #[test]
    fn repositories_compare_without_trailing_git() {
        assert!(same_repository("https://h/o/r.git", "https://h/o/r"));
        assert!(same_repository("https://h/o/r/", "https://h/o/r.git"));
        assert!(!same_repository("https://h/o/r", "https://h/o/s"));
    }

    #[test]
    fn a_compose_stack_builds_from_its_own_repository() {
        let text = "name: other\nservices:\n  web:\n    build: .\n    env_file: web.env\n  \
                    api:\n    build: {context: api, dockerfile: Dockerfile.prod}\n  \
                    db:\n    image: postgres:16\n";
        let env = |path: &str| match path {
            "web.env" => Ok("MODE=one\n".to_owned()),
            other => Err(format!("{other} not found")),
        };
        let (format, doc) = document("docker-compose.yml", text, &source(), &env).unwrap();
        assert_eq!(format, Format::Compose);
        assert_eq!(doc.project, None, "a stack applies to its own project");
        let web = doc.services["web"].spec.source.clone().unwrap();
        assert_eq!(web.url, "https://git.example/o/app.git");
        assert_eq!(web.branch.as_deref(), Some("main"));
        assert_eq!(web.compose, None, "a service of the file is no stack");
        assert_eq!(doc.services["web"].spec.env["MODE"], "one");
        // In a subdirectory: contexts are the compose file's.
        let (_, doc) = document("deploy/docker-compose.yml", text, &source(), &env).unwrap();
        let web = doc.services["web"].spec.source.clone().unwrap();
        assert_eq!(web.build.context.as_deref(), Some("deploy"));
        assert_eq!(web.build.dockerfile.as_deref(), Some("deploy/Dockerfile"));
        let api = doc.services["api"].spec.source.clone().unwrap();
        assert_eq!(api.build.context.as_deref(), Some("deploy/api"));
        assert_eq!(
            api.build.dockerfile.as_deref(),
            Some("deploy/api/Dockerfile.prod")
        );
        // The file's own x-lb.source wins.
        let own = format!("x-lb: {{source: {{url: 'https://other.example/x.git'}}}}\n{text}");
        let (_, doc) = document("docker-compose.yml", &own, &source(), &env).unwrap();
        let web = doc.services["web"].spec.source.clone().unwrap();
        assert_eq!(web.url, "https://other.example/x.git");
        // Keys lb cannot honour are named.
        let bad = "services:\n  web:\n    build: .\n    privileged: true\n";
        let e = document("docker-compose.yml", bad, &source(), &env).unwrap_err();
        assert!(e.to_string().contains("services.web.privileged"), "{e}");
        // lb's format: its project name is ignored too.
        let lb = "project: elsewhere\nservices:\n  db: {image: 'postgres:16'}\n";
        let (format, doc) = document("lb.yaml", lb, &source(), &env).unwrap();
        assert_eq!((format, doc.project), (Format::Lb, None));
    }
}
