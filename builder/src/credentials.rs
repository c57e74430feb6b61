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
}
