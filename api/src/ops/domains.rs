//! Domains: each claimed by one service cluster-wide, through the
//! create-if-absent index `<root>/index/domains/<domain>` written in the
//! same transaction as the service's spec. A domain taken by another service
//! (of anyone) is a 409 naming it; the API's own public host and names under
//! the generated `--base-domain` cannot be claimed; a wildcard
//! `*.example.com` and an exact `x.example.com` may coexist only when both
//! belong to one user (the exact name wins for its host).
//!
//! Releasing a domain (removed from the spec, or its service deleted) drops
//! its claim and its certificate record.

use lb_model::ingress::DomainClaim;
use lb_model::CertView;
use lb_store::{Compare, Op, StoreExt, Txn};
use serde::{Deserialize, Serialize};

use super::resolve;
use super::services::{self, Change};
use crate::auth::Caller;
use crate::context::Ctx;
use crate::error::{ApiError, Result};
use crate::json::{decode, encode};

/// A service's domain as shown.
#[derive(Debug, Serialize, Deserialize)]
pub struct DomainView {
    /// The domain.
    pub domain: String,
    /// Its certificate's status (`None`: none yet).
    pub certificate: Option<CertView>,
}

/// `PUT .../domains/{d}/certificate`: a certificate and key, PEM.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateUpload {
    /// The chain, leaf first.
    pub chain: String,
    /// The private key (never shown again).
    pub key: String,
}

/// `POST .../domains`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRequest {
    /// The domain to add.
    pub domain: String,
}

/// A service's domains with their certificates' status.
pub async fn list(ctx: &Ctx, caller: &Caller, p: &str, s: &str) -> Result<Vec<DomainView>> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    let mut out = Vec::with_capacity(loaded.spec.domains.len());
    for domain in &loaded.spec.domains {
        out.push(DomainView {
            domain: domain.clone(),
            certificate: certificate(ctx, domain).await?,
        });
    }
    Ok(out)
}

async fn certificate(ctx: &Ctx, domain: &str) -> Result<Option<CertView>> {
    Ok(lb_certs::get(ctx.store.as_ref(), &ctx.keys, domain)
        .await
        .map_err(cert_error)?
        .map(|r| r.view()))
}

/// Adds a domain to a service (claimed in the same write).
pub async fn add(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    s: &str,
    domain: String,
) -> Result<DomainView> {
    services::update(ctx, caller, p, s, None, Change::AddDomain(domain.clone())).await?;
    Ok(DomainView {
        certificate: certificate(ctx, &domain).await?,
        domain,
    })
}

/// Removes a domain from a service (its claim and certificate go too).
pub async fn remove(ctx: &Ctx, caller: &Caller, p: &str, s: &str, domain: &str) -> Result<()> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    if !loaded.spec.domains.iter().any(|d| d == domain) {
        return Err(not_listed(domain, s));
    }
    services::update(
        ctx,
        caller,
        p,
        s,
        None,
        Change::RemoveDomain(domain.to_owned()),
    )
    .await?;
    Ok(())
}

/// Stores the owner's own certificate for one of the service's domains.
pub async fn upload(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    s: &str,
    domain: &str,
    body: CertificateUpload,
) -> Result<CertView> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    if !loaded.spec.domains.iter().any(|d| d == domain) {
        return Err(not_listed(domain, s));
    }
    let record = lb_certs::upload(
        ctx.store.as_ref(),
        &ctx.keys,
        &ctx.sealer,
        domain,
        &body.chain,
        &body.key,
    )
    .await
    .map_err(cert_error)?;
    tracing::info!(service = %loaded.meta.id, domain, by = %caller.user.username, "certificate uploaded");
    Ok(record.view())
}

/// Drops a domain's certificate (an uploaded one; lb then orders its own).
pub async fn remove_certificate(
    ctx: &Ctx,
    caller: &Caller,
    p: &str,
    s: &str,
    domain: &str,
) -> Result<()> {
    let loaded = resolve::service(ctx, caller, p, s).await?;
    if !loaded.spec.domains.iter().any(|d| d == domain) {
        return Err(not_listed(domain, s));
    }
    if !lb_certs::remove(ctx.store.as_ref(), &ctx.keys, domain)
        .await
        .map_err(cert_error)?
    {
        return Err(ApiError::not_found(format!(
            "no certificate for {domain:?}"
        )));
    }
    Ok(())
}

fn not_listed(domain: &str, s: &str) -> ApiError {
    ApiError::not_found(format!("service {s:?} has no domain {domain:?}"))
}

fn cert_error(e: lb_certs::CertError) -> ApiError {
    if e.is_bad_input() {
        ApiError::invalid("certificate", e.to_string())
    } else if let lb_certs::CertError::Store(e) = e {
        e.into()
    } else {
        ApiError::internal(e)
    }
}

/// The service a claim is made for.
pub struct Claimant<'a> {
    /// Project id.
    pub project: &'a str,
    /// Service id.
    pub service: &'a str,
    /// The project owner's user id.
    pub owner: &'a str,
}

