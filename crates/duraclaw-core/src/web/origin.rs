//! The Origin rule of both hosts: state-changing requests (anything but
//! `GET`, `HEAD` and `OPTIONS`) and WebSocket upgrades must carry exactly
//! one `Origin`, equal to the configured public origin or else to the
//! origin the request came in on.
//!
//! It works on header values as strings; each host reads its own header
//! types.

/// The message of every refused cross-origin request.
pub const CROSS_ORIGIN: &str = "cross-origin request refused";

/// Whether a request with this method and `Upgrade` header must pass the
/// Origin check.
pub fn needs_origin_check(method: &str, upgrade: Option<&str>) -> bool {
    let safe = ["GET", "HEAD", "OPTIONS"]
        .iter()
        .any(|m| method.eq_ignore_ascii_case(m));
    !safe || upgrade.is_some_and(is_websocket_upgrade)
}

/// Whether an `Upgrade` header asks for a WebSocket.
pub fn is_websocket_upgrade(upgrade: &str) -> bool {
    upgrade
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Accepts an `Origin` header equal to `public_origin` when one is
/// configured, else to the origin of `request_url`. Scheme and host compare
/// without case and a default port is the same as none. A missing `Origin`,
/// several (joined by `, `), `null` or anything that is not an http(s)
/// origin is refused.
pub fn origin_allowed(
    origin_header: Option<&str>,
    public_origin: Option<&str>,
    request_url: &str,
) -> bool {
    let Some(origin) = origin_header.and_then(normalize_origin) else {
        return false;
    };
    let expected = match public_origin {
        Some(public) => normalize_origin(public.trim_end_matches('/')),
        None => url_origin(request_url).and_then(|o| normalize_origin(&o)),
    };
    expected.as_deref() == Some(origin.as_str())
}

/// `scheme://authority` of an absolute URL, if it is one.
pub fn url_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(format!("{scheme}://{}", &rest[..end]))
}

/// Whether `url` is an `https` URL.
pub fn is_https(url: &str) -> bool {
    url.get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("https:"))
}

/// `scheme://host[:port]` lower-cased, without a default port, if `text` is
/// an http or https origin; `None` for anything else (paths, user info,
/// `null`, spaces, lists).
pub fn normalize_origin(text: &str) -> Option<String> {
    let (scheme, authority) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port: u16 = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = authority.to_ascii_lowercase();
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: `[…]` then an optional `:port`.
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            let ok = !inside.is_empty()
                && inside
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (ok.then(|| format!("[{inside}]"))?, port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority.as_str(), None),
            };
            let ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            (ok.then(|| host.to_owned())?, port)
        }
    };
    let port = match port {
        None => None,
        Some(digits) => {
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            Some(digits.parse::<u16>().ok()?).filter(|p| *p != default_port)
        }
    };
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn which_requests_are_checked() {
        assert!(!needs_origin_check("GET", None));
        assert!(!needs_origin_check("head", None));
        assert!(!needs_origin_check("OPTIONS", Some("h2c")));
        assert!(needs_origin_check("GET", Some("websocket")));
        assert!(needs_origin_check("GET", Some("foo, WebSocket")));
        for m in ["POST", "PUT", "PATCH", "DELETE", "BREW"] {
            assert!(needs_origin_check(m, None), "{m}");
        }
    }

    #[test]
    fn origins_match_the_request_url_or_the_public_origin() {
        let url = "http://127.0.0.1:8787/api/login";
        assert!(origin_allowed(Some("http://127.0.0.1:8787"), None, url));
        assert!(origin_allowed(Some("HTTP://127.0.0.1:8787"), None, url));
        assert!(!origin_allowed(Some("http://127.0.0.1:8788"), None, url));
        assert!(!origin_allowed(Some("http://evil.example"), None, url));
        assert!(!origin_allowed(None, None, url));
        assert!(!origin_allowed(Some("null"), None, url));
        assert!(!origin_allowed(
            Some("http://127.0.0.1:8787, http://127.0.0.1:8787"),
            None,
            url
        ));
        let url = "https://claw.example.com/api/x?y";
        assert!(origin_allowed(
            Some("https://claw.example.com:443"),
            None,
            url
        ));
        assert!(!origin_allowed(Some("http://claw.example.com"), None, url));
        let public = Some("https://claw.example.com/");
        assert!(origin_allowed(
            Some("https://claw.example.com"),
            public,
            "http://internal/x"
        ));
        assert!(!origin_allowed(
            Some("http://internal"),
            public,
            "http://internal/x"
        ));
    }

    #[test]
    fn url_parts() {
        assert_eq!(
            url_origin("https://a.b:1/c/d").as_deref(),
            Some("https://a.b:1")
        );
        assert_eq!(url_origin("http://a?x").as_deref(), Some("http://a"));
        assert_eq!(url_origin("nope"), None);
        assert!(is_https("HTTPS://x"));
        assert!(!is_https("http://x"));
        assert!(!is_https("h"));
    }

    #[test]
    fn normalization() {
        let n = normalize_origin;
        assert_eq!(
            n("http://localhost:8787").as_deref(),
            Some("http://localhost:8787")
        );
        assert_eq!(
            n("HTTPS://A.example:443").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            n("http://a.example:80").as_deref(),
            Some("http://a.example")
        );
        assert_eq!(
            n("http://a.example:443").as_deref(),
            Some("http://a.example:443")
        );
        assert_eq!(n("http://[::1]:8787").as_deref(), Some("http://[::1]:8787"));
        assert_eq!(n("http://[::1]").as_deref(), Some("http://[::1]"));
        assert_eq!(
            n("http://127.0.0.1:08787").as_deref(),
            Some("http://127.0.0.1:8787")
        );
        assert_eq!(
            normalize_origin("http://[::1]:80").as_deref(),
            Some("http://[::1]")
        );
        assert_eq!(
            normalize_origin("https://Example.COM:8443").as_deref(),
            Some("https://example.com:8443")
        );
        for bad in [
            "ftp://x",
            "http://",
            "http://a b",
            "http://u@h",
            "http://h/p",
            "http://h:99999",
            "http://h:",
            "http://[zz]",
            "http://[::1]x",
            "null",
            "",
            "localhost:8787",
            "http://a.example/",
            "http://a.example:8x",
            "http://[::1",
            "http://[]",
            "http://a.example?x",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_header_text_is_handled(origin in ".{0,80}", url in ".{0,80}", public in proptest::option::of(".{0,40}")) {
            // Never panics, and only ever accepts a normalizable origin.
            if origin_allowed(Some(&origin), public.as_deref(), &url) {
                prop_assert!(normalize_origin(&origin).is_some());
            }
            let _ = needs_origin_check(&origin, Some(&url));
        }
    }
}
