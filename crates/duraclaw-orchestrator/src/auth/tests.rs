//! The auth routes driven through a real router, on a real database file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::routing::{get, post};
use duraclaw_core::Error;
use http_body_util::BodyExt;
use tempfile::TempDir;
use tower::ServiceExt;

use super::*;

const ORIGIN: &str = "http://localhost:8787";
const HOST: &str = "localhost:8787";
const PASSWORD: &str = "correct horse battery";

/// The address the server under test listens on.
const BOUND: &str = "127.0.0.1:8787";

fn fast() -> AuthOptions {
    AuthOptions {
        hash_cost: HashCost::Minimal,
        bound_addr: Some(BOUND.parse().unwrap()),
        ..AuthOptions::default()
    }
}

async fn open(options: AuthOptions) -> (TempDir, Arc<Auth>) {
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::open(&dir.path().join(cli::DB_FILE), options)
        .await
        .unwrap();
    (dir, auth)
}

async fn with_alice(options: AuthOptions) -> (TempDir, Arc<Auth>) {
    let (dir, auth) = open(options).await;
    auth.add_user("alice", PASSWORD).await.unwrap();
    (dir, auth)
}

/// `routes()` plus a state-changing route and a WebSocket-like route behind
/// `origin_guard`, as the orchestrator mounts them.
fn app(auth: &Arc<Auth>) -> Router {
    routes()
        .route("/api/thing", post(|_: AuthUser| async { "changed" }))
        .route(
            "/api/open",
            post(|| async { "changed" }).get(|| async { "read" }),
        )
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            origin_guard,
        ))
        .with_state(auth.clone())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: serde_json::Value,
}

impl Answer {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    fn set_cookie(&self) -> &str {
        self.headers
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }

    /// `duraclaw_session=<token>` from the `Set-Cookie` header.
    fn cookie(&self) -> String {
        self.set_cookie()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn send(auth: &Arc<Auth>, request: Request<Body>) -> Answer {
    let response = app(auth).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        })
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn same_origin(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
}

fn with_peer(request: Request<Body>, ip: [u8; 4]) -> Request<Body> {
    let mut request = request;
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
    request
}

fn login_request(name: &str, password: &str, ip: [u8; 4]) -> Request<Body> {
    let body = serde_json::json!({ "username": name, "password": password }).to_string();
    let request = same_origin(Method::POST, "/api/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    with_peer(request, ip)
}

async fn login(auth: &Arc<Auth>, name: &str, password: &str, ip: [u8; 4]) -> Answer {
    send(auth, login_request(name, password, ip)).await
}

async fn me(auth: &Arc<Auth>, cookie: &str) -> Answer {
    let request = Request::get("/api/me")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    send(auth, request).await
}

fn db(auth: &Auth) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
    auth.db.lock().unwrap()
}

const IP_A: [u8; 4] = [192, 0, 2, 1];
const IP_B: [u8; 4] = [192, 0, 2, 2];

#[tokio::test]
async fn login_sets_an_http_only_strict_cookie_that_me_accepts() {
    let (_dir, auth) = with_alice(fast()).await;
    let answer = login(&auth, "alice", PASSWORD, IP_A).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(
        answer.body,
        serde_json::json!({ "user": { "name": "alice" } })
    );
    let set = answer.set_cookie();
    assert!(set.starts_with("duraclaw_session="), "{set}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=2592000"] {
        assert!(
            set.split("; ").any(|f| f == flag),
            "{flag} missing in {set}"
        );
    }
    assert!(!set.contains("Secure"), "{set}");

    let me = me(&auth, &format!("theme=dark; {}", answer.cookie())).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body, serde_json::json!({ "user": { "name": "alice" } }));
    assert!(
        me.set_cookie().starts_with(&answer.cookie()),
        "me renews the cookie"
    );

    // Names match without case; the stored spelling is answered.
    let answer = login(&auth, "ALICE", PASSWORD, IP_A).await;
    assert_eq!(answer.body["user"]["name"], "alice");
}

