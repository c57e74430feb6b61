//! Git vendors (GitHub, GitLab, Bitbucket): their settings, OAuth 2
//! clients, and the calls lb makes to their REST APIs (GitHub v3, GitLab
//! v4, Bitbucket 2.0). Webhook signatures are in [`signature`], push
//! payloads in [`push`], the controller that creates and removes webhooks
//! and polls plain git URLs in [`controller`].

pub mod client;
pub mod controller;
pub mod push;
pub mod signature;

use lb_model::Vendor;

pub use crate::config::{VendorConfig, VendorSettings as Settings};

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
