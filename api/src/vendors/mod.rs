//! Git vendors (GitHub, GitLab, Bitbucket): their settings, OAuth 2
//! clients, and the calls lb makes to their REST APIs (GitHub v3, GitLab
//! v4, Bitbucket 2.0). Webhook signatures are in [`signature`], push
//! payloads in [`push`], the controller that creates and removes webhooks
//! and polls plain git URLs in [`controller`].

pub mod client;
pub mod controller;
pub mod push;
pub mod signature;

use std::time::Duration;

use lb_model::Vendor;

/// One vendor's OAuth application and addresses.
#[derive(Clone)]
pub struct VendorConfig {
    /// The OAuth application's client id.
    pub client_id: String,
    /// Its client secret (never logged, never returned).
    pub client_secret: String,
    /// The web address users sign in at (`https://github.com`, a GitHub
    /// Enterprise or self-hosted GitLab address).
    pub web_url: String,
    /// The REST API's base (`https://api.github.com`,
    /// `https://ghe.example.com/api/v3`, `https://gitlab.example.com/api/v4`,
    /// `https://api.bitbucket.org/2.0`).
    pub api_url: String,
}

impl std::fmt::Debug for VendorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<hidden>")
            .field("web_url", &self.web_url)
            .field("api_url", &self.api_url)
            .finish()
    }
}

impl VendorConfig {
    /// A vendor's application with its public addresses (`web_url` or
    /// `api_url` given override them; a web URL alone implies the API URL
    /// of a GitHub Enterprise or self-hosted GitLab).
    pub fn new(
        vendor: Vendor,
        client_id: String,
        client_secret: String,
        web_url: Option<String>,
        api_url: Option<String>,
    ) -> Self {
        let web = web_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| {
                match vendor {
                    Vendor::Github => "https://github.com",
                    Vendor::Gitlab => "https://gitlab.com",
                    Vendor::Bitbucket => "https://bitbucket.org",
                }
                .to_owned()
            });
        let api = api_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| match vendor {
                Vendor::Github if web == "https://github.com" => "https://api.github.com".into(),
                Vendor::Github => format!("{web}/api/v3"),
                Vendor::Gitlab => format!("{web}/api/v4"),
                Vendor::Bitbucket => "https://api.bitbucket.org/2.0".into(),
            });
        Self {
            client_id,
            client_secret,
            web_url: web,
            api_url: api,
        }
    }

    /// The authorization endpoint.
    pub fn auth_url(&self, vendor: Vendor) -> String {
        match vendor {
            Vendor::Github => format!("{}/login/oauth/authorize", self.web_url),
            Vendor::Gitlab => format!("{}/oauth/authorize", self.web_url),
            Vendor::Bitbucket => format!("{}/site/oauth2/authorize", self.web_url),
        }
    }

    /// The token endpoint.
    pub fn token_url(&self, vendor: Vendor) -> String {
        match vendor {
            Vendor::Github => format!("{}/login/oauth/access_token", self.web_url),
            Vendor::Gitlab => format!("{}/oauth/token", self.web_url),
            Vendor::Bitbucket => format!("{}/site/oauth2/access_token", self.web_url),
        }
    }

    /// The scopes lb asks for: read repositories (private ones too) and
    /// manage their webhooks. Bitbucket takes the scopes set on the
    /// consumer instead.
    pub fn scopes(vendor: Vendor) -> &'static [&'static str] {
        match vendor {
            Vendor::Github => &["repo", "admin:repo_hook", "read:user"],
            Vendor::Gitlab => &["api", "read_user"],
            Vendor::Bitbucket => &[],
        }
    }
}

/// Vendor settings of the API.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The address users and vendors reach the API at (OAuth callbacks and
    /// webhook URLs are built from it). Default: `http://<listen address>`.
    pub public_url: Option<String>,
    /// GitHub's application, if configured.
    pub github: Option<VendorConfig>,
    /// GitLab's application, if configured.
    pub gitlab: Option<VendorConfig>,
    /// Bitbucket's application, if configured.
    pub bitbucket: Option<VendorConfig>,
    /// How often plain git URLs with `autodeploy` are polled (`None`: never).
    pub poll_interval: Option<Duration>,
}

impl Settings {
    /// A vendor's application, if configured.
    pub fn get(&self, vendor: Vendor) -> Option<&VendorConfig> {
        match vendor {
            Vendor::Github => self.github.as_ref(),
            Vendor::Gitlab => self.gitlab.as_ref(),
            Vendor::Bitbucket => self.bitbucket.as_ref(),
        }
    }

    /// The public base URL, without a trailing slash.
    pub fn base(&self) -> String {
        self.public_url
            .as_deref()
            .unwrap_or("http://127.0.0.1:2967")
            .trim_end_matches('/')
            .to_owned()
    }

    /// The webhook URL of a service.
    pub fn hook_url(&self, vendor: Option<Vendor>, sid: &str) -> String {
        let v = vendor.map_or("github", Vendor::as_str);
        format!("{}/api/v1/hooks/{v}/{sid}", self.base())
    }

    /// The OAuth redirect URI of a vendor.
    pub fn callback_url(&self, vendor: Vendor) -> String {
        format!("{}/api/v1/vendors/{vendor}/callback", self.base())
    }
}
