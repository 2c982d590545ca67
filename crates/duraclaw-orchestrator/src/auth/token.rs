//! Login session tokens and the `duraclaw_session` cookie that carries them.

use std::fmt;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use duraclaw_core::backend::web::hex;
use duraclaw_core::{Error, Result};
use sha2::{Digest, Sha256};

/// The cookie's name.
pub const COOKIE_NAME: &str = "duraclaw_session";

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Characters of a token in base64url without padding.
const TOKEN_CHARS: usize = 43;
/// How many `duraclaw_session` cookies of one request are tried.
const MAX_CANDIDATES: usize = 4;

/// A login session token: 32 bytes from the OS random generator. Only its
/// SHA-256 is stored; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct SessionToken([u8; TOKEN_BYTES]);

impl SessionToken {
    /// A new random token.
    pub(super) fn generate() -> Result<Self> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Invalid(format!("the OS random generator failed: {e}")))?;
        Ok(SessionToken(bytes))
    }

    /// The token as sent in the cookie: base64url without padding.
    pub(super) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// A token read from a cookie value, if it is one.
    pub(super) fn decode(text: &str) -> Option<Self> {
        if text.len() != TOKEN_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        bytes.try_into().ok().map(SessionToken)
    }

    /// The hex SHA-256 of the token: the only form the database holds.
    pub(super) fn digest(&self) -> String {
        hex(&Sha256::digest(self.0))
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(…)")
    }
}

/// A new random secret, 32 bytes in base64url without padding (43
/// characters), for anything that needs an unguessable string.
pub fn random_token() -> Result<String> {
    SessionToken::generate().map(|t| t.encode())
}

/// The well-formed session tokens in a request's `Cookie` headers, in the
/// order sent (at most a few). Anything malformed is skipped: a cookie
/// header is outside input and must never fail the request by itself.
pub(super) fn session_tokens(headers: &HeaderMap) -> Vec<SessionToken> {
    let mut tokens = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            let (name, value) = (&pair[..eq], &pair[eq + 1..]);
            if name.trim_ascii() != COOKIE_NAME.as_bytes() {
                continue;
            }
            let mut value = value.trim_ascii();
            if let [b'"', inner @ .., b'"'] = value {
                value = inner;
            }
            let token = std::str::from_utf8(value)
                .ok()
                .and_then(SessionToken::decode);
            if let Some(token) = token
                && !tokens.contains(&token)
            {
                tokens.push(token);
                if tokens.len() == MAX_CANDIDATES {
                    return tokens;
                }
            }
        }
    }
    tokens
}

/// The `Set-Cookie` value that stores `token` for `max_age`.
pub(super) fn set_cookie(token: &SessionToken, max_age: Duration, secure: bool) -> HeaderValue {
    cookie_header(&token.encode(), max_age.as_secs(), secure)
}

/// The `Set-Cookie` value that deletes the cookie.
pub(super) fn clear_cookie(secure: bool) -> HeaderValue {
    cookie_header("", 0, secure)
}

fn cookie_header(value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}"
    );
    // Made of base64url, digits and fixed ASCII: always a valid header value.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                map.append(header::COOKIE, v);
            }
        }
        map
    }

    #[test]
    fn tokens_round_trip_and_hash_to_hex_sha256() {
        let token = SessionToken::generate().unwrap();
        let text = token.encode();
        assert_eq!(text.len(), TOKEN_CHARS);
        assert_eq!(SessionToken::decode(&text), Some(token.clone()));
        assert_eq!(token.digest().len(), 64);
        assert_ne!(token.digest(), SessionToken::generate().unwrap().digest());
        assert_eq!(format!("{token:?}"), "SessionToken(…)");
        // SHA-256 of 32 zero bytes.
        assert_eq!(
            SessionToken([0; 32]).digest(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert_eq!(random_token().unwrap().len(), TOKEN_CHARS);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let token = SessionToken::generate().unwrap();
        let t = token.encode();
        let cases = [
            format!("duraclaw_session={t}"),
            format!("a=b; duraclaw_session={t}; c=d"),
            format!("  a=b ;duraclaw_session = {t} ;"),
            format!("duraclaw_session=\"{t}\""),
            format!("duraclaw_session=garbage; duraclaw_session={t}"),
            format!("x; ;=;duraclaw_session;duraclaw_session={t}"),
        ];
        for case in cases {
            assert_eq!(
                session_tokens(&headers(&[case.as_bytes()])),
                vec![token.clone()],
                "{case}"
            );
        }
        let two = headers(&[b"a=b", format!("duraclaw_session={t}").as_bytes()]);
        assert_eq!(session_tokens(&two), vec![token.clone()]);
        assert!(session_tokens(&headers(&[b"duraclaw_session="])).is_empty());
        assert!(session_tokens(&headers(&[&t.as_bytes()[1..]])).is_empty());
        let non_utf8 = headers(&[b"duraclaw_session=\xff\xfe; a=\x80"]);
        assert!(session_tokens(&non_utf8).is_empty());
    }

    #[test]
    fn cookie_flags() {
        let token = SessionToken::generate().unwrap();
        let set = set_cookie(&token, Duration::from_secs(60), false);
        let set = set.to_str().unwrap();
        assert_eq!(
            set,
            format!(
                "duraclaw_session={}; HttpOnly; SameSite=Strict; Path=/; Max-Age=60",
                token.encode()
            )
        );
        let secure = set_cookie(&token, Duration::from_secs(60), true);
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
        assert_eq!(
            clear_cookie(false).to_str().unwrap(),
            "duraclaw_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        );
    }

    proptest! {
        #[test]
        fn garbage_cookie_headers_never_panic(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..4),
            token in proptest::option::of(any::<[u8; 32]>()),
        ) {
            let mut values = values;
            if let Some(bytes) = token {
                let mut v = b"junk; duraclaw_session=".to_vec();
                v.extend_from_slice(SessionToken(bytes).encode().as_bytes());
                values.push(v);
            }
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let found = session_tokens(&headers(&refs));
            prop_assert!(found.len() <= MAX_CANDIDATES);
        }
    }
}
