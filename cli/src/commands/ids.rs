//! Short ids: wherever lbc takes a replica id, its full id, a unique
//! prefix of it, or a unique prefix of the short id lbc prints (the id's
//! last six characters, see [`super::logs::short_id`]) names it. An
//! ambiguous prefix fails with the candidates listed.

use crate::error::{Error, Kind, Result};

/// The full id of the replica `given` names among `ids`.
pub fn resolve<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    given: &str,
    service: &str,
) -> Result<String> {
    let wanted = given.trim().to_lowercase();
    if wanted.is_empty() {
        return Err(Error::usage("the replica id is empty"));
    }
    let ids: Vec<&str> = ids.into_iter().collect();
    if let Some(exact) = ids.iter().find(|id| id.to_lowercase() == wanted) {
        return Ok((*exact).to_owned());
    }
    let candidates: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| {
            id.to_lowercase().starts_with(&wanted) || super::logs::short_id(id).starts_with(&wanted)
        })
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(Error::new(
            Kind::NotFound,
            format!("replica {given:?} not found in service {service:?}"),
        )),
        many => {
            let listed = many
                .iter()
                .map(|id| format!("{id} ({})", super::logs::short_id(id)))
                .collect::<Vec<_>>()
                .join(", ");
            Err(Error::usage(format!(
                "replica {given:?} is ambiguous in service {service:?}: it may be {listed}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [&str; 3] = [
        "01JAAAAAAAAAAAAAAAAAB3XQ7K",
        "01JAAAAAAAAAAAAAAAAAB3Y2MN",
        "01JBBBBBBBBBBBBBBBBBZZ9PQR",
    ];

    fn check(given: &str, expect: std::result::Result<&str, &str>) {
        let got = resolve(IDS, given, "web");
        match (got, expect) {
            (Ok(id), Ok(want)) => assert_eq!(id, want, "{given:?}"),
            (Err(e), Err(want)) => {
                assert!(e.to_string().contains(want), "{given:?}: {e}")
            }
            (got, want) => panic!("{given:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn prefixes() {
        check("01JAAAAAAAAAAAAAAAAAB3XQ7K", Ok(IDS[0]));
        check("01jaaaaaaaaaaaaaaaaab3xq7k", Ok(IDS[0]));
        check("b3xq7k", Ok(IDS[0]));
        check("b3x", Ok(IDS[0]));
        check("B3Y", Ok(IDS[1]));
        check("01JB", Ok(IDS[2]));
        check("zz9", Ok(IDS[2]));
        check("b3", Err("ambiguous in service \"web\": it may be 01JAAAAAAAAAAAAAAAAAB3XQ7K (b3xq7k), 01JAAAAAAAAAAAAAAAAAB3Y2MN (b3y2mn)"));
        check("01JA", Err("ambiguous"));
        check("nope", Err("replica \"nope\" not found in service \"web\""));
        check(" ", Err("empty"));
        assert_eq!(resolve(IDS, "nope", "web").unwrap_err().exit_code(), 3);
        assert_eq!(resolve(IDS, "b3", "web").unwrap_err().exit_code(), 2);
    }
}
