//! User names and the password rules. The error texts never repeat a
//! password.

/// The fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// The most bytes a password may have; no one types more, and it bounds
/// the work of hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The most characters a user name may have.
pub const MAX_NAME_CHARS: usize = 64;

/// Checks that `name` is 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(MAX_NAME_CHARS + 1).collect();
        Err(format!(
            "user name {shown:?} is not valid: use 1 to {MAX_NAME_CHARS} characters of \
             A-Z, a-z, 0-9, '.', '_' and '-'"
        ))
    }
}

/// Checks a new password's length. The password never appears in the error.
pub fn validate_password(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password has {chars} characters; it needs at least {MIN_PASSWORD_CHARS}"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password has {} bytes; at most {MAX_PASSWORD_BYTES} are accepted",
            password.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "alice", "A.b_c-9", &"x".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "al ice",
            "alice!",
            "ålice",
            "a/b",
            &"x".repeat(65),
            "a\0",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_too_short_or_too_long_are_refused_without_echo() {
        let err = validate_password("short-pw1").unwrap_err();
        assert!(err.contains("at least 10"), "{err}");
        assert!(!err.contains("short-pw1"), "{err}");
        // Characters, not bytes: ten non-ASCII characters are enough.
        assert!(validate_password("éééééééééé").is_ok());
        assert!(validate_password(&"x".repeat(MAX_PASSWORD_BYTES)).is_ok());
        assert!(validate_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
