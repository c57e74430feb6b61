//! Backups: one tar archive holding a consistent copy of the store and the
//! files of the data dir (registry blobs, keys), written while lb serves;
//! and a restore that makes a new data dir from it.
//!
//! The archive, in this order:
//! - `lb-backup.json`: `{"format": 1, "revision": R, "keys": N}`;
//! - `store.jsonl`: one `{"key", "value"}` (value base64) per line, every key
//!   as of revision R, without keys bound to a lease (node liveness, locks:
//!   they would outlive what they stood for);
//! - the data dir's files under their relative paths, without the store
//!   file, the local node's credential (a restored machine joins afresh)
//!   and unfinished registry uploads.
//!
//! Blobs are written once and never changed, so copying them after the
//! store's snapshot is consistent: a blob pushed meanwhile is an extra the
//! restored registry's garbage collection removes.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use lb_store::{Op, Shared, StoreExt};
use serde::{Deserialize, Serialize};

/// The archive format written.
pub const FORMAT: u32 = 1;

/// The store's file in a data dir, kept out of the copied files.
const STORE_FILE: &str = "store.redb";

/// Data dir entries never copied: the store (copied through its
/// snapshot), the local node's credential, and unfinished uploads.
const SKIPPED: &[&str] = &[STORE_FILE, "node", "registry/uploads"];

/// The archive's header.
#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`] when written.
    pub format: u32,
    /// The store revision of the snapshot.
    pub revision: i64,
    /// Keys in the snapshot.
    pub keys: usize,
}

/// What a backup or restore did.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The store revision copied.
    pub revision: i64,
    /// Store keys copied.
    pub keys: usize,
    /// Files copied from or into the data dir.
    pub files: usize,
    /// Bytes of those files.
    pub bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    value: String,
}

/// A backup or restore failure, in words for an operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] lb_store::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The archive is not one this lb restores.
    #[error("not an lb backup: {0}")]
    Invalid(String),
}

fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.as_ref().display().to_string();
    move |source| Error::Io { path, source }
}

/// Writes a backup of `store` (every key under `prefix`) and of `data_dir`'s
/// files (when given) to `out`.
pub async fn write(
    store: &Shared,
    prefix: &str,
    data_dir: Option<PathBuf>,
    out: PathBuf,
) -> Result<Summary, Error> {
    let (kvs, revision) = store.snapshot(prefix).await?;
    tokio::task::spawn_blocking(move || {
        let entries: Vec<Entry> = kvs
            .into_iter()
            .filter(|kv| kv.lease == 0)
            .map(|kv| Entry {
                key: kv.key,
                value: base64::engine::general_purpose::STANDARD.encode(kv.value),
            })
            .collect();
        write_archive(&out, revision, &entries, data_dir.as_deref())
    })
    .await
    .map_err(|e| Error::Invalid(format!("backup task failed: {e}")))?
}

fn write_archive(
    out: &Path,
    revision: i64,
    entries: &[Entry],
    data_dir: Option<&Path>,
) -> Result<Summary, Error> {
    let file = private_file(out)?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    tar.mode(tar::HeaderMode::Deterministic);
    let header = Header {
        format: FORMAT,
        revision,
        keys: entries.len(),
    };
    append(
        &mut tar,
        "lb-backup.json",
        &serde_json::to_vec(&header).unwrap_or_default(),
        out,
    )?;
    let mut lines = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut lines, entry).unwrap_or_default();
        lines.push(b'\n');
    }
    append(&mut tar, "store.jsonl", &lines, out)?;
    let mut summary = Summary {
        revision,
        keys: entries.len(),
        ..Summary::default()
    };
    if let Some(root) = data_dir {
        copy_tree(&mut tar, root, Path::new(""), &mut summary, out)?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io(out))?;
    Ok(summary)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
    out: &Path,
) -> Result<(), Error> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, name, data).map_err(io(out))
}