#[tokio::test]
async fn the_cookie_is_secure_when_configured_or_served_over_https() {
    let (_dir, auth) = with_alice(AuthOptions {
        secure_cookies: true,
        ..fast()
    })
    .await;
    let answer = login(&auth, "alice", PASSWORD, IP_A).await;
    assert!(
        answer.set_cookie().ends_with("; Secure"),
        "{}",
        answer.set_cookie()
    );

    let (_dir, auth) = with_alice(AuthOptions {
        public_origin: Some("https://claw.example.com".into()),
        ..fast()
    })
    .await;
    let request = Request::post("/api/login")
        .header(header::ORIGIN, "https://claw.example.com")
        .body(Body::from(
            serde_json::json!({ "username": "alice", "password": PASSWORD }).to_string(),
        ))
        .unwrap();
    let answer = send(&auth, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert!(answer.set_cookie().ends_with("; Secure"));
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let (_dir, auth) = with_alice(fast()).await;
    let wrong = login(&auth, "alice", "wrong password!", IP_A).await;
    let unknown = login(&auth, "mallory", PASSWORD, IP_B).await;
    let invalid = login(&auth, "not a name!", PASSWORD, [192, 0, 2, 3]).await;
    for answer in [&wrong, &unknown, &invalid] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.body, wrong.body);
        assert!(answer.headers.get(header::SET_COOKIE).is_none());
    }
    assert_eq!(wrong.error(), "wrong user name or password");
}

