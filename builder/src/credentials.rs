//! What a clone may use: the allowlist of repository owners, and the
//! project owner's linked vendor token for a private repository.
//!
//! The token is read sealed from `/lb/users/<owner>/vendors/<vendor>` and
//! opened with the cluster key ([`lb_store::secrets::Sealer`]); it reaches
//! git only as [`lb_git::Credentials`]: an `http.<origin>/.extraHeader`
//! scoped to the repository's origin, in git's environment, so it is never
//! in a URL, an argument, a file or a log. The API refreshes expiring tokens ahead of time; a builder
//! only reads them.

use base64::Engine;
use lb_git::Credentials;
use lb_model::keys::Keys;
use lb_model::{Allowlist, Project, Vendor, VendorLink};
use lb_store::secrets::Sealer;
use lb_store::Store;

/// Refuses a repository whose owner the admin's allowlist leaves out.
pub async fn check_allowlist(store: &dyn Store, keys: &Keys, url: &str) -> Result<(), String> {
    let list: Allowlist = match store
        .get(&keys.allowlist())
        .await
        .map_err(|e| e.to_string())?
    {
        Some(kv) => serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?,
        None => Allowlist::default(),
    };
    if list.allows(url) {
        Ok(())
    } else {
        Err(format!(
            "{url} is not in the allowlist of repository owners (an admin sets it at /api/v1/admin/allowlist)"
        ))
    }
}

/// The credentials that give git the project owner's token for `url`,
/// when the source names a vendor the owner has linked; none otherwise
/// (the clone goes on without credentials), with a note for the build log.
pub async fn git_credentials(
    store: &dyn Store,
    keys: &Keys,
    pid: &str,
    vendor: Option<&str>,
    url: &str,
) -> Result<(Credentials, Option<String>), String> {
    let Some(vendor) = vendor else {
        return Ok((Credentials::none(), None));
    };
    let Some(vendor) = Vendor::parse(vendor) else {
        return Err(format!("unknown vendor {vendor:?}"));
    };
    let Some(origin) = origin(url) else {
        // ssh and git URLs take no token.
        return Ok((Credentials::none(), None));
    };
    let project: Project = match store
        .get(&keys.project(pid))
        .await
        .map_err(|e| e.to_string())?
    {
        Some(kv) => serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?,
        None => return Err("the project was deleted".into()),
    };
    let key = keys.user_vendor(&project.owner, vendor.as_str());
    let Some(kv) = store.get(&key).await.map_err(|e| e.to_string())? else {
        return Ok((
            Credentials::none(),
            Some(format!(
                "the project's owner has no linked {vendor} account: cloning without credentials"
            )),
        ));
    };
    let link: VendorLink = serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
    if let Err(note) = token_may_go(&link, &origin) {
        return Ok((Credentials::none(), Some(note)));
    }
    let sealer = Sealer::load(store, keys).await.map_err(|e| e.to_string())?;
    let token = sealer.open(&link.token, &key).map_err(|_| {
        format!("the linked {vendor} token cannot be opened: link the account again")
    })?;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{token}", vendor.git_username()));
    Ok((
        Credentials::http_header(&origin, format!("Authorization: Basic {basic}")),
        Some(format!(
            "cloning with the linked {vendor} account {:?}",
            link.login
        )),
    ))
}

/// Whether the link's token may be sent to `origin` (what [`origin`]
/// answers): only to the vendor host the account was linked on, so a source
/// naming `vendor: github` with a URL on another host never receives the
/// owner's GitHub token. Otherwise the note for the build log.
fn token_may_go(link: &VendorLink, origin: &str) -> Result<(), String> {
    let host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let allowed = link.token_host();
    if host == allowed {
        Ok(())
    } else {
        Err(format!(
            "the source's host {host:?} is not the linked {} account's host {allowed:?}: \
             cloning without credentials",
            link.vendor
        ))
    }
}

/// `scheme://host[:port]/` of an http(s) URL, without any user info.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin("https://github.com/o/r.git").as_deref(),
            Some("https://github.com/")
        );
        assert_eq!(
            origin("http://me@127.0.0.1:8080/o/r.git").as_deref(),
            Some("http://127.0.0.1:8080/")
        );
        assert_eq!(origin("git@github.com:o/r.git"), None);
        assert_eq!(origin("ssh://git@h/o/r"), None);
    }

    fn link(vendor: Vendor, host: Option<&str>) -> VendorLink {
        VendorLink {
            vendor,
            account_id: "1".into(),
            login: "owner".into(),
            token: "sealed".into(),
            refresh_token: None,
            expires: None,
            scopes: Vec::new(),
            created: 0,
            updated: 0,
            host: host.map(str::to_owned),
        }
    }

    #[test]
    fn a_token_goes_only_to_its_vendors_host() {
        let check = |link: &VendorLink, url: &str, sent: bool| {
            let origin = origin(url).unwrap();
            let chosen = token_may_go(link, &origin);
            assert_eq!(chosen.is_ok(), sent, "{url}: {chosen:?}");
        };
        // A link made before links kept their host: the public service's.
        let old = link(Vendor::Github, None);
        check(&old, "https://github.com/acme/web.git", true);
        check(&old, "https://GitHub.com/acme/web.git", true);
        check(&old, "https://evil.example/acme/web.git", false);
        check(&old, "https://github.com.evil.example/acme/web.git", false);
        check(&old, "https://github.com:8443/acme/web.git", false);
        check(&old, "https://gitlab.com/acme/web.git", false);
        // GitHub Enterprise: its configured host, not github.com.
        let ghe = link(Vendor::Github, Some("ghe.corp:8443"));
        check(&ghe, "https://ghe.corp:8443/acme/web.git", true);
        check(&ghe, "https://github.com/acme/web.git", false);
        check(&ghe, "https://ghe.corp/acme/web.git", false);
        let lab = link(Vendor::Gitlab, None);
        check(&lab, "https://gitlab.com/g/r.git", true);
        check(&lab, "https://x@gitlab.com.evil/g/r.git", false);
        let note = token_may_go(&old, "https://evil.example/").unwrap_err();
        assert!(note.contains("without credentials"), "{note}");
    }
}
