//! The build's Dockerfile and context: paths kept inside the repository,
//! the Dockerfile read from it or rendered from a template, and the context
//! packed as a tar (`.git` left out, symlinks kept as links, refused past
//! `--build-max-context`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lb_model::{BuildKind, BuildSpec};

/// The name the Dockerfile has inside the context tar.
pub const DOCKERFILE: &str = ".lb-Dockerfile";

/// The Dockerfile's bytes: the repository's, or rendered from the template
/// (then also answered as text, for the build log).
pub async fn dockerfile(
    repo: &Path,
    build: &BuildSpec,
    base_images: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Option<String>), String> {
    match build.kind {
        BuildKind::Dockerfile => {
            let name = build.dockerfile.as_deref().unwrap_or("Dockerfile");
            let path = inside(repo, name, "source.build.dockerfile")?;
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|_| format!("Dockerfile {name:?} not found in the repository"))?;
            Ok((bytes, None))
        }
        BuildKind::Template => {
            let text = crate::template::render(build, base_images)?;
            Ok((text.clone().into_bytes(), Some(text)))
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

/// The build context as a tar, with the Dockerfile as [`DOCKERFILE`];
/// `.git` is left out; symlinks stay links. Refused past `max` bytes.
pub fn pack(context: &Path, dockerfile: &[u8], max: u64) -> Result<Vec<u8>, String> {
    let mut total = 0u64;
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut stack = vec![context.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("context {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let path = entry.path();
            let rel = path.strip_prefix(context).map_err(|e| e.to_string())?;
            if rel == Path::new(".git") || rel == Path::new(DOCKERFILE) {
                continue;
            }
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            if kind.is_dir() {
                builder.append_dir(rel, &path).map_err(|e| e.to_string())?;
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
                    .append_path_with_name(&path, rel)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, DOCKERFILE, dockerfile)
        .map_err(|e| e.to_string())?;
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

    #[test]
    fn the_context_leaves_git_out_and_holds_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.py"), "print(1)").unwrap();
        std::fs::write(dir.path().join(DOCKERFILE), "stale").unwrap();
        let tar = pack(dir.path(), b"FROM x", 1 << 20).unwrap();
        let mut names: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, [DOCKERFILE, "src", "src/main.py"]);
        let e = pack(dir.path(), b"FROM x", 3).unwrap_err();
        assert!(e.contains("--build-max-context"), "{e}");
    }
}
