//! Linked vendor accounts: OAuth 2 linking (connect, callback), listing
//! and unlinking, the tokens (refreshed when they are about to expire:
//! GitLab, Bitbucket, expiring GitHub App tokens), and the linked account's
//! repositories and branches.
//!
//! [`connect`] stores a random `state` (hashed, for 10 minutes) bound to the
//! caller; [`callback`] takes it only with the browser's cookie of it, once.
//! Tokens are sealed at rest under the cluster key
//! ([`lb_store::secrets::Sealer`]).

use std::collections::HashMap;

use lb_model::{now, Vendor, VendorLink};
use lb_store::{Compare, Op, StoreExt, Txn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::{decode, encode};
use crate::models::List;
use crate::vendors::client::{self, Api, Branch, Page, Repo};
use crate::vendors::VendorConfig;

/// How long a link in progress stays valid (seconds).
pub const STATE_TTL: i64 = 600;

/// A linked account as shown: no tokens.
#[derive(Debug, Serialize)]
pub struct LinkView {
    /// The vendor.
    pub vendor: Vendor,
    /// The account's login at the vendor.
    pub login: String,
    /// The account's id at the vendor.
    pub account_id: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// When the access token expires (it is refreshed before), if it does.
    pub expires: Option<i64>,
    /// When linked.
    pub created: i64,
    /// When last refreshed.
    pub updated: i64,
}

impl From<&VendorLink> for LinkView {
    fn from(l: &VendorLink) -> Self {
        Self {
            vendor: l.vendor,
            login: l.login.clone(),
            account_id: l.account_id.clone(),
            scopes: l.scopes.clone(),
            expires: l.expires,
            created: l.created,
            updated: l.updated,
        }
    }
}

/// A link in progress, at `/lb/oauth/<sha256(state)>`.
#[derive(Debug, Serialize, Deserialize)]
struct PendingLink {
    uid: String,
    vendor: Vendor,
    expires: i64,
}

/// The vendor a path names; 404 for any other.
pub fn parse_vendor(v: &str) -> Result<Vendor> {
    Vendor::parse(v).ok_or_else(|| {
        ApiError::not_found(format!(
            "no vendor {:?}: github, gitlab or bitbucket",
            v.chars().take(40).collect::<String>()
        ))
    })
}

fn configured(ctx: &Ctx, vendor: Vendor) -> Result<&VendorConfig> {
    ctx.config.vendors.get(vendor).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "{vendor} is not configured on this server: set --{vendor}-client-id and --{vendor}-client-secret"
        ))
    })
}

