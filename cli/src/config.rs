//! `~/.config/lbc/config.toml` (or `$XDG_CONFIG_HOME/lbc/config.toml`):
//! named contexts, each an API URL, a token and a default project, and the
//! current context. Written with mode 0600: it holds tokens.
//!
//! ```toml
//! current-context = "local"
//!
//! [contexts.local]
//! api = "http://127.0.0.1:2967"
//! token = "eyJ..."
//! project = "demo"
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The name a context gets when the user names none.
pub const DEFAULT_CONTEXT: &str = "default";

/// One context: where the API is and who we are there.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Base URL of the API, e.g. `http://127.0.0.1:2967`.
    pub api: String,
    /// Access or API token, once logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The project a bare `SERVICE` belongs to (`lbc project use`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The context used when `--context` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Contexts by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// The config file's path.
pub fn path() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => {
                return Err(Error::usage(
                    "cannot find the config file: neither XDG_CONFIG_HOME nor HOME is set",
                ))
            }
        },
    };
    Ok(base.join("lbc").join("config.toml"))
}

impl Config {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::usage(format!("cannot read {}: {e}", path.display()))),
        };
        toml::from_str(&text).map_err(|e| {
            let first = e.message().lines().next().unwrap_or("invalid").to_owned();
            Error::usage(format!(
                "{} is not a valid lbc config: {first}",
                path.display()
            ))
        })
    }

    /// Writes the file atomically (a temp file renamed over it), mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let fail =
            |e: std::io::Error| Error::failed(format!("cannot write {}: {e}", path.display()));
        std::fs::create_dir_all(dir).map_err(fail)?;
        let text = toml::to_string_pretty(self)
            .map_err(|e| Error::failed(format!("cannot encode the config: {e}")))?;
        let tmp = dir.join(".config.toml.tmp");
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp).map_err(fail)?;
            // A file left by an older version may have wider bits.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(fail)?;
            }
            file.write_all(text.as_bytes()).map_err(fail)?;
            file.sync_all().map_err(fail)?;
        }
        std::fs::rename(&tmp, path).map_err(fail)
    }

    /// The context of this name, or a usage error listing the known ones.
    pub fn context(&self, name: &str) -> Result<&Context> {
        self.contexts.get(name).ok_or_else(|| unknown(self, name))
    }

    /// Mutable access to a context.
    pub fn context_mut(&mut self, name: &str) -> Result<&mut Context> {
        if !self.contexts.contains_key(name) {
            return Err(unknown(self, name));
        }
        Ok(self.contexts.get_mut(name).expect("checked above"))
    }
}

fn unknown(config: &Config, name: &str) -> Error {
    let known: Vec<&str> = config.contexts.keys().map(String::as_str).collect();
    let hint = if known.is_empty() {
        "none is defined: `lbc context add NAME --api URL` or `lbc login --api URL`".to_owned()
    } else {
        format!("known: {}", known.join(", "))
    };
    Error::new(
        crate::error::Kind::NotFound,
        format!("context {name:?} not found ({hint})"),
    )
}

/// Checks a context name: what a shell and a TOML key take without quoting trouble.
pub fn check_context_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "context name {name:?} is invalid: use 1 to 63 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Normalises an API URL: an http(s) URL without a trailing `/` or `/api/v1`.
pub fn normalize_api(url: &str) -> Result<String> {
    let url = url.trim();
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::usage(format!("API URL {url:?} is invalid: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(Error::usage(format!(
            "API URL {url:?} is invalid: it must be http:// or https:// with a host"
        )));
    }
    let mut out = url.trim_end_matches('/').to_owned();
    if let Some(stripped) = out.strip_suffix("/api/v1") {
        out = stripped.to_owned();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lbc").join("config.toml");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        let mut config = Config {
            current_context: Some("a".into()),
            ..Default::default()
        };
        config.contexts.insert(
            "a".into(),
            Context {
                api: "http://x:1".into(),
                token: Some("t".into()),
                project: None,
            },
        );
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_file_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "contexts = 3\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not a valid lbc config"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn api_urls() {
        assert_eq!(normalize_api("http://h:1/api/v1/").unwrap(), "http://h:1");
        assert_eq!(normalize_api("https://h").unwrap(), "https://h");
        assert!(normalize_api("ftp://h").is_err());
        assert!(normalize_api("h:1").is_err());
    }
}
