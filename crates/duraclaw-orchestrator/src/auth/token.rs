//! The login token rules of `duraclaw_host::auth::token` over axum's header
//! types, with tokens from the OS random generator.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use duraclaw_core::{Error, Result};
use duraclaw_host::auth::token::{self, TOKEN_BYTES};

pub use duraclaw_host::auth::token::COOKIE_NAME;
pub(super) use duraclaw_host::auth::token::SessionToken;

/// A new random login token.
pub(super) fn generate() -> Result<SessionToken> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Invalid(format!("the OS random generator failed: {e}")))?;
    Ok(SessionToken::from_bytes(bytes))
}

/// The hex SHA-256 of the token: the only form the database holds (the
/// local host keys no digest).
pub(super) fn digest(token: &SessionToken) -> String {
    token.digest(None)
}

/// A new random secret, 32 bytes in base64url without padding (43
/// characters), for anything that needs an unguessable string.
pub fn random_token() -> Result<String> {
    generate().map(|t| t.encode())
}

/// The well-formed session tokens in a request's `Cookie` headers, in the
/// order sent (at most a few); a header that is not text is skipped.
pub(super) fn session_tokens(headers: &HeaderMap) -> Vec<SessionToken> {
    let values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok());
    token::session_tokens_in(values)
}

/// The `Set-Cookie` value that stores `token` for `max_age`.
pub(super) fn set_cookie(token: &SessionToken, max_age: Duration, secure: bool) -> HeaderValue {
    header_value(token::set_cookie(token, max_age.as_secs(), secure))
}

/// The `Set-Cookie` value that deletes the cookie.
pub(super) fn clear_cookie(secure: bool) -> HeaderValue {
    header_value(token::clear_cookie(secure))
}

fn header_value(text: String) -> HeaderValue {
    // Made of base64url, digits and fixed ASCII: always a valid header value.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_every_cookie_header_and_skip_non_text() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_ne!(a, b);
        assert_eq!(random_token().unwrap().len(), 43);
        let mut headers = HeaderMap::new();
        for v in [
            format!("x=y; {COOKIE_NAME}={}", a.encode()).into_bytes(),
            b"duraclaw_session=\xff\xfe".to_vec(),
            format!("{COOKIE_NAME}={}", b.encode()).into_bytes(),
        ] {
            headers.append(header::COOKIE, HeaderValue::from_bytes(&v).unwrap());
        }
        assert_eq!(session_tokens(&headers), vec![a.clone(), b]);
        let set = set_cookie(&a, Duration::from_secs(60), true);
        assert!(set.to_str().unwrap().ends_with("; Max-Age=60; Secure"));
        assert!(clear_cookie(false).to_str().unwrap().ends_with("Max-Age=0"));
        // SHA-256 of 32 zero bytes: what databases in the field hold.
        assert_eq!(
            digest(&SessionToken::from_bytes([0; 32])),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }
}