/// Adds to `txn` the compares and writes that move `claimant`'s claims from
/// `old` to `new` domains; refuses (409, 400) before anything is written.
pub async fn claim(
    ctx: &Ctx,
    claimant: &Claimant<'_>,
    old: &[String],
    new: &[String],
    mut txn: Txn,
) -> Result<Txn> {
    let added: Vec<&String> = new.iter().filter(|d| !old.contains(d)).collect();
    if !added.is_empty() {
        let claims = all(ctx).await?;
        for (i, domain) in new.iter().enumerate() {
            if !added.contains(&domain) {
                continue;
            }
            let field = format!("domains[{i}]");
            reserved(ctx, domain).map_err(|e| e.with_field(field.clone()))?;
            // A claim left by a service that no longer exists (a project
            // deleted while a domain was being added) is taken over.
            let mut expected = 0;
            if let Some((other, revision)) = claims.iter().find(|(c, _)| c.domain == *domain) {
                if other.service != claimant.service && exists(ctx, other).await? {
                    return Err(taken(domain).with_field(field));
                }
                expected = *revision;
            }
            if let Some((other, _)) = claims
                .iter()
                .find(|(c, _)| overlaps(&c.domain, domain) && c.owner != claimant.owner)
            {
                return Err(ApiError::conflict(format!(
                    "domain {domain:?} overlaps {:?}, claimed by another user",
                    other.domain
                ))
                .with_field(field));
            }
            let record = DomainClaim {
                domain: domain.clone(),
                project: claimant.project.to_owned(),
                service: claimant.service.to_owned(),
                owner: claimant.owner.to_owned(),
            };
            let key = ctx.keys.domain(domain);
            txn = txn
                .when(Compare::ModRevision(key.clone(), expected))
                .then(Op::put(key, encode(&record)));
        }
    }
    for domain in old.iter().filter(|d| !new.contains(d)) {
        txn = release_ops(ctx, claimant.service, domain, txn).await?;
    }
    Ok(txn)
}

/// Adds to `txn` the deletes of every claim of a service being deleted.
pub async fn release_all(
    ctx: &Ctx,
    service: &str,
    domains: &[String],
    mut txn: Txn,
) -> Result<Txn> {
    for domain in domains {
        txn = release_ops(ctx, service, domain, txn).await?;
    }
    Ok(txn)
}

async fn release_ops(ctx: &Ctx, service: &str, domain: &str, txn: Txn) -> Result<Txn> {
    let key = ctx.keys.domain(domain);
    let Some(kv) = ctx.store.get(&key).await? else {
        return Ok(txn);
    };
    let claim: DomainClaim = decode(&kv)?;
    if claim.service != service {
        return Ok(txn);
    }
    Ok(txn
        .when(Compare::ModRevision(key.clone(), kv.mod_revision))
        .then(Op::delete(key))
        .then(Op::delete(ctx.keys.cert(domain))))
}

/// Every claim, with the revision of its index key.
pub async fn all(ctx: &Ctx) -> Result<Vec<(DomainClaim, i64)>> {
    let (kvs, _) = ctx.store.list(&ctx.keys.domains()).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| Some((decode::<DomainClaim>(kv).ok()?, kv.mod_revision)))
        .collect())
}

/// Adds to `txn` the deletes of every claim of a project being deleted.
pub async fn release_project(ctx: &Ctx, project: &str, mut txn: Txn) -> Result<Txn> {
    for (claim, revision) in all(ctx).await? {
        if claim.project == project {
            let key = ctx.keys.domain(&claim.domain);
            txn = txn
                .when(Compare::ModRevision(key.clone(), revision))
                .then(Op::delete(key))
                .then(Op::delete(ctx.keys.cert(&claim.domain)));
        }
    }
    Ok(txn)
}

async fn exists(ctx: &Ctx, claim: &DomainClaim) -> Result<bool> {
    let key = ctx.keys.service_spec(&claim.project, &claim.service);
    Ok(ctx.store.get(&key).await?.is_some())
}

/// After a write that lost a race on a claim: the 409 naming the domain
/// another service took meanwhile, if that is what happened.
pub async fn lost(ctx: &Ctx, service: &str, domains: &[String]) -> Result<()> {
    for domain in domains {
        if let Some(kv) = ctx.store.get(&ctx.keys.domain(domain)).await? {
            if decode::<DomainClaim>(&kv)?.service != service {
                return Err(taken(domain));
            }
        }
    }
    Ok(())
}

fn taken(domain: &str) -> ApiError {
    ApiError::conflict(format!(
        "domain {domain:?} is already claimed by another service"
    ))
}

/// Names nobody may claim: the API's own public host, and names under the
/// base domain (its names are generated, one per service).
fn reserved(ctx: &Ctx, domain: &str) -> Result<()> {
    let public = ctx
        .config
        .vendors
        .public_url
        .as_deref()
        .and_then(|u| u.split("://").nth(1))
        .and_then(|rest| rest.split(['/', ':']).next())
        .map(str::to_ascii_lowercase);
    if let Some(host) = public {
        if host == domain || overlaps(domain, &host) {
            return Err(ApiError::invalid(
                "domains",
                format!("{domain:?} is lb's own address and cannot be claimed"),
            ));
        }
    }
    if let Some(base) = &ctx.config.ingress.base_domain {
        let under = domain
            .trim_start_matches("*.")
            .strip_suffix(base.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
        if under {
            return Err(ApiError::invalid(
                "domains",
                format!("{domain:?} is under the base domain {base:?}, whose names lb generates"),
            ));
        }
    }
    Ok(())
}

/// Whether a wildcard covers an exact name or the reverse (`*.a.com` and
/// `x.a.com`).
fn overlaps(a: &str, b: &str) -> bool {
    let covers = |wild: &str, name: &str| {
        wild.strip_prefix("*.")
            .is_some_and(|parent| name.split_once('.').map(|(_, p)| p) == Some(parent))
    };
    covers(a, b) || covers(b, a)
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn wildcards_overlap_the_names_they_cover() {
        assert!(overlaps("*.a.com", "x.a.com"));
        assert!(overlaps("x.a.com", "*.a.com"));
        assert!(!overlaps("*.a.com", "x.y.a.com"));
        assert!(!overlaps("*.a.com", "a.com"));
        assert!(!overlaps("x.a.com", "y.a.com"));
    }
}
