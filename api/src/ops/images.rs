//! Which image a service may run (issue 16): an image of its own project's
//! repositories in lb's registry, by tag or digest, or an image in another
//! registry by a full reference. Strings Docker could read as an image id
//! (`6192`, `sha256:6192`, a full id) are refused by the spec's own
//! validation ([`lb_model::reference`]); here the rest is checked against
//! the store: a reference into lb's registry (its address, or a loopback
//! alias of it) must name a repository of the service's own project, and is
//! stored by ids (`<registry>/<pid>/<sid>`, lower case), the names lb's
//! registry grants nodes pull access by.

use lb_model::ids::is_id;
use lb_model::reference::{same_registry, Reference};
use lb_model::ServiceSpec;

use crate::context::Ctx;
use crate::error::{ApiError, Result};

/// The service an image check is for.
pub struct Owner<'a> {
    /// Project id.
    pub pid: &'a str,
    /// Project name.
    pub project_name: &'a str,
    /// The service's id (new or existing).
    pub sid: &'a str,
}

/// Checks `spec.image` for the service `owner` and, when it is in lb's
/// registry, rewrites it to the repository's ids. 400 naming `image` for
/// another project's repository or one no service of the project has.
pub async fn authorize(ctx: &Ctx, owner: &Owner<'_>, spec: &mut ServiceSpec) -> Result<()> {
    let Some(image) = spec.image.clone() else {
        return Ok(());
    };
    let reference = Reference::parse(&image)?;
    let Some(registry) = ctx.store.get(&ctx.keys.cluster("registry")).await? else {
        // No registry has run: no reference can be into it.
        return Ok(());
    };
    let registry = String::from_utf8_lossy(&registry.value).into_owned();
    if !same_registry(&reference.registry, &registry) {
        return Ok(());
    }
    let refuse = |why: String| ApiError::invalid("image", format!("{image:?} {why}"));
    let Some((project, service)) = reference
        .repository
        .split_once('/')
        .filter(|(_, s)| !s.contains('/'))
    else {
        return Err(refuse(format!(
            "is not a repository of lb's registry ({registry}/<project>/<service>)"
        )));
    };
    if project != owner.pid.to_lowercase() && project != owner.project_name {
        return Err(refuse(format!(
            "names another project's repository in lb's registry: a service runs \
             only images of its own project ({registry}/{}/<service>) or of other registries",
            owner.project_name
        )));
    }
    let sid = if service == owner.sid.to_lowercase() || service == spec.name {
        owner.sid.to_owned()
    } else if let Some(kv) = ctx
        .store
        .get(&ctx.keys.service_index(owner.pid, service))
        .await?
    {
        String::from_utf8_lossy(&kv.value).into_owned()
    } else {
        let upper = service.to_uppercase();
        let exists = is_id(&upper)
            && ctx
                .store
                .get(&ctx.keys.service_meta(owner.pid, &upper))
                .await?
                .is_some();
        if !exists {
            return Err(refuse(format!(
                "names no service of project {:?} in lb's registry",
                owner.project_name
            )));
        }
        upper
    };
    let by_ids = Reference {
        registry,
        repository: lb_store::registry::repository(owner.pid, &sid),
        ..reference
    };
    spec.image = Some(by_ids.to_string());
    Ok(())
}
