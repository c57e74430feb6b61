//! Dockerfiles lb writes for `"kind": "template"` builds, rendered with tera
//! from `templates/dockerfiles/` (compiled into the binary), with defaults
//! per language and framework that a service's `build_cmd`, `run_cmd` and
//! `version` override.

use std::collections::BTreeMap;

use lb_model::BuildSpec;

const STATIC: &str = include_str!("../../templates/dockerfiles/static.tera");
const PYTHON: &str = include_str!("../../templates/dockerfiles/python.tera");
const NODE: &str = include_str!("../../templates/dockerfiles/node.tera");
const GO: &str = include_str!("../../templates/dockerfiles/go.tera");

/// One framework's defaults: (language, framework, build command, run
/// command, port).
const FRAMEWORKS: &[(&str, &str, &str, &str, u16)] = &[
    ("static", "html", "", "", 80),
    (
        "python",
        "fastapi",
        "",
        "uvicorn main:app --host 0.0.0.0 --port 8000",
        8000,
    ),
    (
        "python",
        "flask",
        "",
        "gunicorn --bind 0.0.0.0:8000 app:app",
        8000,
    ),
    (
        "python",
        "django",
        "",
        "python manage.py runserver 0.0.0.0:8000",
        8000,
    ),
    ("node", "express", "", "node index.js", 3000),
    ("node", "nest", "npm run build", "node dist/main.js", 3000),
    ("node", "next", "npm run build", "npm start", 3000),
    (
        "go",
        "gin",
        "go build -o /usr/local/bin/app .",
        "/usr/local/bin/app",
        8080,
    ),
];

/// The default base image of a language at a version.
fn default_base(language: &str, version: Option<&str>) -> String {
    match language {
        "static" => "nginx:1.27-alpine".into(),
        "python" => format!("python:{}-slim", version.unwrap_or("3.12")),
        "node" => format!("node:{}-alpine", version.unwrap_or("20")),
        _ => format!("golang:{}", version.unwrap_or("1.22")),
    }
}

/// Renders the Dockerfile of a template build. `bases` overrides the base
/// image per language. Errors name the field at fault.
pub fn render(spec: &BuildSpec, bases: &BTreeMap<String, String>) -> Result<String, String> {
    let language = spec.language.as_deref().unwrap_or("");
    let framework = spec.framework.as_deref().unwrap_or(match language {
        "static" => "html",
        _ => "",
    });
    let Some(&(_, _, build_default, run_default, port)) = FRAMEWORKS
        .iter()
        .find(|(l, f, ..)| *l == language && *f == framework)
    else {
        let known: Vec<String> = FRAMEWORKS
            .iter()
            .map(|(l, f, ..)| format!("{l}/{f}"))
            .collect();
        return Err(format!(
            "no template for {language:?}/{framework:?}: known are {}",
            known.join(", ")
        ));
    };
    for (field, value) in [
        ("build_cmd", &spec.build_cmd),
        ("run_cmd", &spec.run_cmd),
        ("version", &spec.version),
    ] {
        if value.as_deref().is_some_and(|v| v.contains(['\n', '\r'])) {
            return Err(format!("source.build.{field} must be one line"));
        }
    }
    let template = match language {
        "static" => STATIC,
        "python" => PYTHON,
        "node" => NODE,
        _ => GO,
    };
    let base = bases
        .get(language)
        .cloned()
        .unwrap_or_else(|| default_base(language, spec.version.as_deref()));
    let mut context = tera::Context::new();
    context.insert("base_image", &base);
    context.insert("framework", framework);
    context.insert("version", &spec.version.clone().unwrap_or_default());
    context.insert(
        "build_cmd",
        spec.build_cmd.as_deref().unwrap_or(build_default),
    );
    context.insert("run_cmd", spec.run_cmd.as_deref().unwrap_or(run_default));
    context.insert("output_dir", "dist");
    context.insert("port", &port);
    tera::Tera::one_off(template, &context, false).map_err(|e| format!("template {language}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(language: &str, framework: &str) -> BuildSpec {
        BuildSpec {
            kind: lb_model::BuildKind::Template,
            language: Some(language.into()),
            framework: Some(framework.into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_framework_renders_with_dependencies_before_code() {
        for (language, framework, ..) in FRAMEWORKS {
            let text = render(&spec(language, framework), &BTreeMap::new()).unwrap();
            assert!(text.starts_with("# lb template"), "{text}");
            let marker = text.find("ARG LB_STEP=building").expect("step marker");
            if *language != "static" {
                let code = text.find("COPY . .").expect("code copied");
                assert!(
                    marker < code,
                    "{language}/{framework}: deps after code:\n{text}"
                );
            }
        }
        let flask = render(&spec("python", "flask"), &BTreeMap::new()).unwrap();
        assert!(flask.contains("FROM python:3.12-slim"));
        assert!(flask.contains("CMD gunicorn --bind 0.0.0.0:8000 app:app"));
    }

    #[test]
    fn overrides_and_bad_input() {
        let mut s = spec("node", "express");
        s.version = Some("22".into());
        s.run_cmd = Some("node server.js".into());
        let text = render(&s, &BTreeMap::new()).unwrap();
        assert!(text.contains("FROM node:22-alpine") && text.contains("CMD node server.js"));
        let bases = BTreeMap::from([("node".to_string(), "local/node:1".to_string())]);
        assert!(render(&s, &bases).unwrap().contains("FROM local/node:1"));
        s.run_cmd = Some("a\nRUN evil".into());
        assert!(render(&s, &bases).unwrap_err().contains("one line"));
        assert!(render(&spec("cobol", "x"), &bases)
            .unwrap_err()
            .contains("known are"));
    }
}
