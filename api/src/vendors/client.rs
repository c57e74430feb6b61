//! Calls to the vendors: the OAuth 2 code exchange and refresh (the
//! `oauth2` crate), and the REST calls lb makes, with the paths, bodies and
//! pagination of each vendor's [`super::GitVendor`]. Tokens go in the `Authorization` header only and are never
//! logged; errors name the endpoint and status, never the token.

use lb_model::Vendor;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, RedirectUrl, RefreshToken,
    Scope, TokenResponse, TokenUrl,
};
use serde::Serialize;
use serde_json::Value;

use super::{vendor, VendorConfig};

/// A failed vendor call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The vendor could not be reached or answered garbage.
    #[error("{vendor} is unreachable or answered badly: {message}")]
    Unavailable {
        /// The vendor.
        vendor: Vendor,
        /// What happened.
        message: String,
    },
    /// The vendor refused (the token was revoked, no access to the
    /// repository, no such repository).
    #[error("{vendor} refused {what}: HTTP {status}{detail}")]
    Refused {
        /// The vendor.
        vendor: Vendor,
        /// The call.
        what: String,
        /// Its status.
        status: u16,
        /// The vendor's message, if any.
        detail: String,
    },
    /// The authorization code was refused.
    #[error("{vendor} refused the authorization code: {0}", vendor = .1)]
    Exchange(String, Vendor),
}

/// A result of a vendor call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tokens from an exchange or refresh.
#[derive(Debug)]
pub struct Tokens {
    /// The access token.
    pub access: String,
    /// The refresh token, if the vendor gave one.
    pub refresh: Option<String>,
    /// Seconds until the access token expires, if it does.
    pub expires_in: Option<u64>,
    /// Scopes granted, if the vendor said.
    pub scopes: Vec<String>,
}

/// The vendor's account.
#[derive(Debug, Clone)]
pub struct Account {
    /// Its id at the vendor.
    pub id: String,
    /// Its login name.
    pub login: String,
}

/// A repository the user may reach.
#[derive(Debug, Clone, Serialize)]
pub struct Repo {
    /// `owner/name` (GitLab: the full namespace path).
    pub full_name: String,
    /// Whether it is private.
    pub private: bool,
    /// HTTPS clone URL.
    pub clone_url: String,
    /// Default branch.
    pub default_branch: Option<String>,
}

/// A branch with its head commit.
#[derive(Debug, Clone, Serialize)]
pub struct Branch {
    /// Name.
    pub name: String,
    /// Head commit.
    pub commit: String,
}

/// One page of a list, and whether there is another.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The next page's number, if there is one.
    pub next_page: Option<u32>,
}

fn oauth_client(
    vendor: Vendor,
    config: &VendorConfig,
    redirect: &str,
) -> Result<
    BasicClient<
        oauth2::EndpointSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    >,
> {
    let bad = |e: oauth2::url::ParseError| Error::Unavailable {
        vendor,
        message: format!("configured URL: {e}"),
    };
    Ok(BasicClient::new(ClientId::new(config.client_id.clone()))
        .set_client_secret(ClientSecret::new(config.client_secret.clone()))
        .set_auth_uri(AuthUrl::new(config.auth_url(vendor)).map_err(bad)?)
        .set_token_uri(TokenUrl::new(config.token_url(vendor)).map_err(bad)?)
        .set_redirect_uri(RedirectUrl::new(redirect.to_owned()).map_err(bad)?))
}

/// The vendor's authorization URL for a given `state`.
pub fn authorize_url(
    vendor: Vendor,
    config: &VendorConfig,
    redirect: &str,
    state: String,
) -> Result<String> {
    let client = oauth_client(vendor, config, redirect)?;
    let mut request = client.authorize_url(move || CsrfToken::new(state));
    for scope in VendorConfig::scopes(vendor) {
        request = request.add_scope(Scope::new((*scope).to_owned()));
    }
    let (url, _) = request.url();
    Ok(url.to_string())
}

fn tokens_of(response: &oauth2::basic::BasicTokenResponse) -> Tokens {
    Tokens {
        access: response.access_token().secret().clone(),
        refresh: response.refresh_token().map(|r| r.secret().clone()),
        expires_in: response.expires_in().map(|d| d.as_secs()),
        scopes: response
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
    }
}

/// Exchanges an authorization code for tokens.
pub async fn exchange(
    http: &reqwest::Client,
    vendor: Vendor,
    config: &VendorConfig,
    redirect: &str,
    code: String,
) -> Result<Tokens> {
    let client = oauth_client(vendor, config, redirect)?;
    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .request_async(http)
        .await
        .map_err(|e| Error::Exchange(describe(&e), vendor))?;
    Ok(tokens_of(&response))
}

/// Trades a refresh token for new tokens.
pub async fn refresh(
    http: &reqwest::Client,
    vendor: Vendor,
    config: &VendorConfig,
    redirect: &str,
    refresh_token: String,
) -> Result<Tokens> {
    let client = oauth_client(vendor, config, redirect)?;
    let response = client
        .exchange_refresh_token(&RefreshToken::new(refresh_token))
        .request_async(http)
        .await
        .map_err(|e| Error::Exchange(describe(&e), vendor))?;
    Ok(tokens_of(&response))
}