fn hash(state: &str) -> String {
    Sha256::digest(state.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn vendor_error(err: client::Error) -> ApiError {
    match err {
        client::Error::Unavailable { .. } => ApiError::unavailable(err.to_string()),
        client::Error::Refused { .. } | client::Error::Exchange(..) => {
            ApiError::unprocessable(err.to_string())
        }
    }
}

/// The caller's linked accounts.
pub async fn list(ctx: &Ctx, caller: &Caller) -> Result<List<LinkView>> {
    let (kvs, _) = ctx
        .store
        .list(&ctx.keys.user_vendors(&caller.user.id))
        .await?;
    let items = kvs
        .iter()
        .map(|kv| decode::<VendorLink>(kv).map(|l| LinkView::from(&l)))
        .collect::<Result<Vec<_>>>()?;
    let total = items.len();
    Ok(List { items, total })
}

/// Starts linking the caller's account at a vendor: stores a random
/// `state` (hashed, for [`STATE_TTL`] seconds) bound to the caller; answers
/// the vendor's consent URL and the state (for the browser's cookie).
pub async fn connect(ctx: &Ctx, caller: &Caller, v: &str) -> Result<(String, String)> {
    let vendor = parse_vendor(v)?;
    let config = configured(ctx, vendor)?;
    let state: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let at = now();
    // Links abandoned half way are swept here.
    let (pending, _) = ctx.store.list(&ctx.keys.oauth_state("")).await?;
    for kv in pending {
        if serde_json::from_slice::<PendingLink>(&kv.value).map_or(true, |p| p.expires < at) {
            ctx.store.delete_if(&kv.key, kv.mod_revision).await?;
        }
    }
    let record = PendingLink {
        uid: caller.user.id.clone(),
        vendor,
        expires: at + STATE_TTL,
    };
    ctx.store
        .put(&ctx.keys.oauth_state(&hash(&state)), encode(&record))
        .await?;
    let url = client::authorize_url(
        vendor,
        config,
        &ctx.config.vendors.callback_url(vendor),
        state.clone(),
    )
    .map_err(vendor_error)?;
    Ok((url, state))
}

/// Finishes a link the vendor sent the browser back from
/// (`?code=&state=`): exchanges the code, reads the vendor's account,
/// stores the link. Needs the state `cookie` set by [`connect`] in this
/// browser.
pub async fn callback(
    ctx: &Ctx,
    v: &str,
    query: &HashMap<String, String>,
    cookie: Option<&str>,
) -> Result<LinkView> {
    let vendor = parse_vendor(v)?;
    let config = configured(ctx, vendor)?;
    if let Some(error) = query.get("error") {
        return Err(ApiError::bad_request(format!(
            "{vendor} did not grant access: {}",
            error.chars().take(100).collect::<String>()
        )));
    }
    let state = query
        .get("state")
        .ok_or_else(|| ApiError::invalid("state", "missing"))?;
    let code = query
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::invalid("code", "missing"))?;
    let cookie_matches = cookie.is_some_and(|c| bool::from(c.as_bytes().ct_eq(state.as_bytes())));
    if !cookie_matches {
        return Err(ApiError::forbidden(
            "this link was not started in this browser (the state cookie does not match)",
        ));
    }
    let key = ctx.keys.oauth_state(&hash(state));
    let kv = ctx
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::invalid("state", "unknown or already used: connect again"))?;
    // Single use: whoever deletes it goes on.
    if !ctx.store.delete_if(&key, kv.mod_revision).await? {
        return Err(ApiError::invalid("state", "already used: connect again"));
    }
    let pending: PendingLink = decode(&kv)?;
    if pending.expires < now() {
        return Err(ApiError::invalid("state", "expired: connect again"));
    }
    if pending.vendor != vendor {
        return Err(ApiError::invalid("state", "started for another vendor"));
    }
    let redirect = ctx.config.vendors.callback_url(vendor);
    let tokens = client::exchange(&ctx.http, vendor, config, &redirect, code.clone())
        .await
        .map_err(vendor_error)?;
    let account = Api::new(&ctx.http, vendor, config, &tokens.access)
        .account()
        .await
        .map_err(vendor_error)?;
    let key = ctx.keys.user_vendor(&pending.uid, vendor.as_str());
    let at = now();
    let created = match ctx.store.get(&key).await? {
        Some(kv) => decode::<VendorLink>(&kv)?.created,
        None => at,
    };
    let link = VendorLink {
        vendor,
        account_id: account.id,
        login: account.login,
        token: ctx.sealer.seal(&tokens.access, &key),
        refresh_token: tokens.refresh.as_deref().map(|r| ctx.sealer.seal(r, &key)),
        expires: tokens.expires_in.map(|s| at + s as i64),
        scopes: tokens.scopes,
        created,
        updated: at,
        // Where this token may go: the configured vendor's host only.
        host: web_host(&config.web_url),
    };
    ctx.store.put(&key, encode(&link)).await?;
    tracing::info!(user = %pending.uid, %vendor, login = %link.login, "vendor account linked");
    Ok(LinkView::from(&link))
}

