//! Dockerfiles lb writes for `"kind": "template"` builds, rendered with tera
//! from `templates/dockerfiles/` (compiled into the binary), with defaults
//! per language and framework that a service's `build_cmd`, `run_cmd` and
//! `version` override. Static sites (language `static`, and the Node
//! frameworks that build to static files) are served by nginx with lb's own
//! config (`nginx.conf.tera`: caching headers, gzip, the SPA fallback when
//! `spa` is set), written into the context beside the Dockerfile.

use std::collections::BTreeMap;

use lb_model::BuildSpec;

const STATIC: &str = include_str!("../../templates/dockerfiles/static.tera");
const PYTHON: &str = include_str!("../../templates/dockerfiles/python.tera");
const NODE: &str = include_str!("../../templates/dockerfiles/node.tera");
const NODE_STATIC: &str = include_str!("../../templates/dockerfiles/node-static.tera");
const GO: &str = include_str!("../../templates/dockerfiles/go.tera");
const NGINX: &str = include_str!("../../templates/dockerfiles/nginx.conf.tera");

/// The name of lb's nginx config inside the build context.
pub const NGINX_CONF: &str = ".lb-nginx.conf";

/// Where a plain static site's files go inside the build context, so that
/// lb's own files beside them are not copied into the site.
pub const SITE_DIR: &str = "site";

/// A rendered template: the Dockerfile and the files it copies from lb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Other files for the context's root: (name, text).
    pub files: Vec<(&'static str, String)>,
    /// The repository goes under this directory of the context (else at
    /// its root).
    pub code_dir: Option<&'static str>,
}

/// One framework's defaults.
struct Framework {
    language: &'static str,
    name: &'static str,
    build_cmd: &'static str,
    run_cmd: &'static str,
    port: u16,
    /// Where the build writes a static site (the first found is served);
    /// empty for an app that is its own server.
    output: &'static [&'static str],
}

const fn app(
    language: &'static str,
    name: &'static str,
    build_cmd: &'static str,
    run_cmd: &'static str,
    port: u16,
) -> Framework {
    Framework {
        language,
        name,
        build_cmd,
        run_cmd,
        port,
        output: &[],
    }
}

const fn site(
    language: &'static str,
    name: &'static str,
    build_cmd: &'static str,
    output: &'static [&'static str],
) -> Framework {
    Framework {
        language,
        name,
        build_cmd,
        run_cmd: "",
        port: 80,
        output,
    }
}

