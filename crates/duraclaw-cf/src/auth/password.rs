//! The stored form of a password hash; the user name and password rules
//! are core's, re-exported.
//!
//! Hashes are PBKDF2-HMAC-SHA256, computed by WebCrypto on Workers (see
//! `crypto`), stored as `$pbkdf2-sha256$i=<iterations>$<salt>$<hash>`
//! (salt and hash in base64 without padding). The iteration count is part
//! of the stored form, so it can be raised later: a stored hash is always
//! verified with its own count.
//!
//! Target-independent.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use subtle::ConstantTimeEq;

pub use duraclaw_core::backend::web::credentials::{
    MAX_NAME_CHARS, MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS, validate_name, validate_password,
};

/// PBKDF2 iterations of new hashes: the most the Workers runtime accepts
/// (in production it refuses more than 100 000 with a `NotSupportedError`;
/// the open-source workerd under `wrangler dev` does not enforce that cap).
pub const PBKDF2_ITERATIONS: u32 = 100_000;
/// The fewest iterations a stored hash may have to be accepted at all.
pub const MIN_ITERATIONS: u32 = 10_000;
/// Salt bytes of new hashes.
pub const SALT_BYTES: usize = 16;
/// Derived bytes (the SHA-256 output size).
pub const HASH_BYTES: usize = 32;

const PREFIX: &str = "$pbkdf2-sha256$i=";

/// A PBKDF2-SHA256 password hash with its parameters.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// The derived key.
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHash")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl PasswordHash {
    /// The stored form.
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}{}${}${}",
            self.iterations,
            STANDARD_NO_PAD.encode(&self.salt),
            STANDARD_NO_PAD.encode(&self.hash)
        )
    }

    /// Reads a stored form; `None` for anything else, an iteration count
    /// outside [`MIN_ITERATIONS`]..=[`PBKDF2_ITERATIONS`] included.
    pub fn decode(text: &str) -> Option<PasswordHash> {
        let rest = text.strip_prefix(PREFIX)?;
        let mut parts = rest.split('$');
        let (Some(iterations), Some(salt), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if iterations.is_empty()
            || iterations.len() > 9
            || !iterations.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let iterations: u32 = iterations.parse().ok()?;
        if !(MIN_ITERATIONS..=PBKDF2_ITERATIONS).contains(&iterations) {
            return None;
        }
        let salt = STANDARD_NO_PAD.decode(salt).ok()?;
        let hash = STANDARD_NO_PAD.decode(hash).ok()?;
        if salt.len() < 8 || salt.len() > 64 || hash.len() != HASH_BYTES {
            return None;
        }
        Some(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }

    /// Whether `derived` equals this hash, in constant time.
    pub fn matches(&self, derived: &[u8]) -> bool {
        bool::from(self.hash.as_slice().ct_eq(derived))
    }

    /// Whether this hash is weaker than new ones, so a successful login
    /// should store a new one.
    pub fn needs_rehash(&self) -> bool {
        self.iterations < PBKDF2_ITERATIONS || self.salt.len() < SALT_BYTES
    }
}

/// Whether two secrets are equal, in time that depends on their lengths only.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hashes_round_trip_and_compare() {
        let h = PasswordHash {
            iterations: PBKDF2_ITERATIONS,
            salt: vec![1; SALT_BYTES],
            hash: vec![2; HASH_BYTES],
        };
        let text = h.encode();
        assert!(text.starts_with("$pbkdf2-sha256$i=100000$"), "{text}");
        assert_eq!(PasswordHash::decode(&text), Some(h.clone()));
        assert!(h.matches(&[2; HASH_BYTES]));
        assert!(!h.matches(&[3; HASH_BYTES]));
        assert!(!h.matches(&[2; HASH_BYTES - 1]));
        assert!(!h.needs_rehash());
        let old = PasswordHash {
            iterations: 50_000,
            ..h.clone()
        };
        assert_eq!(PasswordHash::decode(&old.encode()), Some(old.clone()));
        assert!(old.needs_rehash());
        // Debug shows no bytes.
        assert_eq!(format!("{h:?}"), "PasswordHash { iterations: 100000, .. }");
    }

    #[test]
    fn malformed_hashes_are_refused() {
        let good = PasswordHash {
            iterations: 20_000,
            salt: vec![1; 16],
            hash: vec![2; 32],
        }
        .encode();
        assert!(PasswordHash::decode(&good).is_some());
        for bad in [
            "",
            "$argon2id$v=19$m=19456,t=2,p=1$abc$def",
            &good.replace("i=20000", "i=200000"),
            &good.replace("i=20000", "i=999"),
            &good.replace("i=20000", "i=+20000"),
            &good.replace("i=20000", "i="),
            &format!("{good}$"),
            &good[..good.len() - 2],
            "$pbkdf2-sha256$i=20000$!!$AAAA",
        ] {
            assert_eq!(PasswordHash::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn secret_compare() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
    }

    proptest! {
        #[test]
        fn decoding_any_text_never_panics(text in ".{0,200}") {
            if let Some(h) = PasswordHash::decode(&text) {
                prop_assert_eq!(PasswordHash::decode(&h.encode()), Some(h));
            }
        }

        #[test]
        fn any_hash_round_trips(iterations in MIN_ITERATIONS..=PBKDF2_ITERATIONS,
                                salt in proptest::collection::vec(any::<u8>(), 8..=64),
                                hash in any::<[u8; 32]>()) {
            let h = PasswordHash { iterations, salt, hash: hash.to_vec() };
            prop_assert_eq!(PasswordHash::decode(&h.encode()), Some(h));
        }
    }
}
