//! The Origin rule of both hosts: state-changing requests (anything but
//! `GET`, `HEAD` and `OPTIONS`) and WebSocket upgrades must carry exactly
//! one `Origin`, and it must be one of the server's own origins
//! ([`OwnOrigin`]): the configured public origin when there is one; else,
//! on a server listening on a socket, its bound address or `localhost` with
//! its port — never whatever the `Host` header says, which a DNS-rebinding
//! page controls; on Cloudflare Workers, the request URL's origin (the edge
//! routes only the Worker's own hostnames to it).
//!
//! It works on header values as strings; each host reads its own header
//! types.

use std::net::{IpAddr, SocketAddr};

/// The message of every refused cross-origin request.
pub const CROSS_ORIGIN: &str = "cross-origin request refused";

/// What a server counts as its own origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnOrigin<'a> {
    /// The configured public origin (e.g. `https://claw.example.com`): it
    /// alone.
    Public(&'a str),
    /// A server listening on `bound`, reached over `scheme`: `bound`'s
    /// address with its port, and `localhost` with its port when `bound` is
    /// a loopback or unspecified address. Bound to an unspecified address
    /// (`0.0.0.0`, `::`), any IP literal with its port: a page can only
    /// carry an IP-literal origin if it was served from that address, so no
    /// DNS rebinding can forge one.
    Listener {
        /// `http`, or `https` behind a trusted TLS proxy.
        scheme: &'a str,
        /// The listener's actual address.
        bound: SocketAddr,
    },
    /// The origin of the request's URL, for a host that only ever receives
    /// requests for its own hostnames (Cloudflare routes a Worker's
    /// requests by hostname: a rebound name never reaches it).
    RequestUrl(&'a str),
}

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

/// Accepts an `Origin` header that is one of `own` origins. Scheme and
/// host compare without case and a default port is the same as none. A
/// missing `Origin`, several (joined by `, `), `null` or anything that is
/// not an http(s) origin is refused.
pub fn origin_allowed(origin_header: Option<&str>, own: OwnOrigin<'_>) -> bool {
    let Some(origin) = origin_header.and_then(normalize_origin) else {
        return false;
    };
    match own {
        OwnOrigin::Public(public) => {
            normalize_origin(public.trim_end_matches('/')).as_deref() == Some(origin.as_str())
        }
        OwnOrigin::RequestUrl(url) => {
            url_origin(url)
                .and_then(|o| normalize_origin(&o))
                .as_deref()
                == Some(origin.as_str())
        }
        OwnOrigin::Listener { scheme, bound } => listener_allows(&origin, scheme, bound),
    }
}

/// Whether the normalized `origin` is one of a listener's own.
fn listener_allows(origin: &str, scheme: &str, bound: SocketAddr) -> bool {
    let Some((origin_scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if !origin_scheme.eq_ignore_ascii_case(scheme) {
        return false;
    }
    let default_port = if origin_scheme == "https" { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => match port.parse::<u16>() {
            Ok(p) => (host, p),
            Err(_) => return false,
        },
        _ => (authority, default_port),
    };
    if port != bound.port() {
        return false;
    }
    let ip = bound.ip();
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<IpAddr>()
        .ok();
    if host == "localhost" {
        return ip.is_loopback() || ip.is_unspecified();
    }
    match literal {
        Some(literal) => ip.is_unspecified() || literal == ip,
        None => false,
    }
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

    fn listener(bound: &str) -> OwnOrigin<'static> {
        OwnOrigin::Listener {
            scheme: "http",
            bound: bound.parse().unwrap(),
        }
    }

    #[test]
    fn a_listener_accepts_its_address_and_localhost_only() {
        let own = listener("127.0.0.1:8787");
        for ok in [
            "http://127.0.0.1:8787",
            "HTTP://127.0.0.1:8787",
            "http://localhost:8787",
            "http://LocalHost:8787",
        ] {
            assert!(origin_allowed(Some(ok), own), "{ok}");
        }
        for refused in [
            // DNS rebinding: a name the attacker points at 127.0.0.1.
            "http://rebind.example:8787",
            "http://localhost.rebind.example:8787",
            "http://127.0.0.1:8788",
            "http://localhost:8788",
            "https://127.0.0.1:8787",
            "http://127.0.0.2:8787",
            "http://[::1]:8787",
            "http://127.0.0.1",
            "null",
        ] {
            assert!(!origin_allowed(Some(refused), own), "{refused}");
        }
        assert!(!origin_allowed(None, own));
        assert!(!origin_allowed(
            Some("http://127.0.0.1:8787, http://127.0.0.1:8787"),
            own
        ));
        // On the default port the origin carries none.
        let own = listener("127.0.0.1:80");
        assert!(origin_allowed(Some("http://localhost"), own));
        assert!(origin_allowed(Some("http://127.0.0.1:80"), own));
        assert!(!origin_allowed(Some("http://rebind.example"), own));
        // IPv6 loopback.
        let own = listener("[::1]:8787");
        assert!(origin_allowed(Some("http://[::1]:8787"), own));
        assert!(origin_allowed(Some("http://localhost:8787"), own));
        assert!(!origin_allowed(Some("http://127.0.0.1:8787"), own));
        // Behind a trusted TLS proxy on this machine.
        let https = OwnOrigin::Listener {
            scheme: "https",
            bound: "127.0.0.1:8443".parse().unwrap(),
        };
        assert!(origin_allowed(Some("https://localhost:8443"), https));
        assert!(!origin_allowed(Some("http://localhost:8443"), https));
    }

    #[test]
    fn a_public_bind_accepts_its_address_and_no_name() {
        let own = listener("192.168.1.5:8787");
        assert!(origin_allowed(Some("http://192.168.1.5:8787"), own));
        assert!(!origin_allowed(Some("http://localhost:8787"), own));
        assert!(!origin_allowed(Some("http://rebind.example:8787"), own));
        // Every address: any IP literal with the port, never a name but
        // localhost.
        let own = listener("0.0.0.0:8787");
        assert!(origin_allowed(Some("http://10.0.0.7:8787"), own));
        assert!(origin_allowed(Some("http://[fe80::1]:8787"), own));
        assert!(origin_allowed(Some("http://localhost:8787"), own));
        assert!(!origin_allowed(Some("http://10.0.0.7:9999"), own));
        assert!(!origin_allowed(Some("http://rebind.example:8787"), own));
    }

    #[test]
    fn a_request_url_or_a_public_origin_is_its_own_rule() {
        let url = OwnOrigin::RequestUrl("https://claw.example.com/api/x?y");
        assert!(origin_allowed(Some("https://claw.example.com:443"), url));
        assert!(!origin_allowed(Some("http://claw.example.com"), url));
        assert!(!origin_allowed(Some("https://evil.example"), url));
        let public = OwnOrigin::Public("https://claw.example.com/");
        assert!(origin_allowed(Some("https://claw.example.com"), public));
        assert!(!origin_allowed(Some("http://internal"), public));
        assert!(!origin_allowed(Some("http://localhost:8787"), public));
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
        fn any_header_text_is_handled(origin in ".{0,80}", url in ".{0,80}", public in ".{0,40}") {
            // Never panics, and only ever accepts a normalizable origin.
            for own in [
                OwnOrigin::Public(&public),
                OwnOrigin::RequestUrl(&url),
                listener("127.0.0.1:8787"),
                listener("0.0.0.0:8787"),
            ] {
                if origin_allowed(Some(&origin), own) {
                    prop_assert!(normalize_origin(&origin).is_some());
                }
            }
            let _ = needs_origin_check(&origin, Some(&url));
        }

        #[test]
        fn a_listener_never_accepts_a_dns_name(
            name in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
            port in 1u16..,
            bound_port in 1u16..,
            any in proptest::bool::ANY,
        ) {
            // Whatever Host a rebinding page sends with it.
            prop_assume!(name != "localhost");
            let bound = if any { "0.0.0.0" } else { "127.0.0.1" };
            let own = OwnOrigin::Listener {
                scheme: "http",
                bound: SocketAddr::new(bound.parse().unwrap(), bound_port),
            };
            let rebound = format!("http://{name}:{port}");
            prop_assert!(!origin_allowed(Some(&rebound), own));
            // localhost and the bound address: only with the bound port.
            let local = origin_allowed(Some(&format!("http://localhost:{port}")), own);
            prop_assert_eq!(local, port == bound_port);
            let addr = origin_allowed(Some(&format!("http://127.0.0.1:{port}")), own);
            prop_assert_eq!(addr, port == bound_port);
        }
    }
}
