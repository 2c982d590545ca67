//! Login tokens, their digests, the `duraclaw_session` cookie that carries
//! them, and the `Authorization: Bearer` token.
//!
//! The random bytes come from the host (the OS generator locally,
//! WebCrypto's `getRandomValues` on Workers).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

pub use duraclaw_core::backend::web::hex;

/// The cookie's name.
pub const COOKIE_NAME: &str = "duraclaw_session";

/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;
/// Characters of a token in base64url without padding.
const TOKEN_CHARS: usize = 43;
/// How many `duraclaw_session` cookies of one request are tried.
pub const MAX_CANDIDATES: usize = 4;

/// A login session token: 32 random bytes. Only a digest of it is stored
/// ([`SessionToken::digest`]); `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken([u8; TOKEN_BYTES]);

impl SessionToken {
    /// The token made of these random bytes.
    pub fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> Self {
        SessionToken(bytes)
    }

    /// The token as sent in the cookie: base64url without padding.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// A token read from a cookie value, if it is one.
    pub fn decode(text: &str) -> Option<Self> {
        if text.len() != TOKEN_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        bytes.try_into().ok().map(SessionToken)
    }

    /// The form the database holds: the hex HMAC-SHA256 of the token keyed
    /// with `secret` when there is one, else its hex SHA-256.
    pub fn digest(&self, secret: Option<&[u8]>) -> String {
        match secret {
            Some(key) => hex(&hmac_sha256(key, &self.0)),
            None => hex(&Sha256::digest(self.0)),
        }
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(…)")
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The well-formed session tokens in a request's `Cookie` header (several
/// headers may arrive joined by `, `), in the order sent, at most
/// [`MAX_CANDIDATES`]. Anything malformed is skipped: a cookie header is
/// outside input and never fails the request by itself.
pub fn session_tokens(cookie_header: &str) -> Vec<SessionToken> {
    session_tokens_in([cookie_header])
}

/// [`session_tokens`] over several `Cookie` headers, in the order sent.
pub fn session_tokens_in<'a>(headers: impl IntoIterator<Item = &'a str>) -> Vec<SessionToken> {
    let mut tokens = Vec::new();
    for pair in headers.into_iter().flat_map(|h| h.split([';', ','])) {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        if name.trim() != COOKIE_NAME {
            continue;
        }
        let mut value = value.trim();
        if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            value = inner;
        }
        if let Some(token) = SessionToken::decode(value)
            && !tokens.contains(&token)
        {
            tokens.push(token);
            if tokens.len() == MAX_CANDIDATES {
                break;
            }
        }
    }
    tokens
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether the cookie is marked `Secure`: when browsers reach the server at
/// an `https` public origin, or the request came in over HTTPS.
pub fn secure_cookie(public_origin: Option<&str>, request_is_https: bool) -> bool {
    public_origin.is_some_and(duraclaw_core::backend::web::origin::is_https) || request_is_https
}

/// The `Set-Cookie` value that stores `token` for `max_age_secs`.
pub fn set_cookie(token: &SessionToken, max_age_secs: u64, secure: bool) -> String {
    cookie_header(&token.encode(), max_age_secs, secure)
}

/// The `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(secure: bool) -> String {
    cookie_header("", 0, secure)
}

fn cookie_header(value: &str, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token(n: u8) -> SessionToken {
        SessionToken::from_bytes([n; TOKEN_BYTES])
    }

    #[test]
    fn tokens_round_trip_and_digest_to_hex() {
        let t = token(7);
        let text = t.encode();
        assert_eq!(text.len(), TOKEN_CHARS);
        assert_eq!(SessionToken::decode(&text), Some(t.clone()));
        assert_eq!(format!("{t:?}"), "SessionToken(…)");
        // SHA-256 of 32 zero bytes: the digest of an unkeyed host.
        assert_eq!(
            token(0).digest(None),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        let keyed = token(0).digest(Some(b"secret"));
        assert_eq!(keyed.len(), 64);
        assert_ne!(keyed, token(0).digest(None));
        assert_ne!(keyed, token(0).digest(Some(b"other")));
        assert_ne!(token(0).digest(None), token(1).digest(None));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1.
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let t = token(9);
        let s = t.encode();
        let cases = [
            format!("duraclaw_session={s}"),
            format!("a=b; duraclaw_session={s}; c=d"),
            format!("  a=b ;duraclaw_session = {s} ;"),
            format!("duraclaw_session=\"{s}\""),
            format!("duraclaw_session=garbage; duraclaw_session={s}"),
            format!("x; ;=;duraclaw_session;duraclaw_session={s}"),
            // Two Cookie headers, joined by the runtime.
            format!("a=b, duraclaw_session={s}"),
        ];
        for case in cases {
            assert_eq!(session_tokens(&case), vec![t.clone()], "{case}");
        }
        assert!(session_tokens("duraclaw_session=").is_empty());
        assert!(session_tokens(&s[1..]).is_empty());
        assert!(session_tokens(&format!("duraclaw_session={}", &s[1..])).is_empty());
        assert!(session_tokens(&format!("Duraclaw_Session={s}")).is_empty());
        assert!(session_tokens("duraclaw_session=\u{fffd}\u{fffd}; a=\u{80}").is_empty());
    }

    #[test]
    fn several_cookie_headers_are_read_in_order() {
        let (a, b) = (token(1), token(2));
        let found = session_tokens_in([
            format!("x=y; duraclaw_session={}", a.encode()).as_str(),
            format!("duraclaw_session={}", b.encode()).as_str(),
        ]);
        assert_eq!(found, vec![a, b]);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token(""), None);
    }

    #[test]
    fn the_cookie_is_secure_behind_https() {
        assert!(secure_cookie(Some("HTTPS://claw.example.com"), false));
        assert!(secure_cookie(None, true));
        assert!(!secure_cookie(Some("http://127.0.0.1:8080"), false));
        assert!(!secure_cookie(None, false));
    }

    #[test]
    fn cookie_flags() {
        let t = token(3);
        assert_eq!(
            set_cookie(&t, 60, false),
            format!(
                "duraclaw_session={}; HttpOnly; SameSite=Strict; Path=/; Max-Age=60",
                t.encode()
            )
        );
        assert!(set_cookie(&t, 60, true).ends_with("; Max-Age=60; Secure"));
        assert_eq!(
            clear_cookie(false),
            "duraclaw_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        );
    }

    proptest! {
        #[test]
        fn garbage_cookie_headers_never_panic(
            junk in ".{0,300}",
            bytes in proptest::option::of(any::<[u8; 32]>()),
        ) {
            let mut header = junk.clone();
            if let Some(bytes) = bytes {
                header.push_str("; duraclaw_session=");
                header.push_str(&SessionToken::from_bytes(bytes).encode());
            }
            let found = session_tokens(&header);
            prop_assert!(found.len() <= MAX_CANDIDATES);
            if let Some(bytes) = bytes {
                // Junk before it cannot hide a well-formed token, unless the
                // junk already held four.
                let t = SessionToken::from_bytes(bytes);
                prop_assert!(found.contains(&t) || found.len() == MAX_CANDIDATES);
            }
        }

        #[test]
        fn any_token_round_trips(bytes in any::<[u8; 32]>()) {
            let t = SessionToken::from_bytes(bytes);
            prop_assert_eq!(SessionToken::decode(&t.encode()), Some(t.clone()));
            prop_assert_eq!(session_tokens(&set_cookie(&t, 1, true)), vec![t]);
        }
    }
}
