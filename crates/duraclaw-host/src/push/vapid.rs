//! The application server's key (RFC 8292, VAPID): a P-256 key pair whose
//! public half browsers subscribe with, and the `Authorization: vapid`
//! header it signs for each push.
//!
//! The JWT is signed here with `p256` (ES256, RFC 6979 deterministic
//! nonces) rather than by web-push-native's `vapid` feature: that one sets
//! `aud` without the endpoint's port and reads the wall clock, and this
//! crate takes the time from its caller.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;

use crate::auth::token::hmac_sha256;

/// How long a VAPID JWT is valid: 12 hours (RFC 8292 allows at most 24).
pub const JWT_VALID_SECS: u64 = 12 * 60 * 60;

/// What the action-token key is derived with (the contract between the
/// push sender and `push::action`).
pub const ACTION_KEY_INFO: &[u8] = b"duraclaw push action v1";

/// A VAPID key pair. `Debug` does not show the private key.
#[derive(Clone)]
pub struct VapidKey {
    key: SigningKey,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// Why a stored private key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub &'static str);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for KeyError {}

impl VapidKey {
    /// A new random key pair (from the operating system's, or on wasm32
    /// the JS host's, random source).
    pub fn generate() -> Self {
        VapidKey {
            key: SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng),
        }
    }

    /// The key pair of a 32-byte private scalar.
    pub fn from_bytes(secret: &[u8]) -> Result<Self, KeyError> {
        let key = SigningKey::from_slice(secret)
            .map_err(|_| KeyError("the VAPID private key is not a P-256 private key"))?;
        Ok(VapidKey { key })
    }

    /// The key pair of a base64url private scalar (as stored and as the
    /// Cloudflare secret holds it); surrounding whitespace is ignored.
    pub fn from_base64url(text: &str) -> Result<Self, KeyError> {
        let bytes = B64
            .decode(text.trim().trim_end_matches('='))
            .map_err(|_| KeyError("the VAPID private key is not base64url"))?;
        Self::from_bytes(&bytes)
    }

    /// The private scalar, base64url without padding: a secret.
    pub fn private_base64url(&self) -> String {
        B64.encode(self.private_bytes())
    }

    fn private_bytes(&self) -> [u8; 32] {
        self.key.to_bytes().into()
    }

    /// The public key as browsers take it (`applicationServerKey`):
    /// the uncompressed point, base64url without padding.
    pub fn public_key(&self) -> String {
        let point = self.key.verifying_key().as_affine().to_encoded_point(false);
        B64.encode(point.as_bytes())
    }

    /// The key action tokens are signed with:
    /// `hmac_sha256(private key, "duraclaw push action v1")`.
    pub fn action_key(&self) -> [u8; 32] {
        hmac_sha256(&self.private_bytes(), ACTION_KEY_INFO)
    }

    /// The `Authorization` header of a push to `endpoint` at `now_ms`:
    /// `vapid t=<JWT>, k=<public key>`, the JWT's `aud` the endpoint's
    /// origin, `exp` [`JWT_VALID_SECS`] later, `sub` the contact.
    pub fn authorization(
        &self,
        endpoint: &str,
        contact: &str,
        now_ms: i64,
    ) -> Result<String, KeyError> {
        let aud = origin(endpoint).ok_or(KeyError("the push endpoint is not an https URL"))?;
        let exp = u64::try_from(now_ms).unwrap_or(0) / 1000 + JWT_VALID_SECS;
        let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": aud, "exp": exp, "sub": contact });
        let claims = B64.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        let signature: Signature = self.key.sign(signed.as_bytes());
        let jwt = format!("{signed}.{}", B64.encode(signature.to_bytes()));
        Ok(format!("vapid t={jwt}, k={}", self.public_key()))
    }
}

/// The origin of an `https` URL (`https://host[:port]`, the host in lower
/// case, the default port left out); `None` for anything else.
pub fn origin(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(":443").unwrap_or(&authority);
    let ok = authority
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    ok.then(|| format!("https://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier as _;

    #[test]
    fn a_stored_key_reads_back_the_same() {
        let key = VapidKey::generate();
        let again = VapidKey::from_base64url(&key.private_base64url()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        assert_eq!(key.action_key(), again.action_key());
        assert_eq!(B64.decode(key.public_key()).unwrap().len(), 65);
        assert!(!format!("{key:?}").contains(&key.private_base64url()));
        assert!(VapidKey::from_base64url("not base64!").is_err());
        assert!(VapidKey::from_bytes(&[0; 32]).is_err());
        assert!(VapidKey::from_bytes(&[1; 5]).is_err());
    }

    #[test]
    fn the_authorization_is_a_verifiable_es256_jwt_for_the_origin() {
        let key = VapidKey::generate();
        let header = key
            .authorization(
                "https://Push.Example:8443/wpush/v2/abc?x=1",
                "mailto:ops@example.com",
                1_700_000_000_123,
            )
            .unwrap();
        let (t, k) = header
            .strip_prefix("vapid t=")
            .unwrap()
            .split_once(", k=")
            .unwrap();
        assert_eq!(k, key.public_key());
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example:8443");
        assert_eq!(claims["exp"], 1_700_000_000 + JWT_VALID_SECS);
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let public = VerifyingKey::from_sec1_bytes(&B64.decode(k).unwrap()).unwrap();
        let sig = Signature::from_slice(&B64.decode(parts[2]).unwrap()).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        public.verify(signed.as_bytes(), &sig).unwrap();
        assert!(public.verify(b"other", &sig).is_err());
    }

    #[test]
    fn origins() {
        assert_eq!(origin("https://a.b/x").as_deref(), Some("https://a.b"));
        assert_eq!(origin("https://a.b:443/x").as_deref(), Some("https://a.b"));
        assert_eq!(
            origin("https://127.0.0.1:9/x").as_deref(),
            Some("https://127.0.0.1:9")
        );
        assert_eq!(origin("http://a.b/x"), None);
        assert_eq!(origin("https://user@a.b/x"), None);
        assert_eq!(origin("https:///x"), None);
        assert_eq!(origin("https://a b/x"), None);
    }
}