/// Appends the files under `root/rel`, depth first, skipping [`SKIPPED`].
fn copy_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    summary: &mut Summary,
    out: &Path,
) -> Result<(), Error> {
    let dir = root.join(rel);
    let mut names: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&dir)(e)),
    };
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        if SKIPPED.iter().any(|s| rel == Path::new(s)) || path == out {
            continue;
        }
        // Symlinks are not followed: a data dir holds none of lb's.
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Removed meanwhile (a sweep, a finished upload).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        if meta.is_dir() {
            copy_tree(tar, root, &rel, summary, out)?;
        } else if meta.is_file() {
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path)(e)),
            };
            let mut header = tar::Header::new_gnu();
            header.set_size(meta.len());
            header.set_mode(0o600);
            header.set_cksum();
            tar.append_data(&mut header, &rel, &mut file)
                .map_err(io(&path))?;
            summary.files += 1;
            summary.bytes += meta.len();
        }
    }
    Ok(())
}

/// Creates `path` readable by its owner only: a backup holds every secret.
pub fn private_file(path: &Path) -> Result<File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

/// Makes a new data dir `data_dir` (absent or empty) from the backup
/// `archive`: the store's keys in its embedded store, the files beside it.
pub async fn restore(archive: PathBuf, data_dir: PathBuf) -> Result<Summary, Error> {
    if std::fs::read_dir(&data_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Invalid(format!(
            "{} is not empty: restore makes a new data dir",
            data_dir.display()
        )));
    }
    lb_store::private::create_dir(&data_dir).map_err(io(&data_dir))?;
    let dir = data_dir.clone();
    let (header, entries, mut summary) =
        tokio::task::spawn_blocking(move || extract(&archive, &dir))
            .await
            .map_err(|e| Error::Invalid(format!("restore task failed: {e}")))??;
    let store = lb_store::open(&lb_store::Backend::Embedded(data_dir)).await?;
    let mut ops = Vec::with_capacity(entries.len());
    for entry in entries {
        let value = base64::engine::general_purpose::STANDARD
            .decode(&entry.value)
            .map_err(|e| Error::Invalid(format!("value of {}: {e}", entry.key)))?;
        ops.push(Op::put(entry.key, value));
    }
    summary.keys = ops.len();
    summary.revision = header.revision;
    store.write_all(ops).await?;
    Ok(summary)
}

fn extract(archive: &Path, data_dir: &Path) -> Result<(Header, Vec<Entry>, Summary), Error> {
    let file = File::open(archive).map_err(io(archive))?;
    let mut tar = tar::Archive::new(BufReader::new(file));
    let mut header: Option<Header> = None;
    let mut entries = None;
    let mut summary = Summary::default();
    for item in tar.entries().map_err(io(archive))? {
        let mut item = item.map_err(io(archive))?;
        let rel = item.path().map_err(io(archive))?.into_owned();
        if !item.header().entry_type().is_file() {
            continue;
        }
        match rel.to_str() {
            Some("lb-backup.json") => {
                let mut text = Vec::new();
                item.read_to_end(&mut text).map_err(io(archive))?;
                let h: Header = serde_json::from_slice(&text)
                    .map_err(|e| Error::Invalid(format!("lb-backup.json: {e}")))?;
                if h.format != FORMAT {
                    return Err(Error::Invalid(format!(
                        "format {} (this lb reads format {FORMAT})",
                        h.format
                    )));
                }
                header = Some(h);
            }
            Some("store.jsonl") => {
                let mut list = Vec::new();
                for (n, line) in BufReader::new(&mut item).lines().enumerate() {
                    let line = line.map_err(io(archive))?;
                    if line.is_empty() {
                        continue;
                    }
                    list.push(
                        serde_json::from_str::<Entry>(&line).map_err(|e| {
                            Error::Invalid(format!("store.jsonl line {}: {e}", n + 1))
                        })?,
                    );
                }
                entries = Some(list);
            }
            _ => {
                if header.is_none() {
                    return Err(Error::Invalid("lb-backup.json does not come first".into()));
                }
                // Only plain relative paths: an archive cannot write outside
                // the new data dir.
                if !rel.components().all(|c| matches!(c, Component::Normal(_)))
                    || SKIPPED.iter().any(|s| rel.starts_with(s))
                {
                    return Err(Error::Invalid(format!(
                        "unexpected entry {}",
                        rel.display()
                    )));
                }
                let path = data_dir.join(&rel);
                if let Some(parent) = path.parent() {
                    create_dirs(data_dir, parent)?;
                }
                let mut out = BufWriter::new(private_file(&path)?);
                let bytes = std::io::copy(&mut item, &mut out).map_err(io(&path))?;
                out.flush().map_err(io(&path))?;
                summary.files += 1;
                summary.bytes += bytes;
            }
        }
    }
    let header = header.ok_or_else(|| Error::Invalid("no lb-backup.json".into()))?;
    let entries = entries.ok_or_else(|| Error::Invalid("no store.jsonl".into()))?;
    if entries.len() != header.keys {
        return Err(Error::Invalid(format!(
            "store.jsonl holds {} keys, the header says {}",
            entries.len(),
            header.keys
        )));
    }
    Ok((header, entries, summary))
}

