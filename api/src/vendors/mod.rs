//! Git vendors (GitHub, GitLab, Bitbucket): what each does its own way is
//! one [`GitVendor`] implementation per file ([`github`], [`gitlab`],
//! [`bitbucket`]), found with [`vendor`]; the shared code calls it. The
//! OAuth 2 clients and REST calls are in [`client`], webhook signatures in
//! [`signature`], push payloads in [`push`], the controller that creates
//! and removes webhooks and polls plain git URLs in [`controller`].

pub mod bitbucket;
pub mod client;
pub mod controller;
pub mod github;
pub mod gitlab;
pub mod push;
pub mod signature;

use lb_model::Vendor;
use reqwest::header::HeaderMap;
use serde_json::Value;

use client::{Branch, Page, Repo};
use push::Pushes;

pub use crate::config::{VendorConfig, VendorSettings as Settings};

/// What one vendor does its own way: its addresses and OAuth endpoints,
/// the REST paths and bodies lb sends and how it reads the answers, its
/// webhook headers and signature, and its push payloads. The HTTP calls
/// themselves are made by [`client::Api`].
pub trait GitVendor: Send + Sync {
    /// The public web address (`https://github.com`).
    fn default_web_url(&self) -> &'static str;
    /// The REST API address for a web address.
    fn default_api_url(&self, web: &str) -> String;
    /// The OAuth authorization endpoint's path under the web address.
    fn auth_path(&self) -> &'static str;
    /// The OAuth token endpoint's path under the web address.
    fn token_path(&self) -> &'static str;
    /// The scopes lb asks for.
    fn scopes(&self) -> &'static [&'static str];
    /// Headers sent with every REST call besides the shared ones.
    fn api_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// The account's id and login in a `GET /user` answer.
    fn account(&self, user: &Value) -> (Option<String>, Option<String>);
    /// The path of one page of the account's repositories.
    fn repos_path(&self, page: u32, per_page: u32) -> String;
    /// One page of repositories from the answer to [`Self::repos_path`].
    fn repos_page(&self, answer: &Value, headers: &HeaderMap, page: u32) -> Page<Repo>;
    /// The path of one page of a repository's branches.
    fn branches_path(&self, repo: &str, page: u32, per_page: u32) -> String;
    /// One page of branches from the answer to [`Self::branches_path`].
    fn branches_page(&self, answer: &Value, headers: &HeaderMap, page: u32) -> Page<Branch>;
    /// The path and body that create a push webhook on `repo`.
    fn create_hook(&self, repo: &str, url: &str, secret: &str) -> (String, Value);
    /// The path of a webhook (to delete it).
    fn hook_path(&self, repo: &str, id: &str) -> String;

    /// The header carrying a delivery's signature or token.
    fn signature_header(&self) -> &'static str;
    /// Whether a signature header's value is right for `body`, compared in
    /// constant time.
    fn signature_matches(&self, value: &[u8], body: &[u8], secret: &str) -> bool;
    /// The headers that may carry the delivery id, in order.
    fn delivery_headers(&self) -> &'static [&'static str];
    /// The delivery id header as the vendor documents it (for messages).
    fn delivery_header(&self) -> &'static str;
    /// The header naming the event.
    fn event_header(&self) -> &'static str;
    /// The event name normalised: `push`, `ping`, or the vendor's own.
    fn event(&self, raw: String) -> String;

    /// Parses a push payload; `None` when it is not one.
    fn parse_push(&self, body: &Value) -> Option<Pushes>;
}

/// The implementation of `vendor`.
pub fn vendor(vendor: Vendor) -> &'static dyn GitVendor {
    match vendor {
        Vendor::Github => &github::Github,
        Vendor::Gitlab => &gitlab::Gitlab,
        Vendor::Bitbucket => &bitbucket::Bitbucket,
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
        let v = self::vendor(vendor);
        let web = web_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| v.default_web_url().to_owned());
        let api = api_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| v.default_api_url(&web));
        Self {
            client_id,
            client_secret,
            web_url: web,
            api_url: api,
        }
    }

    /// The authorization endpoint.
    pub fn auth_url(&self, vendor: Vendor) -> String {
        format!("{}{}", self.web_url, self::vendor(vendor).auth_path())
    }

    /// The token endpoint.
    pub fn token_url(&self, vendor: Vendor) -> String {
        format!("{}{}", self.web_url, self::vendor(vendor).token_path())
    }

    /// The scopes lb asks for: read repositories (private ones too) and
    /// manage their webhooks. Bitbucket takes the scopes set on the
    /// consumer instead.
    pub fn scopes(vendor: Vendor) -> &'static [&'static str] {
        self::vendor(vendor).scopes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_addresses() {
        let c = |v, web: Option<&str>| {
            VendorConfig::new(v, "i".into(), "s".into(), web.map(Into::into), None)
        };
        let gh = c(Vendor::Github, None);
        assert_eq!(gh.api_url, "https://api.github.com");
        assert_eq!(
            gh.auth_url(Vendor::Github),
            "https://github.com/login/oauth/authorize"
        );
        let ghe = c(Vendor::Github, Some("https://ghe.example/"));
        assert_eq!(ghe.api_url, "https://ghe.example/api/v3");
        let gl = c(Vendor::Gitlab, Some("https://git.example"));
        assert_eq!(gl.api_url, "https://git.example/api/v4");
        assert_eq!(
            gl.token_url(Vendor::Gitlab),
            "https://git.example/oauth/token"
        );
        let bb = c(Vendor::Bitbucket, None);
        assert_eq!(bb.api_url, "https://api.bitbucket.org/2.0");
        assert_eq!(
            bb.auth_url(Vendor::Bitbucket),
            "https://bitbucket.org/site/oauth2/authorize"
        );
        assert!(VendorConfig::scopes(Vendor::Bitbucket).is_empty());
    }
}