const FRAMEWORKS: &[Framework] = &[
    site("static", "html", "", &["dist"]),
    app(
        "python",
        "fastapi",
        "",
        "uvicorn main:app --host 0.0.0.0 --port 8000",
        8000,
    ),
    app(
        "python",
        "flask",
        "",
        "gunicorn --bind 0.0.0.0:8000 app:app",
        8000,
    ),
    app(
        "python",
        "django",
        "",
        "python manage.py runserver 0.0.0.0:8000",
        8000,
    ),
    app("node", "express", "", "node index.js", 3000),
    app("node", "nest", "npm run build", "node dist/main.js", 3000),
    app("node", "next", "npm run build", "npm start", 3000),
    // Node projects that build to static files, served by nginx.
    site("node", "vite", "npm run build", &["dist"]),
    site("node", "vue", "npm run build", &["dist"]),
    // Create React App writes build/, React on Vite dist/.
    site("node", "react", "npm run build", &["build", "dist"]),
    // Any other: Next's `output: "export"` writes out/.
    site("node", "static", "npm run build", &["dist", "build", "out"]),
    app(
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

/// Renders the Dockerfile of a template build (and nginx's config for a
/// static site). `bases` overrides the base image per language (`static`
/// is also the serving image of Node static sites). Errors name the field
/// at fault.
pub fn render(spec: &BuildSpec, bases: &BTreeMap<String, String>) -> Result<Rendered, String> {
    let language = spec.language.as_deref().unwrap_or("");
    let framework = spec.framework.as_deref().unwrap_or(match language {
        "static" => "html",
        _ => "",
    });
    let Some(found) = FRAMEWORKS
        .iter()
        .find(|f| f.language == language && f.name == framework)
    else {
        let known: Vec<String> = FRAMEWORKS
            .iter()
            .map(|f| format!("{}/{}", f.language, f.name))
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
    let serves_files = !found.output.is_empty();
    if spec.spa && !serves_files {
        return Err(format!(
            "source.build.spa: {language}/{framework} runs its own server, it is not a static site"
        ));
    }
    let node_site = language == "node" && serves_files;
    if node_site && spec.run_cmd.is_some() {
        return Err(format!(
            "source.build.run_cmd: {language}/{framework} is served by nginx, it takes no run command"
        ));
    }
    let template = match language {
        "static" => STATIC,
        "python" => PYTHON,
        "node" if node_site => NODE_STATIC,
        "node" => NODE,
        _ => GO,
    };
    let base = |language: &str, version: Option<&str>| {
        bases
            .get(language)
            .cloned()
            .unwrap_or_else(|| default_base(language, version))
    };
    let build_cmd = spec.build_cmd.as_deref().unwrap_or(found.build_cmd);
    // A static site without a build step is copied from its own directory.
    let code_dir = (language == "static" && build_cmd.is_empty()).then_some(SITE_DIR);
    let mut context = tera::Context::new();
    context.insert("base_image", &base(language, spec.version.as_deref()));
    context.insert("static_image", &base("static", None));
    context.insert("framework", framework);
    context.insert("version", &spec.version.clone().unwrap_or_default());
    context.insert("build_cmd", build_cmd);
    context.insert("run_cmd", spec.run_cmd.as_deref().unwrap_or(found.run_cmd));
    context.insert("output_dirs", found.output);
    context.insert("code_dir", code_dir.unwrap_or("."));
    context.insert("nginx_conf", NGINX_CONF);
    context.insert("port", &found.port);
    context.insert("spa", &spec.spa);
    let dockerfile = tera::Tera::one_off(template, &context, false)
        .map_err(|e| format!("template {language}: {e}"))?;
    let mut files = Vec::new();
    if serves_files {
        let conf = tera::Tera::one_off(NGINX, &context, false)
            .map_err(|e| format!("template nginx.conf: {e}"))?;
        files.push((NGINX_CONF, conf));
    }
    Ok(Rendered {
        dockerfile,
        files,
        code_dir,
    })
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
        for f in FRAMEWORKS {
            let text = render(&spec(f.language, f.name), &BTreeMap::new())
                .unwrap()
                .dockerfile;
            assert!(text.starts_with("# lb template"), "{text}");
            let marker = text.find("ARG LB_STEP=building").expect("step marker");
            if f.language != "static" {
                let code = text.find("COPY . .").expect("code copied");
                assert!(
                    marker < code,
                    "{}/{}: deps after code:\n{text}",
                    f.language,
                    f.name
                );
            }
        }
        let flask = render(&spec("python", "flask"), &BTreeMap::new())
            .unwrap()
            .dockerfile;
        assert!(flask.contains("FROM python:3.12-slim"));
        assert!(flask.contains("CMD gunicorn --bind 0.0.0.0:8000 app:app"));
    }

    #[test]
    fn overrides_and_bad_input() {
        let mut s = spec("node", "express");
        s.version = Some("22".into());
        s.run_cmd = Some("node server.js".into());
        let text = render(&s, &BTreeMap::new()).unwrap().dockerfile;
        assert!(text.contains("FROM node:22-alpine") && text.contains("CMD node server.js"));
        let bases = BTreeMap::from([("node".to_string(), "local/node:1".to_string())]);
        assert!(render(&s, &bases)
            .unwrap()
            .dockerfile
            .contains("FROM local/node:1"));
        s.run_cmd = Some("a\nRUN evil".into());
        assert!(render(&s, &bases).unwrap_err().contains("one line"));
        assert!(render(&spec("cobol", "x"), &bases)
            .unwrap_err()
            .contains("known are"));
    }

    /// Renders `spec` with local base images and checks that each of
    /// `dockerfile` and `conf` appears in the Dockerfile and nginx's config.
    fn check(spec: &BuildSpec, dockerfile: &[&str], conf: &[&str], code_dir: Option<&str>) {
        let bases = BTreeMap::from([
            ("node".to_string(), "local/node:1".to_string()),
            ("static".to_string(), "local/nginx:1".to_string()),
        ]);
        let r = render(spec, &bases).unwrap();
        for want in dockerfile {
            assert!(
                r.dockerfile.contains(want),
                "{want:?} not in:\n{}",
                r.dockerfile
            );
        }
        let [(name, text)] = r.files.as_slice() else {
            panic!("one nginx config expected, got {:?}", r.files)
        };
        assert_eq!(*name, NGINX_CONF);
        for want in conf {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        assert_eq!(r.code_dir, code_dir);
    }

    #[test]
    fn static_sites_get_nginx_with_caching_and_the_spa_fallback() {
        let mut s = spec("static", "html");
        check(
            &s,
            &[
                "FROM local/nginx:1\n",
                "COPY site/ /srv/site/\n",
                "COPY .lb-nginx.conf /etc/nginx/nginx.conf\n",
                "EXPOSE 80\n",
                "CMD [\"nginx\", \"-g\", \"daemon off;\"]",
            ],
            &[
                "listen 80 default_server;",
                "server_tokens off;",
                "gzip on;",
                "immutable",
                "try_files $uri $uri/ =404;",
            ],
            Some(SITE_DIR),
        );
        s.spa = true;
        check(
            &s,
            &[],
            &["try_files $uri $uri/ /index.html;"],
            Some(SITE_DIR),
        );
        // A build step runs in a first stage; only its output is served.
        s.build_cmd = Some("make site".into());
        check(
            &s,
            &[
                "FROM local/nginx:1 AS build\n",
                "RUN make site\n",
                "COPY --from=build /src/dist/ /srv/site/\n",
            ],
            &["/index.html;"],
            None,
        );
    }

    #[test]
    fn node_sites_build_with_node_and_are_served_by_nginx() {
        let mut s = spec("node", "vite");
        s.spa = true;
        check(
            &s,
            &[
                "FROM local/node:1 AS build\n",
                "RUN npm run build\n",
                "for d in dist; do",
                "FROM local/nginx:1\n",
                "COPY --from=build /lb-site/ /srv/site/\n",
                "EXPOSE 80\n",
            ],
            &["/index.html;"],
            None,
        );
        check(
            &spec("node", "react"),
            &["for d in build dist; do", "none of build, dist"],
            &["=404;"],
            None,
        );
        let mut s = spec("node", "static");
        s.build_cmd = Some("npx astro build".into());
        s.version = Some("22".into());
        let r = render(&s, &BTreeMap::new()).unwrap();
        assert!(r.dockerfile.contains("FROM node:22-alpine AS build\n"));
        assert!(r.dockerfile.contains("RUN npx astro build\n"));
        assert!(r.dockerfile.contains("FROM nginx:1.27-alpine\n"));

        s.run_cmd = Some("node server.js".into());
        let e = render(&s, &BTreeMap::new()).unwrap_err();
        assert!(
            e.contains("source.build.run_cmd") && e.contains("nginx"),
            "{e}"
        );
        let mut s = spec("node", "express");
        s.spa = true;
        let e = render(&s, &BTreeMap::new()).unwrap_err();
        assert!(
            e.contains("source.build.spa") && e.contains("node/express"),
            "{e}"
        );
        // Servers get no nginx config.
        assert!(render(&spec("node", "next"), &BTreeMap::new())
            .unwrap()
            .files
            .is_empty());
    }
}
