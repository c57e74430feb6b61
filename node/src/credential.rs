//! The node credential: obtained once by exchanging a join token at
//! `POST /api/v1/nodes/join`, then kept in `<data dir>/node.json` (mode 0600).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Config, Error, Result};

/// What the node keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    /// The node id.
    pub id: String,
    /// The node's name.
    pub name: String,
    /// The credential (`lbn_...`), sent as a bearer token.
    pub credential: String,
}

const FILE: &str = "node.json";

/// The node id of the credential kept in `data_dir`, if it holds one.
pub fn stored_id(data_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(data_dir.join(FILE)).ok()?;
    serde_json::from_slice::<Credential>(&bytes)
        .ok()
        .map(|c| c.id)
}

/// Loads the credential from the data dir, or joins with the join token and
/// saves it.
pub async fn load_or_join(config: &Config) -> Result<Credential> {
    let path = config.data_dir.join(FILE);
    let file_err = |source| Error::CredentialFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            return serde_json::from_slice(&bytes)
                .map_err(|e| file_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_err(e)),
    }
    let Some(token) = &config.join_token else {
        return Err(Error::NoCredential(config.data_dir.display().to_string()));
    };
    let name = config.name.clone().unwrap_or_else(crate::host::hostname);
    let labels: std::collections::BTreeMap<_, _> = config.labels.iter().cloned().collect();
    let body = serde_json::json!({"token": token, "name": name, "labels": labels});
    // Each API instance named in turn: one out of reach (or without its
    // store: 5xx) passes the join to the next.
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    let mut joined = None;
    for api in config.api_urls() {
        let url = format!("{}/api/v1/nodes/join", api.trim_end_matches('/'));
        let resp = match client.post(&url).json(&body).send().await {
            Ok(resp) => resp,
            Err(e) => {
                failures.push(format!("cannot reach the API at {api}: {e}"));
                continue;
            }
        };
        let status = resp.status();
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        let message = || {
            let message = answer["error"]["message"]
                .as_str()
                .unwrap_or("no reason given");
            format!("{api}: {status}: {message}")
        };
        if status.is_server_error() {
            failures.push(message());
            continue;
        }
        if !status.is_success() {
            return Err(Error::Join(message()));
        }
        joined = Some(answer);
        break;
    }
    let Some(answer) = joined else {
        return Err(Error::Join(if failures.is_empty() {
            "no API URL given".into()
        } else {
            failures.join("; ")
        }));
    };
    let credential: Credential = serde_json::from_value(answer)
        .map_err(|e| Error::Join(format!("unexpected answer: {e}")))?;
    save(&config.data_dir, &credential).map_err(file_err)?;
    tracing::info!(node = %credential.id, name = %credential.name, "joined the cluster");
    Ok(credential)
}

fn save(dir: &Path, credential: &Credential) -> std::io::Result<()> {
    // The credential is the node's secret: its directory is lb's alone.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)?;
    let bytes = serde_json::to_vec_pretty(credential).map_err(std::io::Error::other)?;
    write_private(&dir.join(FILE), &bytes)
}

/// Writes `bytes` to `path` as a file only lb's user reads (0600), through
/// a temporary file beside it and a rename: a reader sees the old file or
/// the new one, never a part, and never a moment it is readable by others.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // A temporary file left from before keeps its old mode.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_written_private_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kept.json");
        let stale = dir.path().join("kept.json.tmp");
        std::fs::write(&stale, "old").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_private(&path, b"{}").unwrap();
        assert_eq!(
            (mode(&path), std::fs::read(&path).unwrap()),
            (0o600, b"{}".to_vec())
        );
        assert!(!stale.exists());
        write_private(&path, b"[1]").unwrap();
        assert_eq!(
            (mode(&path), std::fs::read(&path).unwrap()),
            (0o600, b"[1]".to_vec())
        );
    }
}
