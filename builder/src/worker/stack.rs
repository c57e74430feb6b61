//! A stack's build (`source.compose`): its file read from the checkout, with
//! the env files a compose file names, for the API to apply. Nothing is
//! built or deployed. Every path stays inside the checkout, symlinks
//! included, and the files together are bounded by [`STACK_MAX`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lb_model::stack::env_file_path;
use lb_model::{Source, StackFiles, STACK_MAX};

/// A path of the checkout, resolved: `Ok(None)` when nothing is there, an
/// error when it (or a symlink on the way) leads outside `root`.
fn resolve(root: &Path, relative: &str, what: &str) -> Result<Option<PathBuf>, String> {
    let real_root = root.canonicalize().map_err(|e| format!("checkout: {e}"))?;
    let real = match root.join(relative).canonicalize() {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{what} {relative:?}: {e}")),
    };
    if !real.starts_with(&real_root) {
        return Err(format!("{what} {relative:?} leads outside the repository"));
    }
    if !real.is_file() {
        return Err(format!("{what} {relative:?} is not a file"));
    }
    Ok(Some(real))
}

/// Reads a file of at most `left` bytes as text.
fn read_text(path: &Path, relative: &str, what: &str, left: usize) -> Result<String, String> {
    let too_big = || {
        format!(
            "{what} {relative:?}: a stack's file and env files may hold at most {} KiB together",
            STACK_MAX >> 10
        )
    };
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{what} {relative:?}: {e}"))?
        .len();
    if len > left as u64 {
        return Err(too_big());
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{what} {relative:?}: {e}"))?;
    if bytes.len() > left {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|_| format!("{what} {relative:?} is not UTF-8 text"))
}

/// Reads the stack's file `file` of the checkout `repo` and the env files it
/// names (as `source` is applied: see [`lb_model::stack::document`]). An env
/// file not in the repository is left out (the apply names it when it is
/// required); one leading outside it fails the build.
pub fn read(repo: &Path, file: &str, source: &Source) -> Result<StackFiles, String> {
    let what = "source.compose";
    let path = resolve(repo, file, what)?
        .ok_or_else(|| format!("{what} {file:?} not found in the repository"))?;
    let text = read_text(&path, file, what, STACK_MAX)?;
    let env_files = RefCell::new(BTreeMap::new());
    let refused = RefCell::new(None);
    let left = std::cell::Cell::new(STACK_MAX - text.len());
    let reader = |written: &str| -> Result<String, String> {
        if let Some(text) = env_files.borrow().get(written) {
            return Ok(String::clone(text));
        }
        let outcome = env_file_path(file, written).and_then(|relative| {
            match resolve(repo, &relative, "env_file")? {
                None => Ok(None),
                Some(real) => read_text(&real, &relative, "env_file", left.get()).map(Some),
            }
        });
        match outcome {
            Ok(Some(text)) => {
                left.set(left.get() - text.len());
                env_files
                    .borrow_mut()
                    .insert(written.to_owned(), text.clone());
                Ok(text)
            }
            Ok(None) => Err("not found in the repository".to_owned()),
            Err(e) => {
                refused.borrow_mut().get_or_insert(e.clone());
                Err(e)
            }
        }
    };
    // The document itself is the API's to check: here it only tells which
    // env files are named.
    let _ = lb_model::stack::document(file, &text, source, &reader);
    if let Some(e) = refused.into_inner() {
        return Err(e);
    }
    Ok(StackFiles {
        file: file.to_owned(),
        text,
        env_files: env_files.into_inner(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        serde_json::from_value(serde_json::json!({"url": "https://h/o/r.git",
            "compose": "deploy/docker-compose.yml"}))
        .unwrap()
    }

    fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        for (name, text) in files {
            let path = repo.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const COMPOSE: &str = "services:\n  web:\n    build: .\n    env_file: [web.env, ../.env, \
                           {path: gone.env, required: false}]\n";

    #[test]
    fn reads_the_file_and_its_env_files() {
        let dir = repo(&[
            ("deploy/docker-compose.yml", COMPOSE),
            ("deploy/web.env", "A=1\n"),
            (".env", "B=2\n"),
        ]);
        let files = read(
            &dir.path().join("repo"),
            "deploy/docker-compose.yml",
            &source(),
        )
        .unwrap();
        assert_eq!(files.text, COMPOSE);
        let names: Vec<&str> = files.env_files.keys().map(String::as_str).collect();
        assert_eq!(names, ["../.env", "web.env"]);
        assert_eq!(files.env_files["web.env"], "A=1\n");
    }

    #[test]
    fn paths_leading_outside_are_refused_symlinks_too() {
        let dir = repo(&[("deploy/docker-compose.yml", "")]);
        std::fs::write(dir.path().join("outside.env"), "SECRET=1\n").unwrap();
        let root = dir.path().join("repo");
        // An env file escaping by `..`.
        let text = "services:\n  web:\n    image: x\n    env_file: ../../outside.env\n";
        std::fs::write(root.join("deploy/docker-compose.yml"), text).unwrap();
        let e = read(&root, "deploy/docker-compose.yml", &source()).unwrap_err();
        assert!(e.contains("outside the repository"), "{e}");
        // An env file that is a symlink out of the checkout.
        std::os::unix::fs::symlink(dir.path().join("outside.env"), root.join("deploy/web.env"))
            .unwrap();
        std::fs::write(root.join("deploy/docker-compose.yml"), COMPOSE).unwrap();
        let e = read(&root, "deploy/docker-compose.yml", &source()).unwrap_err();
        assert!(e.contains("\"deploy/web.env\" leads outside"), "{e}");
        // The compose file itself a symlink out.
        std::os::unix::fs::symlink(dir.path().join("outside.env"), root.join("lb.yaml")).unwrap();
        let e = read(&root, "lb.yaml", &source()).unwrap_err();
        assert!(e.contains("leads outside"), "{e}");
        let e = read(&root, "missing.yml", &source()).unwrap_err();
        assert!(e.contains("not found"), "{e}");
    }

    #[test]
    fn the_files_are_bounded() {
        let big = format!("A={}\n", "x".repeat(STACK_MAX));
        let dir = repo(&[
            ("deploy/docker-compose.yml", COMPOSE),
            ("deploy/web.env", &big),
        ]);
        let e = read(
            &dir.path().join("repo"),
            "deploy/docker-compose.yml",
            &source(),
        )
        .unwrap_err();
        assert!(e.contains("at most 256 KiB"), "{e}");
        let dir = repo(&[("deploy/docker-compose.yml", &big)]);
        let e = read(
            &dir.path().join("repo"),
            "deploy/docker-compose.yml",
            &source(),
        )
        .unwrap_err();
        assert!(e.contains("at most 256 KiB"), "{e}");
    }
}
