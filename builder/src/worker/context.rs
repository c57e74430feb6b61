//! The build's Dockerfile and context: paths kept inside the repository,
//! the Dockerfile read from it or rendered from a template (with the files
//! the template copies from lb, e.g. nginx's config), and the context packed
//! as a tar (`.git` and what `.dockerignore` names left out, symlinks kept
//! as links, refused past `--build-max-context`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lb_model::{BuildKind, BuildSpec};

/// The name the Dockerfile has inside the context tar.
pub const DOCKERFILE: &str = ".lb-Dockerfile";

/// What lb puts in the build context beside the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Files at the context's root, the Dockerfile (as [`DOCKERFILE`])
    /// first; they replace repository files of the same name.
    pub files: Vec<(String, Vec<u8>)>,
    /// The repository goes under this directory of the context (else at
    /// its root).
    pub code_dir: Option<String>,
    /// The rendered Dockerfile and files lb wrote, as text for the build
    /// log (empty for the repository's own Dockerfile).
    pub rendered: Vec<(String, String)>,
}

/// The Dockerfile and lb's files: the repository's Dockerfile, or the
/// template rendered.
pub async fn dockerfile(
    repo: &Path,
    build: &BuildSpec,
    base_images: &BTreeMap<String, String>,
) -> Result<Prepared, String> {
    match build.kind {
        BuildKind::Dockerfile => {
            let name = build.dockerfile.as_deref().unwrap_or("Dockerfile");
            let path = inside(repo, name, "source.build.dockerfile")?;
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|_| format!("Dockerfile {name:?} not found in the repository"))?;
            Ok(Prepared {
                files: vec![(DOCKERFILE.to_owned(), bytes)],
                code_dir: None,
                rendered: Vec::new(),
            })
        }
        BuildKind::Template => {
            let r = crate::template::render(build, base_images)?;
            let rendered: Vec<(String, String)> = std::iter::once(("Dockerfile", r.dockerfile))
                .chain(r.files)
                .map(|(name, text)| (name.to_owned(), text))
                .collect();
            let files = rendered
                .iter()
                .enumerate()
                .map(|(i, (name, text))| {
                    let name = if i == 0 { DOCKERFILE } else { name.as_str() };
                    (name.to_owned(), text.clone().into_bytes())
                })
                .collect();
            Ok(Prepared {
                files,
                code_dir: r.code_dir.map(str::to_owned),
                rendered,
            })
        }
    }
}

/// `relative` under `root`, refusing paths that leave it.
pub fn inside(root: &Path, relative: &str, field: &str) -> Result<PathBuf, String> {
    let path = Path::new(relative);
    if path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "{field} {relative:?} must stay inside the repository"
        ));
    }
    let joined = root.join(path);
    let real = joined
        .canonicalize()
        .map_err(|_| format!("{field} {relative:?} not found in the repository"))?;
    let root = root.canonicalize().map_err(|e| e.to_string())?;
    if !real.starts_with(&root) {
        return Err(format!("{field} {relative:?} leads outside the repository"));
    }
    Ok(real)
}

