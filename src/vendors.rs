//! Flags of the git vendors (`lb up`, `lb api`): each vendor's OAuth
//! application and addresses, the public URL and the polling interval.

use anyhow::bail;
use clap::Args;
use lb_api::vendors::{Settings, VendorConfig};
use lb_model::Vendor;

/// Vendor flags. A vendor is enabled by its client id and secret (prefer
/// the environment variables for secrets: flags show in `ps`).
#[derive(Args, Debug)]
pub struct VendorArgs {
    /// The URL users and git vendors reach the API at (OAuth callbacks,
    /// webhook URLs). Default: http://<listen address>.
    #[arg(long, env = "LB_PUBLIC_URL")]
    public_url: Option<String>,
    /// Check the branch head of autodeploy services with plain git URLs
    /// (no vendor) this often, and build on change (e.g. 5m). Off when unset.
    #[arg(long, env = "LB_POLL_INTERVAL", value_parser = crate::cli::parse_duration)]
    poll_interval: Option<std::time::Duration>,
    /// GitHub OAuth app client id.
    #[arg(long, env = "LB_GITHUB_CLIENT_ID")]
    github_client_id: Option<String>,
    /// GitHub OAuth app client secret.
    #[arg(long, env = "LB_GITHUB_CLIENT_SECRET", hide_env_values = true)]
    github_client_secret: Option<String>,
    /// GitHub's web address (GitHub Enterprise: https://ghe.example.com).
    #[arg(long, env = "LB_GITHUB_URL")]
    github_url: Option<String>,
    /// GitHub's API address (default: api.github.com, or <url>/api/v3).
    #[arg(long, env = "LB_GITHUB_API_URL")]
    github_api_url: Option<String>,
    /// GitLab application id.
    #[arg(long, env = "LB_GITLAB_CLIENT_ID")]
    gitlab_client_id: Option<String>,
    /// GitLab application secret.
    #[arg(long, env = "LB_GITLAB_CLIENT_SECRET", hide_env_values = true)]
    gitlab_client_secret: Option<String>,
    /// GitLab's web address (self-hosted: https://gitlab.example.com).
    #[arg(long, env = "LB_GITLAB_URL")]
    gitlab_url: Option<String>,
    /// GitLab's API address (default: <url>/api/v4).
    #[arg(long, env = "LB_GITLAB_API_URL")]
    gitlab_api_url: Option<String>,
    /// Bitbucket OAuth consumer key.
    #[arg(long, env = "LB_BITBUCKET_CLIENT_ID")]
    bitbucket_client_id: Option<String>,
    /// Bitbucket OAuth consumer secret.
    #[arg(long, env = "LB_BITBUCKET_CLIENT_SECRET", hide_env_values = true)]
    bitbucket_client_secret: Option<String>,
    /// Bitbucket's web address (default: https://bitbucket.org).
    #[arg(long, env = "LB_BITBUCKET_URL")]
    bitbucket_url: Option<String>,
    /// Bitbucket's API address (default: https://api.bitbucket.org/2.0).
    #[arg(long, env = "LB_BITBUCKET_API_URL")]
    bitbucket_api_url: Option<String>,
}

impl VendorArgs {
    /// The API's vendor settings.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let app = |vendor: Vendor,
                   id: &Option<String>,
                   secret: &Option<String>,
                   web: &Option<String>,
                   api: &Option<String>|
         -> anyhow::Result<Option<VendorConfig>> {
            match (id, secret) {
                (None, None) => Ok(None),
                (Some(id), Some(secret)) => Ok(Some(VendorConfig::new(
                    vendor,
                    id.clone(),
                    secret.clone(),
                    web.clone(),
                    api.clone(),
                ))),
                _ => bail!("--{vendor}-client-id and --{vendor}-client-secret go together"),
            }
        };
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("--public-url {url:?} must start with http:// or https://");
            }
        }
        Ok(Settings {
            public_url: self.public_url.clone(),
            github: app(
                Vendor::Github,
                &self.github_client_id,
                &self.github_client_secret,
                &self.github_url,
                &self.github_api_url,
            )?,
            gitlab: app(
                Vendor::Gitlab,
                &self.gitlab_client_id,
                &self.gitlab_client_secret,
                &self.gitlab_url,
                &self.gitlab_api_url,
            )?,
            bitbucket: app(
                Vendor::Bitbucket,
                &self.bitbucket_client_id,
                &self.bitbucket_client_secret,
                &self.bitbucket_url,
                &self.bitbucket_api_url,
            )?,
            poll_interval: self.poll_interval,
        })
    }
}
