//! Session ids and the ids of the commands a host issues itself.

use duraclaw_core::protocol::MAX_SESSION_ID_BYTES;

/// Crockford's base32: no I, L, O or U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A session id: 26 characters of Crockford base32, the time (ms since the
/// epoch, 48 bits) then 80 bits of `noise`, so ids sort by creation time.
/// Not a secret (ownership is checked on every route): the host brings
/// noise that makes two ids of one millisecond differ.
pub fn session_id(now_ms: i64, noise: u128) -> String {
    let time = u128::try_from(now_ms.max(0)).unwrap_or(0) & ((1u128 << 48) - 1);
    let value = (time << 80) | (noise & ((1u128 << 80) - 1));
    (0..26)
        .rev()
        .map(|i| char::from(ALPHABET[((value >> (i * 5)) & 31) as usize]))
        .collect()
}

/// Whether `id` can name a session in a route: not empty, and at most
/// [`MAX_SESSION_ID_BYTES`]. Anything else answers 404 like a session that
/// does not exist.
pub fn is_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_SESSION_ID_BYTES
}

/// The id of the `execute` that starts session `session_id`.
pub fn execute_command_id(session_id: &str) -> String {
    format!("execute-{session_id}")
}

/// The id of the `close` of session `session_id` from the HTTP API.
pub fn close_command_id(session_id: &str) -> String {
    format!("close-{session_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_sort_by_time_and_are_url_safe() {
        let a = session_id(1_700_000_000_000, 7);
        let b = session_id(1_700_000_000_001, 0);
        let c = session_id(1_700_000_000_000, 8);
        assert_eq!(a.len(), 26);
        assert!(a < b && a != c);
        assert!(
            a.chars()
                .all(|ch| ch.is_ascii_digit() || ch.is_ascii_uppercase())
        );
        assert!(!a.contains(['I', 'L', 'O', 'U']));
        assert!(is_session_id(&a));
        // Before the epoch, or past 48 bits, still 26 characters.
        assert_eq!(session_id(-5, u128::MAX).len(), 26);
        assert_eq!(session_id(i64::MAX, 0).len(), 26);
    }

    #[test]
    fn route_ids_are_bounded() {
        assert!(!is_session_id(""));
        assert!(is_session_id(&"x".repeat(MAX_SESSION_ID_BYTES)));
        assert!(!is_session_id(&"x".repeat(MAX_SESSION_ID_BYTES + 1)));
        assert_eq!(execute_command_id("s1"), "execute-s1");
        assert_eq!(close_command_id("s1"), "close-s1");
    }
}
