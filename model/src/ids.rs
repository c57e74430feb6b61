//! Resource ids: 26 characters of Crockford base32 in upper case, the first
//! ten encoding the creation time in milliseconds (so ids sort by creation),
//! the rest random. Names are lower-case DNS labels, so an id never reads as
//! a name: an API path segment is unambiguously one or the other.

use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new unique id.
pub fn new_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    loop {
        let mut out = String::with_capacity(26);
        for i in (0..10).rev() {
            out.push(ALPHABET[((millis >> (i * 5)) & 31) as usize] as char);
        }
        let random: u128 = rand::random();
        for i in 0..16 {
            out.push(ALPHABET[((random >> (i * 5)) & 31) as usize] as char);
        }
        // At least one letter, so an id is never a valid (lower-case) name.
        if out.bytes().any(|b| b.is_ascii_uppercase()) {
            return out;
        }
    }
}

/// Whether `s` has the shape of an id.
pub fn is_id(s: &str) -> bool {
    s.len() == 26
        && s.bytes().all(|b| ALPHABET.contains(&b))
        && s.bytes().any(|b| b.is_ascii_uppercase())
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
}