/// The build context as a tar: the repository's `context` directory (under
/// `prepared.code_dir` if set) and lb's files at the root; `.git` and the
/// paths the context's `.dockerignore` excludes are left out; symlinks
/// stay links. Refused past `max` bytes of repository files.
pub fn pack(context: &Path, prepared: &Prepared, max: u64) -> Result<Vec<u8>, String> {
    let mut total = 0u64;
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let base = Path::new(prepared.code_dir.as_deref().unwrap_or(""));
    if prepared.code_dir.is_some() {
        // Present even for an empty repository, so COPY finds it.
        builder
            .append_dir(base, context)
            .map_err(|e| e.to_string())?;
    }
    let ours = |rel: &Path| {
        prepared
            .files
            .iter()
            .any(|(name, _)| rel == Path::new(name))
    };
    let ignore = super::ignore::Ignore::load(context)?;
    let mut stack = vec![context.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("context {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let path = entry.path();
            let rel = path.strip_prefix(context).map_err(|e| e.to_string())?;
            // lb's fetched ADD sources go under RESERVED: none of the
            // repository's files there.
            let reserved = rel == Path::new(super::fetch::RESERVED);
            if rel == Path::new(".git") || (prepared.code_dir.is_none() && (ours(rel) || reserved))
            {
                continue;
            }
            let name = base.join(rel);
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            // .dockerignore'd paths stay out (the file itself goes along);
            // an excluded directory is still looked into when an exception
            // may bring something inside it back.
            if rel != Path::new(super::ignore::FILE) && ignore.excludes(&rel.to_string_lossy()) {
                if kind.is_dir() && ignore.has_exceptions() {
                    stack.push(path);
                }
                continue;
            }
            if kind.is_dir() {
                builder
                    .append_dir(&name, &path)
                    .map_err(|e| e.to_string())?;
                stack.push(path);
            } else {
                if kind.is_file() {
                    total += entry.metadata().map(|m| m.len()).unwrap_or(0);
                    if total > max {
                        return Err(format!(
                            "the build context is larger than {} MiB (--build-max-context)",
                            max >> 20
                        ));
                    }
                }
                builder
                    .append_path_with_name(&path, &name)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    // lb's files go in whatever .dockerignore says; a fetched ADD source
    // has the mode a remote ADD gives it.
    for (name, bytes) in &prepared.files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        let fetched = name.starts_with(&format!("{}/", super::fetch::RESERVED));
        header.set_mode(if fetched { 0o600 } else { 0o644 });
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .map_err(|e| e.to_string())?;
    }
    builder.into_inner().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
        assert!(inside(dir.path(), "app", "f").is_ok());
        assert!(inside(dir.path(), "../x", "f")
            .unwrap_err()
            .contains("must stay inside"));
        assert!(inside(dir.path(), "/etc", "f")
            .unwrap_err()
            .contains("must stay inside"));
        assert!(inside(dir.path(), "out", "f")
            .unwrap_err()
            .contains("leads outside"));
        assert!(inside(dir.path(), "nope", "f")
            .unwrap_err()
            .contains("not found"));
    }

    fn ours(code_dir: Option<&str>) -> Prepared {
        Prepared {
            files: vec![
                (DOCKERFILE.to_owned(), b"FROM x".to_vec()),
                (".lb-extra".to_owned(), b"conf".to_vec()),
            ],
            code_dir: code_dir.map(str::to_owned),
            rendered: Vec::new(),
        }
    }

    fn names(tar: &[u8]) -> Vec<String> {
        let mut names: Vec<String> = tar::Archive::new(tar)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_context_leaves_git_out_and_holds_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.py"), "print(1)").unwrap();
        std::fs::write(dir.path().join(DOCKERFILE), "stale").unwrap();
        let tar = pack(dir.path(), &ours(None), 1 << 20).unwrap();
        assert_eq!(names(&tar), [DOCKERFILE, ".lb-extra", "src", "src/main.py"]);
        let e = pack(dir.path(), &ours(None), 3).unwrap_err();
        assert!(e.contains("--build-max-context"), "{e}");
        // Under a code directory, lb's files stay apart from the repository's.
        let tar = pack(dir.path(), &ours(Some("site")), 1 << 20).unwrap();
        assert_eq!(
            names(&tar),
            [
                DOCKERFILE,
                ".lb-extra",
                "site",
                "site/.lb-Dockerfile",
                "site/src",
                "site/src/main.py"
            ]
        );
    }

    #[test]
    fn dockerignored_files_stay_out() {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in [
            (
                ".dockerignore",
                "secret.txt\n*.log\n!keep.log\nnode_modules\nbig\n",
            ),
            ("secret.txt", "s"),
            ("x.log", "l"),
            ("keep.log", "k"),
            ("node_modules/a/b.js", "n"),
            ("src/main.py", "print(1)"),
            ("big", &"x".repeat(4096)),
        ] {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        // What is ignored does not count towards the limit either.
        let tar = pack(dir.path(), &ours(None), 1024).unwrap();
        assert_eq!(
            names(&tar),
            [
                ".dockerignore",
                DOCKERFILE,
                ".lb-extra",
                "keep.log",
                "src",
                "src/main.py"
            ]
        );
        // Under a code directory too.
        let tar = pack(dir.path(), &ours(Some("site")), 1024).unwrap();
        assert!(!names(&tar).contains(&"site/secret.txt".to_owned()));
        // An exception inside an excluded directory brings the file back.
        std::fs::write(
            dir.path().join(".dockerignore"),
            "node_modules\n!node_modules/a/b.js\n",
        )
        .unwrap();
        let tar = pack(dir.path(), &ours(None), 1 << 20).unwrap();
        assert!(names(&tar).contains(&"node_modules/a/b.js".to_owned()));
        assert!(!names(&tar).contains(&"node_modules".to_owned()));
    }

    #[test]
    fn fetched_add_sources_go_in_whatever_dockerignore_says() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gone"), "g").unwrap();
        // The repository's own .lb-add stays out (kept by an exception).
        std::fs::write(dir.path().join(".dockerignore"), "*\n!.lb-add\n").unwrap();
        std::fs::create_dir_all(dir.path().join(".lb-add/0")).unwrap();
        std::fs::write(dir.path().join(".lb-add/0/f"), "theirs").unwrap();
        let mut prepared = ours(None);
        prepared
            .files
            .push((".lb-add/0/f".to_owned(), b"fetched".to_vec()));
        let tar = pack(dir.path(), &prepared, 1 << 20).unwrap();
        assert_eq!(
            names(&tar),
            [".dockerignore", DOCKERFILE, ".lb-add/0/f", ".lb-extra"]
        );
        let mut archive = tar::Archive::new(tar.as_slice());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().starts_with(".lb-add") {
                assert_eq!(entry.header().mode().unwrap(), 0o600);
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
                assert_eq!(text, "fetched");
            }
        }
    }

    #[tokio::test]
    async fn a_template_brings_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let build: BuildSpec = serde_json::from_value(serde_json::json!(
            {"kind": "template", "language": "static", "framework": "html", "spa": true}
        ))
        .unwrap();
        let p = dockerfile(dir.path(), &build, &BTreeMap::new())
            .await
            .unwrap();
        let names: Vec<&str> = p.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [DOCKERFILE, crate::template::NGINX_CONF]);
        assert_eq!(p.code_dir.as_deref(), Some(crate::template::SITE_DIR));
        assert_eq!(p.rendered[0].0, "Dockerfile");
        assert!(p.rendered[1].1.contains("/index.html;"));
    }
}
