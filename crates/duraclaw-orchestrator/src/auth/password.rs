//! User names, password rules and argon2id hashing.

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use duraclaw_core::backend::web::credentials;
use duraclaw_core::{Error, Result};

pub use duraclaw_core::backend::web::credentials::MAX_PASSWORD_BYTES;

/// How costly a new password hash is.
///
/// Verifying always uses the cost recorded in the stored hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HashCost {
    /// argon2's recommended parameters (argon2id, 19 MiB, 2 passes, 1 lane).
    #[default]
    Recommended,
    /// The smallest cost argon2 allows, so that tests stay fast. Only in
    /// test builds: a released binary cannot make weak hashes.
    #[cfg(test)]
    Minimal,
}

impl HashCost {
    fn params(self) -> Params {
        match self {
            HashCost::Recommended => Params::default(),
            #[cfg(test)]
            HashCost::Minimal => Params::new(Params::MIN_M_COST, 1, 1, None).unwrap_or_default(),
        }
    }
}

/// Checks that `name` is 1 to 64 characters of `A-Z a-z 0-9 . _ -`
/// (core's rule).
pub fn validate_name(name: &str) -> Result<()> {
    credentials::validate_name(name).map_err(Error::Invalid)
}

/// Checks a new password's length (core's rule). The password never
/// appears in the error.
pub fn validate_password(password: &str) -> Result<()> {
    credentials::validate_password(password).map_err(Error::Invalid)
}

/// Hashes new passwords and verifies passwords against stored hashes.
pub(super) struct PasswordHashing {
    argon2: Argon2<'static>,
    /// Verified against when the user does not exist, so that a missing user
    /// costs the same time as a wrong password.
    dummy_hash: String,
    /// How many verifications ran: tests check that a missing user costs one.
    #[cfg(test)]
    pub(super) verifications: std::sync::atomic::AtomicUsize,
}

impl PasswordHashing {
    /// Set up with `cost`; computes the dummy hash, so call it off the
    /// async executor.
    pub(super) fn new(cost: HashCost) -> Result<Self> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, cost.params());
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| Error::Invalid(format!("the OS random generator failed: {e}")))?;
        let dummy_hash = hash_with(&argon2, &secret)?;
        Ok(PasswordHashing {
            argon2,
            dummy_hash,
            #[cfg(test)]
            verifications: Default::default(),
        })
    }

    /// A new argon2id hash of `password`, as a PHC string with a random salt.
    pub(super) fn hash(&self, password: &str) -> Result<String> {
        hash_with(&self.argon2, password.as_bytes())
    }

    /// Whether `password` matches `stored`; when `stored` is `None` (no such
    /// user) a hash is still computed, and the answer is `false`.
    pub(super) fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let hash = stored.unwrap_or(&self.dummy_hash);
        #[cfg(test)]
        self.verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let matches = match self.argon2.verify_password(password.as_bytes(), hash) {
            Ok(()) => true,
            Err(argon2::password_hash::Error::PasswordInvalid) => false,
            Err(e) => {
                tracing::error!(error = %e, "a stored password hash cannot be read");
                false
            }
        };
        matches && stored.is_some()
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &[u8]) -> Result<String> {
    argon2
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| Error::Invalid(format!("cannot hash the password: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_are_cores_as_invalid_errors() {
        assert!(validate_name("alice").is_ok());
        assert!(matches!(validate_name("al ice"), Err(Error::Invalid(_))));
        let err = validate_password("short-pw1").unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("at least 10")),
            "{err}"
        );
        assert!(validate_password("correct horse battery").is_ok());
    }

    #[test]
    fn hashes_are_argon2id_with_the_recommended_cost_by_default() {
        assert_eq!(HashCost::default(), HashCost::Recommended);
        let recommended = HashCost::Recommended.params();
        assert_eq!(recommended.m_cost(), Params::DEFAULT_M_COST);
        assert_eq!(recommended.t_cost(), Params::DEFAULT_T_COST);
        assert_eq!(recommended.p_cost(), Params::DEFAULT_P_COST);

        let hashing = PasswordHashing::new(HashCost::Minimal).unwrap();
        let hash = hashing.hash("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(hashing.verify("correct horse battery", Some(&hash)));
        assert!(!hashing.verify("correct horse batterY", Some(&hash)));
        assert!(!hashing.verify("correct horse battery", None));
        assert!(!hashing.verify("correct horse battery", Some("not a hash")));
        // Salted: the same password hashes differently each time.
        assert_ne!(hash, hashing.hash("correct horse battery").unwrap());
    }
}
