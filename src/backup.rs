//! `lb backup` and `lb restore`.
//!
//! A running `lb up` holds its embedded store's file, so an online backup
//! asks it (`GET /api/v1/backup`, as an admin); `--direct` reads the store
//! itself — etcd at any time, the embedded store while lb is stopped — and
//! copies the data dir's files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use lb_store::Backend;

/// Where a backup comes from.
pub enum Source {
    /// A running lb's API, with an admin's token or password.
    Api {
        /// The API's base URL, e.g. `http://127.0.0.1:2967`.
        url: String,
        /// An admin's token (`LB_TOKEN`).
        token: Option<String>,
        /// An admin's name and password (`LB_PASSWORD`).
        login: Option<(String, String)>,
    },
    /// The store and data dir themselves.
    Direct {
        /// The store.
        backend: Backend,
        /// What one transaction may carry.
        limits: lb_store::Limits,
        /// The data dir whose files are copied.
        data_dir: PathBuf,
    },
}

/// Writes a backup of `source` to `to`.
pub async fn backup(source: Source, to: &Path) -> anyhow::Result<()> {
    match source {
        Source::Api { url, token, login } => {
            let client = reqwest::Client::new();
            let base = format!("{}/api/v1", url.trim_end_matches('/'));
            let token = match (token, login) {
                (Some(token), _) => token,
                (None, Some((user, password))) => {
                    login_token(&client, &base, &user, &password).await?
                }
                (None, None) => bail!("give an admin's token (LB_TOKEN) or password (LB_PASSWORD)"),
            };
            let mut resp = client
                .get(format!("{base}/backup"))
                .bearer_auth(token)
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            if !resp.status().is_success() {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                bail!("{url} answered {status}: {body}");
            }
            let revision = resp
                .headers()
                .get("x-lb-revision")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned();
            let mut file = lb_api::backup::private_file(to)?;
            let mut bytes = 0u64;
            use std::io::Write;
            while let Some(chunk) = resp.chunk().await.context("backup download broke off")? {
                file.write_all(&chunk)
                    .with_context(|| format!("cannot write {}", to.display()))?;
                bytes += chunk.len() as u64;
            }
            file.sync_all()?;
            println!(
                "backup of {url} at revision {revision}: {} ({bytes} bytes)",
                to.display()
            );
        }
        Source::Direct {
            backend,
            limits,
            data_dir,
        } => {
            let store = lb_store::open_with(&backend, limits).await.map_err(|e| {
                anyhow::anyhow!("{e} (a running lb up holds its store: use --api instead)")
            })?;
            let summary = lb_api::backup::write(
                &store,
                &lb_model::keys::Keys::default().all(),
                Some(data_dir),
                to.to_owned(),
            )
            .await?;
            println!(
                "backup at revision {}: {} keys, {} files ({} bytes) in {}",
                summary.revision,
                summary.keys,
                summary.files,
                summary.bytes,
                to.display()
            );
        }
    }
    Ok(())
}

/// Makes the new data dir `data_dir` from the backup `from`.
pub async fn restore(from: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let summary = lb_api::backup::restore(from.to_owned(), data_dir.to_owned()).await?;
    println!(
        "restored revision {}: {} keys, {} files ({} bytes) into {}",
        summary.revision,
        summary.keys,
        summary.files,
        summary.bytes,
        data_dir.display()
    );
    Ok(())
}

async fn login_token(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<String> {
    let resp = client
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .context("cannot reach the API to log in")?;
    if !resp.status().is_success() {
        bail!("login as {user} failed: {}", resp.status());
    }
    let body: serde_json::Value = resp.json().await?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .context("the login answer has no token")
}