/// An OAuth error without anything secret in it.
fn describe<RE: std::error::Error + 'static>(
    err: &oauth2::RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
) -> String {
    match err {
        oauth2::RequestTokenError::ServerResponse(r) => r.error().to_string(),
        oauth2::RequestTokenError::Request(_) => "the token endpoint cannot be reached".into(),
        oauth2::RequestTokenError::Parse(_, _) => "the token endpoint answered garbage".into(),
        oauth2::RequestTokenError::Other(m) => m.clone(),
    }
}

/// A REST client for one vendor and one token.
pub struct Api<'a> {
    http: &'a reqwest::Client,
    vendor: Vendor,
    base: &'a str,
    token: &'a str,
}

impl<'a> Api<'a> {
    /// A client of `config`'s API with `token`.
    pub fn new(
        http: &'a reqwest::Client,
        vendor: Vendor,
        config: &'a VendorConfig,
        token: &'a str,
    ) -> Self {
        Self {
            http,
            vendor,
            base: &config.api_url,
            token,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(Value, reqwest::header::HeaderMap)> {
        let what = format!("{method} {path}");
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.token)
            .header("accept", "application/json")
            .header("user-agent", "lb");
        for (name, value) in vendor(self.vendor).api_headers() {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let unavailable = |e: reqwest::Error| Error::Unavailable {
            vendor: self.vendor,
            message: format!("{what}: {}", e.without_url()),
        };
        let response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(unavailable)?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .or_else(|| v.get("error").and_then(|e| e.get("message")))
                        .or_else(|| v.get("error"))
                        .and_then(Value::as_str)
                        .map(|m| format!(": {}", m.chars().take(200).collect::<String>()))
                })
                .unwrap_or_default();
            return Err(Error::Refused {
                vendor: self.vendor,
                what,
                status: status.as_u16(),
                detail,
            });
        }
        if bytes.is_empty() {
            return Ok((Value::Null, headers));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| Error::Unavailable {
            vendor: self.vendor,
            message: format!("{what}: not JSON: {e}"),
        })?;
        Ok((value, headers))
    }

    async fn get(&self, path: &str) -> Result<(Value, reqwest::header::HeaderMap)> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// The token's account: `GET /user` on every vendor.
    pub async fn account(&self) -> Result<Account> {
        let (v, _) = self.get("/user").await?;
        match vendor(self.vendor).account(&v) {
            (Some(id), Some(login)) => Ok(Account { id, login }),
            _ => Err(Error::Unavailable {
                vendor: self.vendor,
                message: "GET /user: no id or login in the answer".into(),
            }),
        }
    }

    /// One page of the repositories the account may reach.
    pub async fn repos(&self, page: u32, per_page: u32) -> Result<Page<Repo>> {
        let v = vendor(self.vendor);
        let (answer, headers) = self.get(&v.repos_path(page, per_page)).await?;
        Ok(v.repos_page(&answer, &headers, page))
    }

    /// One page of a repository's branches.
    pub async fn branches(&self, repo: &str, page: u32, per_page: u32) -> Result<Page<Branch>> {
        let v = vendor(self.vendor);
        let (answer, headers) = self.get(&v.branches_path(repo, page, per_page)).await?;
        Ok(v.branches_page(&answer, &headers, page))
    }

    /// Creates a push webhook; answers the hook's id.
    pub async fn create_hook(&self, repo: &str, url: &str, secret: &str) -> Result<String> {
        let (path, body) = vendor(self.vendor).create_hook(repo, url, secret);
        let (v, _) = self.call(reqwest::Method::POST, &path, Some(body)).await?;
        let id = match &v["id"] {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) => Some(s.clone()),
            _ => v["uuid"].as_str().map(str::to_owned),
        };
        id.ok_or_else(|| Error::Unavailable {
            vendor: self.vendor,
            message: format!("POST {path}: no hook id in the answer"),
        })
    }

    /// Deletes a webhook lb created; one already gone is fine.
    pub async fn delete_hook(&self, repo: &str, id: &str) -> Result<()> {
        let path = vendor(self.vendor).hook_path(repo, id);
        match self.call(reqwest::Method::DELETE, &path, None).await {
            Ok(_) => Ok(()),
            Err(Error::Refused { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A JSON string.
pub(super) fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// A JSON string or number, as a string (ids).
pub(super) fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON array's items (none when it is not one).
pub(super) fn array(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Whether a `Link` header has `rel="next"` (GitHub, GitLab keyset).
pub(super) fn link_next(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get_all("link")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .any(|h| h.contains("rel=\"next\""))
}

/// A path (GitLab's project path, Bitbucket's hook uuid) as one
/// URL-encoded segment.
pub(super) fn encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether a repository name is safe to put in a vendor path.
pub fn valid_repo(repo: &str) -> bool {
    let parts: Vec<&str> = repo.split('/').collect();
    parts.len() >= 2
        && repo.len() <= 255
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_and_paths() {
        assert!(valid_repo("o/r"));
        assert!(valid_repo("group/sub/r.js"));
        assert!(!valid_repo("o"));
        assert!(!valid_repo("o/../x"));
        assert!(!valid_repo("o/r?x=1"));
        assert_eq!(encode_path("g/s/r"), "g%2Fs%2Fr");
    }
}