/// The host (with any port) of a vendor's web address.
fn web_host(web_url: &str) -> Option<String> {
    let rest = web_url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?.to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Unlinks the caller's account (lb forgets the tokens; revoking the grant
/// at the vendor is the user's).
pub async fn unlink(ctx: &Ctx, caller: &Caller, v: &str) -> Result<()> {
    let vendor = parse_vendor(v)?;
    let key = ctx.keys.user_vendor(&caller.user.id, vendor.as_str());
    if ctx.store.delete(&key).await? {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no {vendor} account linked")))
    }
}

/// The user's access token for `vendor`, refreshed first when it expires
/// within five minutes.
pub async fn token_for(ctx: &Ctx, uid: &str, vendor: Vendor) -> Result<(VendorLink, String)> {
    token_within(ctx, uid, vendor, 300).await
}

/// Like [`token_for`], refreshing when the token expires within `margin`
/// seconds.
pub async fn token_within(
    ctx: &Ctx,
    uid: &str,
    vendor: Vendor,
    margin: i64,
) -> Result<(VendorLink, String)> {
    let key = ctx.keys.user_vendor(uid, vendor.as_str());
    let not_linked = || ApiError::not_found(format!("no {vendor} account linked"));
    let damaged = |_| {
        ApiError::unprocessable(format!(
            "the {vendor} link cannot be read (the cluster key changed?): link the account again"
        ))
    };
    loop {
        let kv = ctx.store.get(&key).await?.ok_or_else(not_linked)?;
        let link: VendorLink = decode(&kv)?;
        let stale = link.expires.is_some_and(|e| e < now() + margin);
        let refresh = link.refresh_token.as_ref().filter(|_| stale);
        let Some(refresh) = refresh else {
            let token = ctx.sealer.open(&link.token, &key).map_err(damaged)?;
            return Ok((link, token));
        };
        let config = configured(ctx, vendor)?;
        let refresh = ctx.sealer.open(refresh, &key).map_err(damaged)?;
        let tokens = client::refresh(
            &ctx.http,
            vendor,
            config,
            &ctx.config.vendors.callback_url(vendor),
            refresh,
        )
        .await
        .map_err(vendor_error)?;
        let at = now();
        let updated = VendorLink {
            token: ctx.sealer.seal(&tokens.access, &key),
            refresh_token: tokens
                .refresh
                .as_deref()
                .map(|r| ctx.sealer.seal(r, &key))
                .or(link.refresh_token.clone()),
            expires: tokens.expires_in.map(|s| at + s as i64),
            updated: at,
            ..link
        };
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), kv.mod_revision))
            .then(Op::put(key.clone(), encode(&updated)));
        if ctx.store.txn(txn).await?.succeeded {
            tracing::info!(user = %uid, %vendor, "vendor token refreshed");
            return Ok((updated, tokens.access));
        }
        // Someone else refreshed it meanwhile: read theirs.
    }
}

/// `?page=&per_page=` (and `repo=` for branches).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page number, from 1.
    pub page: Option<String>,
    /// Items per page, 1–100.
    pub per_page: Option<String>,
    /// `owner/name` (branches).
    pub repo: Option<String>,
}

impl PageQuery {
    fn numbers(&self) -> Result<(u32, u32)> {
        let parse = |field: &str, value: &Option<String>, default: u32, max: u32| match value {
            None => Ok(default),
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(field, format!("{raw:?} is not a number from 1 to {max}"))
                }),
        };
        Ok((
            parse("page", &self.page, 1, 10_000)?,
            parse("per_page", &self.per_page, 30, 100)?,
        ))
    }
}

/// One page of the repositories the caller's linked account reaches.
pub async fn repos(ctx: &Ctx, caller: &Caller, v: &str, query: &PageQuery) -> Result<Page<Repo>> {
    let vendor = parse_vendor(v)?;
    let (page, per_page) = query.numbers()?;
    if query.repo.is_some() {
        return Err(ApiError::invalid("repo", "only branches take a repository"));
    }
    let config = configured(ctx, vendor)?;
    let (_, token) = token_for(ctx, &caller.user.id, vendor).await?;
    Api::new(&ctx.http, vendor, config, &token)
        .repos(page, per_page)
        .await
        .map_err(vendor_error)
}

/// One page of the branches of a repository (`owner/name`) the caller's
/// linked account reaches.
pub async fn branches(
    ctx: &Ctx,
    caller: &Caller,
    v: &str,
    query: &PageQuery,
) -> Result<Page<Branch>> {
    let vendor = parse_vendor(v)?;
    let (page, per_page) = query.numbers()?;
    let repo = query
        .repo
        .clone()
        .ok_or_else(|| ApiError::invalid("repo", "missing: owner/name"))?;
    if !client::valid_repo(&repo) {
        return Err(ApiError::invalid(
            "repo",
            format!(
                "{:?} is not owner/name",
                repo.chars().take(100).collect::<String>()
            ),
        ));
    }
    let config = configured(ctx, vendor)?;
    let (_, token) = token_for(ctx, &caller.user.id, vendor).await?;
    Api::new(&ctx.http, vendor, config, &token)
        .branches(&repo, page, per_page)
        .await
        .map_err(vendor_error)
}