/// Creates `dir` and its parents below `root`, each 0700.
fn create_dirs(root: &Path, dir: &Path) -> Result<(), Error> {
    if dir == root || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(root, parent)?;
    }
    lb_store::private::create_dir(dir).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_store::{Backend, StoreExt};

    #[tokio::test]
    async fn a_backup_restores_keys_and_files_but_not_leases_or_the_node() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let store = lb_store::open(&Backend::Embedded(data.clone()))
            .await
            .unwrap();
        store
            .put("/lb/users/u1", b"{\"name\":\"ann\"}".to_vec())
            .await
            .unwrap();
        store
            .put("/lb/projects/p1", vec![0, 159, 146, 150])
            .await
            .unwrap();
        let lease = store.lease_grant(60).await.unwrap();
        store
            .txn(lb_store::Txn::new().then(Op::Put {
                key: "/lb/alive/n1".into(),
                value: b"1".to_vec(),
                lease,
            }))
            .await
            .unwrap();
        std::fs::create_dir_all(data.join("registry/blobs/sha256")).unwrap();
        std::fs::create_dir_all(data.join("registry/uploads")).unwrap();
        std::fs::create_dir_all(data.join("node")).unwrap();
        std::fs::write(data.join("registry/blobs/sha256/ab"), b"blob").unwrap();
        std::fs::write(data.join("registry/uploads/x"), b"partial").unwrap();
        std::fs::write(data.join("node/node.json"), b"secret").unwrap();
        let archive = tmp.path().join("backup.tar");
        let written = write(&store, "/lb/", Some(data.clone()), archive.clone())
            .await
            .unwrap();
        assert_eq!((written.keys, written.files, written.bytes), (2, 1, 4));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&archive).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(store);

        let fresh = tmp.path().join("fresh");
        let restored = restore(archive.clone(), fresh.clone()).await.unwrap();
        assert_eq!((restored.keys, restored.files), (2, 1));
        assert_eq!(
            std::fs::read(fresh.join("registry/blobs/sha256/ab")).unwrap(),
            b"blob"
        );
        assert!(!fresh.join("node").exists());
        assert!(!fresh.join("registry/uploads/x").exists());
        let store = lb_store::open(&Backend::Embedded(fresh.clone()))
            .await
            .unwrap();
        let (kvs, _) = store.list("/lb/").await.unwrap();
        let keys: Vec<_> = kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/lb/projects/p1", "/lb/users/u1"]);
        assert_eq!(kvs[0].value, vec![0, 159, 146, 150]);
        drop(store);

        // A second restore into a data dir in use is refused.
        let err = restore(archive, fresh).await.unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");
    }

    #[tokio::test]
    async fn an_archive_cannot_write_outside_the_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("evil.tar");
        {
            let mut tar = tar::Builder::new(File::create(&archive).unwrap());
            let header = serde_json::to_vec(&Header {
                format: FORMAT,
                revision: 1,
                keys: 0,
            })
            .unwrap();
            append(&mut tar, "lb-backup.json", &header, &archive).unwrap();
            append(&mut tar, "store.jsonl", b"", &archive).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_size(4);
            h.set_mode(0o600);
            // `append_data` refuses `..`; write the name raw.
            h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
            h.set_cksum();
            tar.append(&h, &b"evil"[..]).unwrap();
            tar.finish().unwrap();
        }
        let err = restore(archive, tmp.path().join("data")).await.unwrap_err();
        assert!(err.to_string().contains("unexpected entry"), "{err}");
        assert!(!tmp.path().join("escape").exists());
    }
}