#[tokio::test]
async fn an_unknown_user_costs_a_hash_verification_too() {
    let (_dir, auth) = with_alice(fast()).await;
    let count = || auth.hashing.verifications.load(Ordering::Relaxed);
    let before = count();
    assert_eq!(auth.verify("mallory", PASSWORD).await.unwrap(), None);
    assert_eq!(count(), before + 1);
    assert_eq!(auth.verify("bad name!", PASSWORD).await.unwrap(), None);
    assert_eq!(count(), before + 2);
    assert_eq!(auth.verify("alice", "wrong password").await.unwrap(), None);
    assert_eq!(count(), before + 3);
    assert_eq!(
        auth.verify("Alice", PASSWORD).await.unwrap().as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn me_needs_a_live_session() {
    let (_dir, auth) = with_alice(fast()).await;
    let no_cookie = send(&auth, Request::get("/api/me").body(Body::empty()).unwrap()).await;
    assert_eq!(no_cookie.status, StatusCode::UNAUTHORIZED);
    assert!(!no_cookie.error().is_empty());

    let cookie = login(&auth, "alice", PASSWORD, IP_A).await.cookie();
    // Tampered: one character of the token changed.
    let mut tampered = cookie.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(me(&auth, &tampered).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        me(&auth, "duraclaw_session=not-a-token").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&auth, &cookie).await.status, StatusCode::OK);

    // Expired: the database says so.
    db(&auth)
        .execute("UPDATE login_sessions SET expires_at_ms = 1", [])
        .unwrap();
    let expired = me(&auth, &cookie).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    let left: i64 = db(&auth)
        .query_row("SELECT COUNT(*) FROM login_sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "an expired session is deleted when seen");
}

#[tokio::test]
async fn logout_revokes_the_token_so_a_replayed_cookie_is_refused() {
    let (_dir, auth) = with_alice(fast()).await;
    let cookie = login(&auth, "alice", PASSWORD, IP_A).await.cookie();
    let other = login(&auth, "alice", PASSWORD, IP_A).await.cookie();
    let logout = || {
        same_origin(Method::POST, "/api/logout")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap()
    };
    let answer = send(&auth, logout()).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(
        answer.set_cookie().contains("Max-Age=0"),
        "{}",
        answer.set_cookie()
    );
    assert_eq!(me(&auth, &cookie).await.status, StatusCode::UNAUTHORIZED);
    let again = send(&auth, logout()).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(again.set_cookie().contains("Max-Age=0"));
    // Another login session of the same user lives on.
    assert_eq!(me(&auth, &other).await.status, StatusCode::OK);
}

#[tokio::test]
async fn sessions_slide_their_expiry_when_used() {
    let (_dir, auth) = with_alice(fast()).await;
    let cookie = login(&auth, "alice", PASSWORD, IP_A).await.cookie();
    db(&auth)
        .execute(
            "UPDATE login_sessions SET last_used_at_ms = 0, expires_at_ms = ?1",
            [now_ms() + 5_000],
        )
        .unwrap();
    assert_eq!(me(&auth, &cookie).await.status, StatusCode::OK);
    let (last_used, expires): (i64, i64) = db(&auth)
        .query_row(
            "SELECT last_used_at_ms, expires_at_ms FROM login_sessions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(now_ms() - last_used < 60_000);
    assert_eq!(expires - last_used, duration_ms(SESSION_TTL));
}

#[tokio::test]
async fn only_the_token_hash_is_stored() {
    let (_dir, auth) = with_alice(fast()).await;
    let cookie = login(&auth, "alice", PASSWORD, IP_A).await.cookie();
    let token = cookie.trim_start_matches("duraclaw_session=");
    let stored: String = db(&auth)
        .query_row("SELECT token_digest FROM login_sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        stored,
        token::digest(&token::SessionToken::decode(token).unwrap())
    );
    assert!(!stored.contains(token));
}

#[tokio::test]
async fn set_password_ends_every_session_and_the_old_password() {
    let (_dir, auth) = with_alice(fast()).await;
    let cookie = login(&auth, "alice", PASSWORD, IP_A).await.cookie();
    auth.set_password("alice", "a new password!").await.unwrap();
    assert_eq!(me(&auth, &cookie).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        login(&auth, "alice", PASSWORD, IP_A).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&auth, "alice", "a new password!", IP_A).await.status,
        StatusCode::OK
    );
    let err = auth
        .set_password("nobody", "a new password!")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn remove_user_ends_their_sessions_and_their_login_only() {
    let (_dir, auth) = with_alice(fast()).await;
    auth.add_user("bob", PASSWORD).await.unwrap();
    let alice = login(&auth, "alice", PASSWORD, IP_A).await.cookie();
    login(&auth, "alice", PASSWORD, IP_B).await.cookie();
    let bob = login(&auth, "bob", PASSWORD, IP_A).await.cookie();
    assert_eq!(auth.login_sessions("alice").await.unwrap(), 2);
    // Names match without case, as at login.
    auth.remove_user("ALICE").await.unwrap();
    assert_eq!(auth.login_sessions("alice").await.unwrap(), 0);
    assert!(!auth.user_exists("alice").await.unwrap());
    assert_eq!(me(&auth, &alice).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        login(&auth, "alice", PASSWORD, IP_B).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&auth, &bob).await.status, StatusCode::OK);
    let err = auth.remove_user("alice").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = auth.remove_user("no such/name").await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
}

#[test]
fn one_password_source_at_a_time() {
    assert_eq!(
        PasswordSource::from_flags(false, None).unwrap(),
        PasswordSource::Terminal
    );
    assert_eq!(
        PasswordSource::from_flags(true, None).unwrap(),
        PasswordSource::Stdin
    );
    assert_eq!(
        PasswordSource::from_flags(false, Some("PW".into())).unwrap(),
        PasswordSource::Env("PW".into())
    );
    assert!(PasswordSource::from_flags(true, Some("PW".into())).is_err());
}

#[tokio::test]
async fn failed_logins_lock_the_name_and_the_address_with_429() {
    let (_dir, auth) = with_alice(fast()).await;
    auth.add_user("bob", PASSWORD).await.unwrap();
    for _ in 0..5 {
        let answer = login(&auth, "alice", "wrong password", IP_A).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    // Locked: even the right password is refused until the lockout ends.
    let locked = login(&auth, "alice", PASSWORD, IP_A).await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        locked.body
    );
    let secs = locked.body["retry_after_secs"].as_u64().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    let header = locked.headers.get(header::RETRY_AFTER).unwrap();
    assert_eq!(header.to_str().unwrap(), secs.to_string());
    assert!(!locked.error().is_empty());

    // Another user from another address is not locked...
    assert_eq!(
        login(&auth, "bob", PASSWORD, IP_B).await.status,
        StatusCode::OK
    );
    // ...but the locked name is, from anywhere, and so is the address.
    assert_eq!(
        login(&auth, "alice", PASSWORD, IP_B).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login(&auth, "bob", PASSWORD, IP_A).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn guessing_many_names_from_one_address_locks_the_address() {
    let (_dir, auth) = with_alice(fast()).await;
    let ip = [198, 51, 100, 7];
    for i in 0..5 {
        let answer = login(&auth, &format!("guess{i}"), "wrong password", ip).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login(&auth, "alice", PASSWORD, ip).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login(&auth, "alice", PASSWORD, IP_B).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_when_trusted() {
    let proxied = |name: &str, password: &str, forwarded_for: &str| {
        let mut request = login_request(name, password, [127, 0, 0, 1]);
        request
            .headers_mut()
            .insert("x-forwarded-for", forwarded_for.parse().unwrap());
        request
    };
    // Not trusted: every attempt counts against the proxy's own address.
    let (_dir, auth) = with_alice(fast()).await;
    for i in 0..5 {
        let request = proxied(
            &format!("guess{i}"),
            "wrong password",
            &format!("203.0.113.{i}"),
        );
        send(&auth, request).await;
    }
    let answer = send(&auth, proxied("alice", PASSWORD, "203.0.113.99")).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);

    // Trusted: the last entry is the client, and only it is locked.
    let (_dir, auth) = with_alice(AuthOptions {
        trust_forwarded_for: true,
        ..fast()
    })
    .await;
    for i in 0..5 {
        let request = proxied(
            &format!("guess{i}"),
            "wrong password",
            "10.9.9.9, 203.0.113.5",
        );
        send(&auth, request).await;
    }
    let locked = send(&auth, proxied("alice", PASSWORD, "203.0.113.5")).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    let other = send(&auth, proxied("alice", PASSWORD, "10.9.9.9, 203.0.113.99")).await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn state_changing_requests_need_the_servers_own_origin() {
    let (_dir, auth) = with_alice(fast()).await;
    let body =
        || Body::from(serde_json::json!({ "username": "alice", "password": PASSWORD }).to_string());
    let refused = |answer: &Answer| {
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{:?}", answer.body);
        assert_eq!(answer.error(), "cross-origin request refused");
    };
    // Missing Origin.
    let request = Request::post("/api/login")
        .header(header::HOST, HOST)
        .body(body())
        .unwrap();
    refused(&send(&auth, request).await);
    // Foreign origins, including look-alikes.
    for origin in [
        "http://evil.example",
        "http://localhost:8788",
        "https://localhost:8787",
        "http://localhost:8787.evil.example",
        "null",
        "http://localhost:8787/path",
    ] {
        let request = Request::post("/api/login")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, origin)
            .body(body())
            .unwrap();
        refused(&send(&auth, request).await);
    }
    // Same origin, spelled differently.
    let request = Request::post("/api/login")
        .header(header::HOST, "LocalHost:8787")
        .header(header::ORIGIN, "HTTP://localhost:8787")
        .body(body())
        .unwrap();
    assert_eq!(send(&auth, request).await.status, StatusCode::OK);

    // The guard on other routes: every method but GET, HEAD and OPTIONS.
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let request = Request::builder()
            .method(method.clone())
            .uri("/api/open")
            .header(header::HOST, HOST)
            .body(Body::empty())
            .unwrap();
        refused(&send(&auth, request).await);
    }
    let ok = send(
        &auth,
        same_origin(Method::POST, "/api/open")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let get = send(
        &auth,
        Request::get("/api/open").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(get.status, StatusCode::OK);
    // A WebSocket upgrade is a GET that needs the Origin too.
    let upgrade = Request::get("/api/open")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "http://evil.example")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .body(Body::empty())
        .unwrap();
    refused(&send(&auth, upgrade).await);
    // The origin is checked before authentication.
    let foreign = Request::post("/api/thing")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::empty())
        .unwrap();
    refused(&send(&auth, foreign).await);
}

#[tokio::test]
async fn a_rebound_host_name_is_not_the_servers_origin() {
    let (_dir, auth) = with_alice(fast()).await;
    // DNS rebinding: the attacker's name resolves to 127.0.0.1, and the
    // browser sends that name as both Host and Origin.
    for (host, origin) in [
        ("rebind.example:8787", "http://rebind.example:8787"),
        (
            "localhost.rebind.example:8787",
            "http://localhost.rebind.example:8787",
        ),
    ] {
        let login = login_request("alice", PASSWORD, IP_A);
        let (mut parts, body) = login.into_parts();
        parts.headers.insert(header::HOST, host.parse().unwrap());
        parts
            .headers
            .insert(header::ORIGIN, origin.parse().unwrap());
        let answer = send(&auth, Request::from_parts(parts, body)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{host}");
        let upgrade = Request::get("/api/open")
            .header(header::HOST, host)
            .header(header::ORIGIN, origin)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(&auth, upgrade).await.status,
            StatusCode::FORBIDDEN,
            "{host}"
        );
    }
    // The bound address and localhost, whatever the Host says.
    for origin in ["http://127.0.0.1:8787", "http://localhost:8787"] {
        let request = Request::post("/api/open")
            .header(header::HOST, "rebind.example:8787")
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(&auth, request).await.status,
            StatusCode::OK,
            "{origin}"
        );
    }
    // Not knowing its own address, the server accepts no origin.
    let (_dir, unbound) = open(AuthOptions {
        bound_addr: None,
        ..fast()
    })
    .await;
    let request = same_origin(Method::POST, "/api/open")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&unbound, request).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn x_forwarded_proto_is_believed_only_when_trusted() {
    let request = || {
        Request::post("/api/open")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, "https://localhost:8787")
            .header("x-forwarded-proto", "https")
            .body(Body::empty())
            .unwrap()
    };
    let (_dir, auth) = open(fast()).await;
    assert_eq!(send(&auth, request()).await.status, StatusCode::FORBIDDEN);
    let (_dir, auth) = open(AuthOptions {
        trust_forwarded_proto: true,
        ..fast()
    })
    .await;
    assert_eq!(send(&auth, request()).await.status, StatusCode::OK);
    // Trusted, it still has to say https for an https origin.
    let mut http = request();
    http.headers_mut()
        .insert("x-forwarded-proto", "http".parse().unwrap());
    assert_eq!(send(&auth, http).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_public_origin_is_the_only_one_accepted() {
    let (_dir, auth) = open(AuthOptions {
        public_origin: Some("https://Claw.Example.com:443/".into()),
        ..fast()
    })
    .await;
    let post = |host: &str, origin: &str| {
        Request::post("/api/open")
            .header(header::HOST, host)
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .unwrap()
    };
    let ok = send(&auth, post("127.0.0.1:8787", "https://claw.example.com")).await;
    assert_eq!(ok.status, StatusCode::OK);
    // The Host-derived origin no longer counts.
    let host = send(&auth, post("127.0.0.1:8787", "http://127.0.0.1:8787")).await;
    assert_eq!(host.status, StatusCode::FORBIDDEN);

    let err = Auth::open(
        &tempfile::tempdir().unwrap().path().join("a.db"),
        AuthOptions {
            public_origin: Some("claw.example.com".into()),
            ..fast()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not an origin"), "{err}");
}

#[test]
fn check_origin_needs_exactly_one_matching_origin() {
    let headers = |pairs: &[(&str, &str)]| {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    };
    let bound = Some(BOUND.parse().unwrap());
    let same = headers(&[("host", HOST), ("origin", ORIGIN)]);
    assert!(check_origin(&same, None, bound, false).is_ok());
    assert!(check_origin(&same, None, None, false).is_err());
    let twice = headers(&[("host", HOST), ("origin", ORIGIN), ("origin", ORIGIN)]);
    assert!(check_origin(&twice, None, bound, false).is_err());
    let no_host = headers(&[("origin", ORIGIN)]);
    assert!(check_origin(&no_host, None, bound, false).is_ok());
    assert!(check_origin(&no_host, Some(ORIGIN), None, false).is_ok());
    let rebound = headers(&[
        ("host", "a.example:8787"),
        ("origin", "http://a.example:8787"),
    ]);
    assert!(check_origin(&rebound, None, bound, false).is_err());
    let err = check_origin(&HeaderMap::new(), None, bound, false).unwrap_err();
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
}

#[test]
fn garbage_cookie_headers_never_panic_the_router() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_dir, auth) = runtime.block_on(with_alice(fast()));
    let cookie = runtime
        .block_on(login(&auth, "alice", PASSWORD, IP_A))
        .cookie();
    let token = cookie.trim_start_matches("duraclaw_session=").to_owned();
    let pieces = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(b"duraclaw_session=".to_vec()),
        Just(token.clone().into_bytes()),
        Just(b"; ".to_vec()),
        Just(b"=".to_vec()),
        Just(b"\"".to_vec()),
    ];
    let strategy = proptest::collection::vec(proptest::collection::vec(pieces, 0..6), 0..3);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    runner
        .run(&strategy, |headers| {
            let mut request = Request::get("/api/me").body(Body::empty()).unwrap();
            let mut sent_valid = false;
            for pieces in headers {
                let value = pieces.concat();
                if let Ok(value) = axum::http::HeaderValue::from_bytes(&value) {
                    sent_valid |= value == cookie.as_str();
                    request.headers_mut().append(header::COOKIE, value);
                }
            }
            let answer = runtime.block_on(send(&auth, request));
            prop_assert!(
                answer.status == StatusCode::OK || answer.status == StatusCode::UNAUTHORIZED,
                "{}",
                answer.status
            );
            if sent_valid {
                prop_assert_eq!(answer.status, StatusCode::OK);
            }
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn malformed_login_bodies_are_400_without_echo() {
    let (_dir, auth) = with_alice(fast()).await;
    for body in [
        "".to_owned(),
        "{".to_owned(),
        r#"{"username":"alice"}"#.to_owned(),
        r#"{"username":"alice","password":12345678901}"#.to_owned(),
        "x".repeat(100_000),
    ] {
        let request = same_origin(Method::POST, "/api/login")
            .body(Body::from(body.clone()))
            .unwrap();
        let answer = send(&auth, request).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:.40}");
        assert!(
            !answer.error().contains("12345678901"),
            "{}",
            answer.error()
        );
    }
}

#[tokio::test]
async fn users_need_a_valid_unique_name_and_a_long_password() {
    let (_dir, auth) = open(fast()).await;
    assert!(!auth.has_users().await.unwrap());
    let short = auth.add_user("alice", "123456789").await.unwrap_err();
    assert!(matches!(short, Error::Invalid(_)), "{short}");
    assert!(short.to_string().contains("at least 10"), "{short}");
    assert!(!short.to_string().contains("123456789"), "{short}");
    let bad = auth.add_user("al ice", PASSWORD).await.unwrap_err();
    assert!(matches!(bad, Error::Invalid(_)), "{bad}");
    assert!(!auth.has_users().await.unwrap());

    auth.add_user("alice", PASSWORD).await.unwrap();
    assert!(auth.has_users().await.unwrap());
    for dup in ["alice", "Alice"] {
        let err = auth.add_user(dup, PASSWORD).await.unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    }
    let hash: String = db(&auth)
        .query_row("SELECT password_hash FROM users", [], |r| r.get(0))
        .unwrap();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
}

/// An auth database written by the release before the login tables took
/// their one shape keeps its users and logins.
#[tokio::test]
async fn a_released_database_keeps_its_logins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let token = token::generate().unwrap();
    {
        let mut conn = duraclaw_store::SqliteConn::open(&path).unwrap();
        let released = &duraclaw_host::auth::schema::LOCAL_MIGRATIONS[..1];
        duraclaw_core::backend::migrate::Migrations::new(released)
            .unwrap()
            .apply(&mut conn)
            .unwrap();
        conn.into_inner()
            .execute_batch(&format!(
                "INSERT INTO users VALUES ('Alice', 'hash', 1, 1);
                 INSERT INTO login_sessions (token_sha256, user_name, created_at_ms,
                     last_used_at_ms, expires_at_ms) VALUES ('{}', 'Alice', 1, 1, {});",
                token::digest(&token),
                i64::MAX / 2
            ))
            .unwrap();
    }
    let auth = Auth::open(&path, fast()).await.unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        format!("{COOKIE_NAME}={}", token.encode()).parse().unwrap(),
    );
    let user = auth.authenticate(&headers).await.unwrap().unwrap();
    assert_eq!(user.name, "Alice");
    assert_eq!(auth.login_sessions("alice").await.unwrap(), 1);
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    drop(Auth::open(&path, fast()).await.unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE duraclaw_meta SET int_value = 99 WHERE key = 'schema'",
        [],
    )
    .unwrap();
    drop(conn);
    let err = Auth::open(&path, fast()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SchemaTooNew { found: 99, known }
                if known as usize == duraclaw_host::auth::schema::LOCAL_MIGRATIONS.len()
        ),
        "{err}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    std::fs::write(&path, b"not a database, just some text that is long enough").unwrap();
    let err = Auth::open(&path, fast()).await.unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _auth) = open(fast()).await;
    let mode = std::fs::metadata(dir.path().join(cli::DB_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn add_user_command_reads_the_password_and_refuses_bad_input() {
    // Exercised without a terminal or stdin: the name is checked first.
    let dir = tempfile::tempdir().unwrap();
    let err = add_user_command(dir.path(), "no spaces allowed", PasswordSource::Stdin)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(!dir.path().join(cli::DB_FILE).exists());
}

#[tokio::test]
async fn logs_name_the_user_but_never_a_secret() {
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (_dir, auth) = with_alice(fast()).await;
    let cookie = login(&auth, "alice", PASSWORD, IP_A).await.cookie();
    login(&auth, "alice", "a wrong password", IP_A).await;
    me(&auth, &cookie).await;
    let logout = same_origin(Method::POST, "/api/logout")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    send(&auth, logout).await;

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("alice"), "{logs}");
    let token = cookie.trim_start_matches("duraclaw_session=");
    let hash: String = db(&auth)
        .query_row("SELECT password_hash FROM users", [], |r| r.get(0))
        .unwrap();
    for secret in [PASSWORD, "a wrong password", token, &hash, "$argon2id"] {
        assert!(!logs.contains(secret), "{secret:?} in logs:\n{logs}");
    }
}

#[test]
fn api_errors_answer_json_and_do_not_leak_storage_details() {
    use axum::response::IntoResponse;

    let storage: ApiError = Error::storage(
        "sqlite",
        "cannot open /srv/secret/path/auth.db: disk I/O error",
    )
    .into();
    assert_eq!(storage.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!storage.message().contains("/srv"), "{}", storage.message());
    let too_new: ApiError = Error::SchemaTooNew { found: 2, known: 1 }.into();
    assert_eq!(too_new.status(), StatusCode::INTERNAL_SERVER_ERROR);

    let cases: [(Error, StatusCode); 5] = [
        (
            Error::NotFound {
                what: "session",
                id: "s1".into(),
            },
            StatusCode::NOT_FOUND,
        ),
        (
            Error::Invalid("empty prompt".into()),
            StatusCode::BAD_REQUEST,
        ),
        (Error::Unauthorized("no".into()), StatusCode::UNAUTHORIZED),
        (
            Error::AlreadyExists {
                what: "user",
                id: "a".into(),
            },
            StatusCode::CONFLICT,
        ),
        (Error::executor("gone"), StatusCode::SERVICE_UNAVAILABLE),
    ];
    for (err, status) in cases {
        let text = err.to_string();
        let api = ApiError::from(err);
        assert_eq!(api.status(), status, "{text}");
    }
    let unauthorized = ApiError::from(Error::Unauthorized("bad token".into()));
    assert_eq!(unauthorized.message(), "bad token");

    let response =
        ApiError::too_many_requests("slow down", Duration::from_millis(1500)).into_response();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    assert_eq!(
        ApiError::too_many_requests("x", Duration::ZERO).retry_after_secs(),
        Some(1)
    );
    let response = ApiError::new(StatusCode::BAD_GATEWAY, "gateway unreachable").into_response();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.headers().get(header::RETRY_AFTER).is_none());
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
}

#[tokio::test]
async fn auth_user_can_be_extracted_twice_in_one_request() {
    let (_dir, auth) = with_alice(fast()).await;
    let cookie = login(&auth, "alice", PASSWORD, IP_A).await.cookie();
    let app = Router::new()
        .route(
            "/twice",
            get(|a: AuthUser, b: AuthUser| async move { format!("{} {}", a.name, b.name) }),
        )
        .with_state(auth.clone());
    let request = Request::get("/twice")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"alice alice");
}

/// The login a cookie names, as a WebSocket holds it.
async fn login_of(auth: &Arc<Auth>, cookie: &str) -> AuthUser {
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, cookie.parse().unwrap());
    auth.authenticate(&headers)
        .await
        .unwrap()
        .expect("a live login")
}

/// Whether `watch` ends within a few seconds.
async fn ends(watch: &mut LoginWatch) -> bool {
    tokio::time::timeout(Duration::from_secs(5), watch.ended())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_watched_login_ends_with_logout_password_change_and_removal() {
    let (dir, auth) = with_alice(fast()).await;
    auth.add_user("bob", PASSWORD).await.unwrap();
    let cookie = login(&auth, "alice", PASSWORD, IP_A).await.cookie();
    let other = login(&auth, "alice", PASSWORD, IP_A).await.cookie();
    let bob = login(&auth, "bob", PASSWORD, IP_A).await.cookie();
    let (alice1, alice2, bob) = (
        login_of(&auth, &cookie).await,
        login_of(&auth, &other).await,
        login_of(&auth, &bob).await,
    );
    let mut w1 = auth.watch_login(&alice1.login);
    let mut w2 = auth.watch_login(&alice2.login);
    let mut wb = auth.watch_login(&bob.login);
    assert!(auth.login_alive(&alice1.login).await.unwrap());

    // Logout ends that login only.
    let logout = same_origin(Method::POST, "/api/logout")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&auth, logout).await.status, StatusCode::NO_CONTENT);
    assert!(ends(&mut w1).await, "logout ends the login's watch");
    assert!(!auth.login_alive(&alice1.login).await.unwrap());
    assert!(auth.login_alive(&alice2.login).await.unwrap());

    // Another process (its own connection to the same file) changes the
    // password: noticed by the data-version watch.
    let _poll = auth
        .watch_other_processes(Duration::from_millis(20))
        .await
        .unwrap();
    let cli = Auth::open(&dir.path().join(cli::DB_FILE), fast())
        .await
        .unwrap();
    cli.set_password("alice", "another long password")
        .await
        .unwrap();
    assert!(ends(&mut w2).await, "a password change elsewhere ends it");
    assert!(!auth.login_alive(&alice2.login).await.unwrap());
    // Bob's login lives on, and his watch does not end.
    assert!(auth.login_alive(&bob.login).await.unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), wb.ended())
            .await
            .is_err()
    );
    cli.remove_user("bob").await.unwrap();
    assert!(ends(&mut wb).await, "a removal elsewhere ends it");

    // A watch begun after the login ended ends at once.
    let mut late = auth.watch_login(&alice1.login);
    assert!(ends(&mut late).await);
}
