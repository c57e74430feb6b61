//! Files only lb's own user may read: everything under the data dir (the
//! embedded store with its signing keys, registry blobs and uploads, the
//! node's credential) is 0600, every directory 0700. New directories are
//! made so; at start the whole tree is checked and anything wider is
//! narrowed with a warning naming it.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of a file under the data dir.
pub const FILE_MODE: u32 = 0o600;
/// The mode of a directory under the data dir.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents with mode 0700 (an existing
/// directory is left as it is; [`secure_tree`] narrows it).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Narrows every directory under `root` (itself included) to 0700 and every
/// file to 0600 where group or others had any access, logging a warning for
/// each; returns what it changed. Symbolic links are not followed.
pub fn secure_tree(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut fixed = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Removed meanwhile (an upload finishing): nothing to protect.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let mode = meta.permissions().mode() & 0o777;
        let wanted = if meta.is_dir() {
            DIR_MODE
        } else if meta.is_file() {
            FILE_MODE
        } else {
            continue;
        };
        if mode & 0o077 != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(wanted)).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot narrow {}: {e}", path.display()))
            })?;
            tracing::warn!(
                "{} was mode {mode:04o} (readable by others): now {wanted:04o}",
                path.display()
            );
            fixed.push(path.clone());
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn wider_modes_are_narrowed_and_private_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        create_dir(&root.join("registry/blobs")).unwrap();
        assert_eq!(mode(&root), DIR_MODE);
        assert_eq!(mode(&root.join("registry/blobs")), DIR_MODE);
        let file = root.join("registry/blobs/b");
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(root.join("registry"), fs::Permissions::from_mode(0o755)).unwrap();
        let owner_only = root.join("key");
        fs::write(&owner_only, "k").unwrap();
        fs::set_permissions(&owner_only, fs::Permissions::from_mode(0o400)).unwrap();
        let mut fixed = secure_tree(&root).unwrap();
        fixed.sort();
        assert_eq!(fixed, vec![root.join("registry"), file.clone()]);
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(mode(&root.join("registry")), DIR_MODE);
        // Narrower than the target is left alone.
        assert_eq!(mode(&owner_only), 0o400);
        assert!(secure_tree(&root).unwrap().is_empty());
    }
}
