//! Which image a container is created from (issue 16): images by
//! authority, not by the engine's cache.
//!
//! - An image in lb's registry is pulled with the node's credential before
//!   every create, also when the engine holds it already: the registry's
//!   token endpoint grants the pull only for images of the projects this
//!   node runs replicas of, so a digest in the cache is re-authorized, never
//!   trusted. The registry names the digest the tag stands for (Docker's
//!   `Digest: sha256:...` line), and the container is created from
//!   `<registry>/<repository>@<digest>`.
//! - Any other image is named by its full reference
//!   (`docker.io/library/busybox:latest`), taken from the engine when there
//!   and pulled (without credentials) when not. Such a copy cannot be
//!   another tenant's: tenants' images live in lb's registry, and the
//!   engine finds an image by a full reference only under the very name it
//!   was pulled or tagged with.
//! - Nothing else is handed to Docker: a string it could read as an image
//!   id or id prefix (`6192`, `sha256:6192`, a full id) is refused, and a
//!   container is only created from a normalised full reference.

use lb_model::reference::{same_registry, Reference};

use super::{Error, Result};

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// lb's registry: pulled with the node's credential every time.
    Lb(Reference),
    /// Another registry: the engine's copy of that full reference, or a
    /// pull.
    Public(Reference),
}

/// Parses an assignment's image: in lb's registry when its host is
/// `registry` (the address the API named, when the node has its
/// credential for it).
pub fn source(image: &str, registry: Option<&str>) -> Result<Source> {
    let reference = Reference::parse(image).map_err(|e| Error::Pull {
        image: image.to_owned(),
        message: e.message,
    })?;
    Ok(match registry {
        Some(r) if same_registry(&reference.registry, r) => Source::Lb(reference),
        _ => Source::Public(reference),
    })
}

/// The digest a pull of `reference` resolved to: the registry's
/// `Digest: ...` status line, which must agree with a digest the
/// reference pins.
pub fn resolved<'a>(
    reference: &Reference,
    statuses: impl IntoIterator<Item = &'a str>,
) -> Result<String> {
    let named = statuses
        .into_iter()
        .filter_map(|s| s.strip_prefix("Digest: "))
        .map(str::trim)
        .last();
    let fail = |message: String| Error::Pull {
        image: reference.to_string(),
        message,
    };
    match (named, &reference.digest) {
        (Some(got), Some(pinned)) if got != pinned => Err(fail(format!(
            "the registry answered digest {got}, not the one named"
        ))),
        (Some(got), _) => Reference::parse(&reference.pinned(got))
            .map(|_| got.to_owned())
            .map_err(|_| fail(format!("the registry answered an invalid digest {got:?}"))),
        (None, Some(pinned)) => Ok(pinned.clone()),
        (None, None) => Err(fail("the registry named no digest for the tag".into())),
    }
}

/// Refuses to create a container from anything but a normalised full
/// reference (what [`Reference::runnable`] makes): the engine could read
/// another string as an image id.
pub fn check_runnable(image: &str) -> Result<()> {
    let full = Reference::parse(image).map(|r| r.runnable());
    if full.as_deref() == Ok(image) {
        return Ok(());
    }
    Err(Error::Engine(format!(
        "refusing to create a container from {image:?}: not a full image reference"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const E: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn lb_images_are_told_from_others_by_host() {
        let reg = Some("127.0.0.1:5000");
        let Source::Lb(r) = source("127.0.0.1:5000/p/s:3", reg).unwrap() else {
            panic!("not lb's")
        };
        assert_eq!(r.runnable(), "127.0.0.1:5000/p/s:3");
        assert!(matches!(
            source("localhost:5000/p/s:3", reg).unwrap(),
            Source::Lb(_)
        ));
        let Source::Public(r) = source("lb-test-busybox:1", reg).unwrap() else {
            panic!("lb's")
        };
        assert_eq!(r.runnable(), "docker.io/library/lb-test-busybox:1");
        assert!(matches!(
            source("127.0.0.1:5000/p/s:3", None).unwrap(),
            Source::Public(_)
        ));
        for id in ["6192", "61", "sha256:6192", &D[7..], D] {
            assert!(
                matches!(source(id, reg), Err(Error::Pull { .. })),
                "{id} taken"
            );
        }
    }

    #[test]
    fn the_digest_comes_from_the_registry() {
        let tagged = Reference::parse("127.0.0.1:5000/p/s:3").unwrap();
        let pinned = Reference::parse(&format!("127.0.0.1:5000/p/s@{D}")).unwrap();
        let answer = format!("Digest: {D}");
        let lines = ["Pulling from p/s", &answer, "Status: Image is up to date"];
        assert_eq!(resolved(&tagged, lines).unwrap(), D);
        assert_eq!(resolved(&pinned, lines).unwrap(), D);
        assert_eq!(resolved(&pinned, ["Status: done"]).unwrap(), D);
        assert!(resolved(&tagged, ["Status: done"]).is_err());
        assert!(resolved(&tagged, ["Digest: sha256:6192"]).is_err());
        let other = format!("Digest: {E}");
        assert!(resolved(&pinned, [other.as_str()]).is_err());
    }

    #[test]
    fn containers_come_only_from_full_references() {
        for ok in [
            "docker.io/library/busybox:latest".to_owned(),
            format!("127.0.0.1:5000/p/s@{D}"),
        ] {
            check_runnable(&ok).unwrap();
        }
        for bad in [
            "6192",
            "busybox",
            "busybox:1",
            "sha256:6192",
            D,
            &D[7..],
            "docker.io/library/busybox",
            &format!("127.0.0.1:5000/p/s:1@{D}"),
        ] {
            assert!(check_runnable(bad).is_err(), "{bad} taken");
        }
    }
}
