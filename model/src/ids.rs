//! Resource ids: ULIDs (26 characters of Crockford base32 in upper case, the
//! first ten the creation time in milliseconds, so ids sort by creation; the
//! rest random), from the `ulid` crate. Names are lower-case DNS labels, so an
//! id never reads as a name: an API path segment is unambiguously one or the
//! other.

use ulid::Ulid;

/// A new unique id.
pub fn new_id() -> String {
    loop {
        let id = Ulid::new().to_string();
        // At least one letter, so an id is never a valid (lower-case) name
        // (all 26 characters digits: about one id in 10^10).
        if id.bytes().any(|b| b.is_ascii_uppercase()) {
            return id;
        }
    }
}

/// Whether `s` has the shape of an id: a ULID in its canonical upper-case
/// form with at least one letter.
pub fn is_id(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        && s.bytes().any(|b| b.is_ascii_uppercase())
        && Ulid::from_string(s).is_ok_and(|u| u.to_string() == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_sorted_and_never_names() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert!(a < b, "{a} < {b}");
        assert!(is_id(&a) && is_id(&b));
        assert!(crate::validate_name(&a.to_lowercase()).is_ok());
        assert!(crate::validate_name(&a).is_err());
        assert!(!is_id("web"));
    }

    #[test]
    fn the_shape_of_an_id_is_checked_exactly() {
        // Crockford base32 has no I, L, O or U; lower case is a name.
        assert!(is_id("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert!(!is_id("01ARZ3NDEKTSV4RRFFQ69G5FAU"));
        assert!(!is_id("01arz3ndektsv4rrffq69g5fav"));
        assert!(!is_id("01ARZ3NDEKTSV4RRFFQ69G5FA"));
        // The first character carries only 3 bits: 8 and above overflow.
        assert!(!is_id("81ARZ3NDEKTSV4RRFFQ69G5FAV"));
    }
}
