//! The D1 auth (`duraclaw_cf::auth`) for real: builds the test worker
//! (`tests-worker/`), runs it under `wrangler dev` with a local D1
//! database, and drives its `/api/*` routes over HTTP — admin user
//! management, login and its cookie, the same 401 for a wrong password and
//! an unknown user, the rate limit, `/api/me`, logout, the Origin rule, the
//! D1 rows (no token, no password), idempotent migrations, password changes
//! revoking sessions, and the session index. Then restarts wrangler on the
//! same state with other settings: admin routes off (404), an https public
//! origin (`Secure` cookie), and a database claiming a newer schema (500
//! with the reason).
//!
//! The tools and the wrangler process: see `duraclaw_testkit::wrangler`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use duraclaw_core::store::SessionMeta;
use duraclaw_host::auth::SessionToken;
use duraclaw_testkit::wrangler::{
    Tools, Wrangler, build_worker, free_port, start_wrangler, wait_ready, worker_dir,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
const COOKIE_SECRET: &str = "cookie-secret-for-tests-0123456789";
const ALICE_PASSWORD: &str = "correct horse battery";
const BOB_PASSWORD: &str = "bob's long password";
const NEW_PASSWORD: &str = "a brand new passphrase";

/// One running worker and a client for it.
struct Worker {
    wrangler: Wrangler,
    http: reqwest::Client,
    base: String,
}

impl Worker {
    async fn start(tools: &Tools, dir: &Path, dev_vars: &str) -> Worker {
        fs::write(dir.join(".dev.vars"), dev_vars).unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut wrangler = start_wrangler(tools, dir, port);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        wait_ready(&mut wrangler, &http, &base).await;
        Worker {
            wrangler,
            http,
            base,
        }
    }

    /// Sends a request and reads the whole answer.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Answer {
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let t = Instant::now();
        let response = req.send().await.unwrap_or_else(|e| {
            panic!("{method} {path} failed: {e}\n{}", self.wrangler.log_tail())
        });
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Answer {
            status,
            headers,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            took: t.elapsed(),
        }
    }

    /// A login from this worker's own origin; `client` is the
    /// `CF-Connecting-IP` it claims (wrangler dev passes it through).
    async fn login(&self, name: &str, password: &str, client: &str) -> Answer {
        let origin = self.base.clone();
        self.send(
            "POST",
            "/api/login",
            &[("Origin", &origin), ("CF-Connecting-IP", client)],
            Some(json!({ "username": name, "password": password }).to_string()),
        )
        .await
    }

    async fn me(&self, cookie: &str) -> Answer {
        self.send("GET", "/api/me", &[("Cookie", cookie)], None)
            .await
    }

    async fn admin(&self, method: &str, path: &str, token: Option<&str>, body: Value) -> Answer {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        let body = (!body.is_null()).then(|| body.to_string());
        self.send(method, path, &headers, body).await
    }

    async fn dump(&self) -> Value {
        let answer = self.send("GET", "/test/d1/dump", &[], None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json
    }
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
    text: String,
    took: Duration,
}

impl Answer {
    fn set_cookie(&self) -> &str {
        self.headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// `duraclaw_session=<token>` from `Set-Cookie`, for a `Cookie` header.
    fn cookie(&self) -> String {
        let set = self.set_cookie();
        let pair = set.split(';').next().unwrap_or("");
        assert!(
            pair.starts_with("duraclaw_session=") && pair.len() > "duraclaw_session=".len(),
            "no session cookie in {set:?} ({} {})",
            self.status,
            self.text
        );
        pair.to_owned()
    }

    fn expect(&self, status: StatusCode, what: &str) -> &Self {
        assert_eq!(self.status, status, "{what}: {}", self.text);
        self
    }
}

fn user(name: &str) -> Value {
    json!({ "user": { "name": name } })
}

fn meta(id: &str, owner: &str, updated_at_ms: i64, title: &str) -> Value {
    let mut m = SessionMeta::new(id, owner, 1_000);
    m.updated_at_ms = updated_at_ms;
    m.title = title.to_owned();
    serde_json::to_value(m).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_d1_auth_under_wrangler_dev() {
    let tools = Tools::find();
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        worker_dir().join("wrangler.toml"),
        dir.path().join("wrangler.toml"),
    )
    .unwrap();
    let t = Instant::now();
    build_worker(&tools, &dir.path().join("build"));
    eprintln!("worker-build {:.1?}", t.elapsed());

    let vars = format!(
        "DURACLAW_ADMIN_TOKEN=\"{ADMIN_TOKEN}\"\nDURACLAW_COOKIE_SECRET=\"{COOKIE_SECRET}\"\n"
    );
    let w = Worker::start(&tools, dir.path(), &vars).await;
    let origin = w.base.clone();

    // WebCrypto's PBKDF2 takes the iteration count new hashes use. (The
    // production runtime refuses more than 100 000; the open-source workerd
    // under wrangler dev does not enforce that cap, so it is not checked.)
    let ok = w.send("GET", "/test/d1/pbkdf2?i=100000", &[], None).await;
    assert_eq!(ok.json, json!({ "ok": 32 }), "{}", ok.text);

    // ---- admin: create users --------------------------------------------
    let alice = json!({ "username": "alice", "password": ALICE_PASSWORD });
    w.admin("POST", "/api/admin/users", None, alice.clone())
        .await
        .expect(StatusCode::UNAUTHORIZED, "no admin token");
    w.admin(
        "POST",
        "/api/admin/users",
        Some("wrong-admin-token-0123456789"),
        alice.clone(),
    )
    .await
    .expect(StatusCode::UNAUTHORIZED, "a wrong admin token");
    w.admin(
        "POST",
        "/api/admin/users",
        Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
        alice.clone(),
    )
    .await
    .expect(StatusCode::UNAUTHORIZED, "a prefix of the admin token");
    let created = w
        .admin("POST", "/api/admin/users", Some(ADMIN_TOKEN), alice.clone())
        .await;
    created.expect(StatusCode::CREATED, "create alice");
    assert_eq!(created.json, user("alice"));
    let again = json!({ "username": "ALICE", "password": "another password" });
    w.admin("POST", "/api/admin/users", Some(ADMIN_TOKEN), again)
        .await
        .expect(StatusCode::CONFLICT, "alice again, in capitals");
    for (body, what) in [
        (
            json!({ "username": "x y", "password": ALICE_PASSWORD }),
            "a bad name",
        ),
        (
            json!({ "username": "shorty", "password": "short" }),
            "a short password",
        ),
        (json!({ "username": "nopw" }), "no password"),
        (json!("not an object"), "not an object"),
    ] {
        w.admin("POST", "/api/admin/users", Some(ADMIN_TOKEN), body)
            .await
            .expect(StatusCode::BAD_REQUEST, what);
    }
    let huge = w
        .send(
            "POST",
            "/api/admin/users",
            &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            Some(format!("{{\"username\":\"{}\"}}", "x".repeat(40_000))),
        )
        .await;
    huge.expect(StatusCode::PAYLOAD_TOO_LARGE, "a 40 KB body");
    for name in ["bob", "carol"] {
        let body = json!({ "username": name, "password": BOB_PASSWORD });
        w.admin("POST", "/api/admin/users", Some(ADMIN_TOKEN), body)
            .await
            .expect(StatusCode::CREATED, name);
    }
    let listed = w
        .admin("GET", "/api/admin/users", Some(ADMIN_TOKEN), Value::Null)
        .await;
    listed.expect(StatusCode::OK, "list users");
    let names: Vec<&str> = listed.json["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    w.admin("GET", "/api/admin/nothing", Some(ADMIN_TOKEN), Value::Null)
        .await
        .expect(StatusCode::NOT_FOUND, "an unknown admin route");

    // ---- login and the cookie -------------------------------------------
    let login = w.login("Alice", ALICE_PASSWORD, "10.0.0.1").await;
    login.expect(StatusCode::OK, "alice logs in (name in another case)");
    assert_eq!(login.json, user("alice"));
    let cookie = login.cookie();
    let token = cookie.strip_prefix("duraclaw_session=").unwrap().to_owned();
    assert_eq!(token.len(), 43, "{cookie}");
    assert_eq!(
        login.set_cookie(),
        format!("{cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age=2592000"),
        "the cookie's flags over http"
    );
    let login_time = login.took;

    // Wrong password and unknown user: the same answer.
    let wrong = w.login("alice", "not the password", "10.0.0.2").await;
    let unknown = w.login("nobody", ALICE_PASSWORD, "10.0.0.3").await;
    let invalid = w.login("not a name!", ALICE_PASSWORD, "10.0.0.4").await;
    for (a, what) in [
        (&wrong, "wrong password"),
        (&unknown, "unknown user"),
        (&invalid, "invalid name"),
    ] {
        a.expect(StatusCode::UNAUTHORIZED, what);
        assert_eq!(a.text, wrong.text, "{what}");
        assert!(a.headers.get("set-cookie").is_none(), "{what}");
    }
    assert_eq!(
        wrong.json,
        json!({ "error": "wrong user name or password" })
    );
    eprintln!(
        "login: ok {:.1?}, wrong password {:.1?}, unknown user {:.1?}",
        login_time, wrong.took, unknown.took
    );
    for (body, what) in [
        ("{\"username\":\"alice\"}".to_owned(), "no password"),
        ("not json".to_owned(), "not JSON"),
        (String::new(), "no body"),
    ] {
        let a = w
            .send("POST", "/api/login", &[("Origin", &origin)], Some(body))
            .await;
        a.expect(StatusCode::BAD_REQUEST, what);
    }
    w.send("GET", "/api/login", &[], None)
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED, "GET /api/login");

    // ---- /api/me and require_user ---------------------------------------
    let me = w.me(&cookie).await;
    me.expect(StatusCode::OK, "me with the cookie");
    assert_eq!(me.json, user("alice"));
    assert_eq!(me.cookie(), cookie, "me renews the same cookie");
    w.send("GET", "/api/me", &[], None)
        .await
        .expect(StatusCode::UNAUTHORIZED, "me without a cookie");
    let mut tampered = token.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = format!("duraclaw_session={}", String::from_utf8(tampered).unwrap());
    w.me(&tampered)
        .await
        .expect(StatusCode::UNAUTHORIZED, "me with a tampered cookie");
    for odd in [
        "duraclaw_session=",
        "duraclaw_session=%%%%",
        ";;;===;;",
        "duraclaw_session=a, duraclaw_session=b",
    ] {
        let a = w.send("GET", "/api/me", &[("Cookie", odd)], None).await;
        a.expect(StatusCode::UNAUTHORIZED, odd);
    }
    // Junk around the cookie does not hide it.
    let with_junk = format!("a=b; {cookie}; c");
    w.me(&with_junk)
        .await
        .expect(StatusCode::OK, "me among other cookies");
    let whoami = w
        .send("GET", "/api/whoami", &[("Cookie", &cookie)], None)
        .await;
    whoami.expect(StatusCode::OK, "require_user");
    assert_eq!(whoami.json, json!({ "user": "alice" }));

    // ---- the Origin rule --------------------------------------------------
    for (headers, what) in [
        (vec![("Cookie", cookie.as_str())], "a POST without Origin"),
        (
            vec![
                ("Cookie", cookie.as_str()),
                ("Origin", "http://evil.example"),
            ],
            "a POST from another origin",
        ),
        (
            vec![("Cookie", cookie.as_str()), ("Origin", "null")],
            "a POST from origin null",
        ),
    ] {
        let a = w.send("POST", "/api/whoami", &headers, None).await;
        a.expect(StatusCode::FORBIDDEN, what);
        assert_eq!(a.json, json!({ "error": "cross-origin request refused" }));
    }
    let ws = w
        .send(
            "GET",
            "/api/whoami",
            &[
                ("Cookie", &cookie),
                ("Upgrade", "websocket"),
                ("Origin", "http://evil.example"),
            ],
            None,
        )
        .await;
    ws.expect(StatusCode::FORBIDDEN, "a cross-origin WebSocket upgrade");
    w.send(
        "POST",
        "/api/whoami",
        &[("Cookie", &cookie), ("Origin", &origin)],
        None,
    )
    .await
    .expect(StatusCode::OK, "a same-origin POST");
    let evil_login = w
        .send(
            "POST",
            "/api/login",
            &[("Origin", "http://evil.example")],
            Some(json!({ "username": "alice", "password": ALICE_PASSWORD }).to_string()),
        )
        .await;
    evil_login.expect(StatusCode::FORBIDDEN, "a cross-origin login");
    w.send(
        "POST",
        "/api/logout",
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN, "a cross-origin logout");
    w.me(&cookie)
        .await
        .expect(StatusCode::OK, "the refused logout did nothing");

    // ---- the D1 rows ------------------------------------------------------
    let dump = w.dump().await;
    let text = dump.to_string();
    for secret in [
        token.as_str(),
        ALICE_PASSWORD,
        BOB_PASSWORD,
        ADMIN_TOKEN,
        COOKIE_SECRET,
    ] {
        assert!(!text.contains(secret), "D1 holds a secret: {secret:?}");
    }
    let hashes: Vec<&str> = dump["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["password_hash"].as_str())
        .collect();
    assert_eq!(hashes.len(), 3);
    assert!(
        hashes
            .iter()
            .all(|h| h.starts_with("$pbkdf2-sha256$i=100000$")),
        "{hashes:?}"
    );
    assert_ne!(
        hashes[1], hashes[2],
        "bob and carol share a password, not a hash"
    );
    let digests: Vec<&str> = dump["login_sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["token_digest"].as_str())
        .collect();
    let keyed = SessionToken::decode(&token)
        .unwrap()
        .digest(Some(COOKIE_SECRET.as_bytes()));
    assert_eq!(
        digests,
        [keyed.as_str()],
        "the session row holds the token's HMAC"
    );
    let keys: Vec<&str> = dump["login_failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["key"].as_str())
        .collect();
    for key in ["name:alice", "name:nobody", "ip:10.0.0.2", "ip:10.0.0.3"] {
        assert!(keys.contains(&key), "no failure row {key}: {keys:?}");
    }

    // ---- migrations are idempotent -----------------------------------------
    let migrated = w.send("GET", "/test/d1/migrate", &[], None).await;
    migrated.expect(StatusCode::OK, "migrate again");
    assert_eq!(migrated.json, json!({ "applied": [], "again": [] }));
    let after = w.dump().await;
    assert_eq!(after["users"], dump["users"]);
    assert_eq!(after["duraclaw_meta"].as_array().unwrap().len(), 1);
    let latest = duraclaw_host::auth::schema::D1_MIGRATIONS.len();
    assert_eq!(after["duraclaw_meta"][0]["int_value"], json!(latest));
    assert_eq!(
        after["duraclaw_migrations"].as_array().unwrap().len(),
        latest
    );

    // ---- logout ------------------------------------------------------------
    let second = w.login("alice", ALICE_PASSWORD, "10.0.0.5").await;
    let second_cookie = second.cookie();
    let out = w
        .send(
            "POST",
            "/api/logout",
            &[("Cookie", &cookie), ("Origin", &origin)],
            None,
        )
        .await;
    out.expect(StatusCode::NO_CONTENT, "logout");
    assert_eq!(
        out.set_cookie(),
        "duraclaw_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    );
    w.me(&cookie)
        .await
        .expect(StatusCode::UNAUTHORIZED, "me after logout");
    let again = w
        .send(
            "POST",
            "/api/logout",
            &[("Cookie", &cookie), ("Origin", &origin)],
            None,
        )
        .await;
    again.expect(StatusCode::UNAUTHORIZED, "logout again");
    assert!(
        again.set_cookie().contains("Max-Age=0"),
        "the cookie is cleared anyway"
    );
    w.me(&second_cookie)
        .await
        .expect(StatusCode::OK, "another login session of alice lives on");

    // ---- a password change revokes every login session ---------------------
    let third_cookie = w.login("alice", ALICE_PASSWORD, "10.0.0.6").await.cookie();
    w.admin(
        "PUT",
        "/api/admin/users/nobody/password",
        Some(ADMIN_TOKEN),
        json!({ "password": NEW_PASSWORD }),
    )
    .await
    .expect(StatusCode::NOT_FOUND, "change an unknown user's password");
    w.admin(
        "PUT",
        "/api/admin/users/alice/password",
        Some(ADMIN_TOKEN),
        json!({ "password": "short" }),
    )
    .await
    .expect(StatusCode::BAD_REQUEST, "a short new password");
    w.admin(
        "PUT",
        "/api/admin/users/ALICE/password",
        None,
        json!({ "password": NEW_PASSWORD }),
    )
    .await
    .expect(
        StatusCode::UNAUTHORIZED,
        "change a password without the admin token",
    );
    w.admin(
        "PUT",
        "/api/admin/users/ALICE/password",
        Some(ADMIN_TOKEN),
        json!({ "password": NEW_PASSWORD }),
    )
    .await
    .expect(StatusCode::OK, "change alice's password");
    for c in [&second_cookie, &third_cookie] {
        w.me(c)
            .await
            .expect(StatusCode::UNAUTHORIZED, "a session from before the change");
    }
    w.login("alice", ALICE_PASSWORD, "10.0.0.7")
        .await
        .expect(StatusCode::UNAUTHORIZED, "the old password");
    let alice_cookie = w.login("alice", NEW_PASSWORD, "10.0.0.8").await.cookie();
    w.me(&alice_cookie)
        .await
        .expect(StatusCode::OK, "the new password");

    // ---- a weaker stored hash is raised at the next login ---------------------
    w.send(
        "GET",
        "/test/d1/weak-hash?name=bob&password=bob%27s%20long%20password&i=20000",
        &[],
        None,
    )
    .await
    .expect(StatusCode::OK, "give bob an old 20 000-iteration hash");
    let bob_hash = |dump: &Value| -> String {
        dump["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "bob")
            .and_then(|u| u["password_hash"].as_str())
            .unwrap()
            .to_owned()
    };
    assert!(bob_hash(&w.dump().await).starts_with("$pbkdf2-sha256$i=20000$"));
    w.login("bob", BOB_PASSWORD, "10.0.1.1")
        .await
        .expect(StatusCode::OK, "bob logs in with the old hash");
    let raised = bob_hash(&w.dump().await);
    assert!(raised.starts_with("$pbkdf2-sha256$i=100000$"), "{raised}");
    w.login("bob", BOB_PASSWORD, "10.0.1.2")
        .await
        .expect(StatusCode::OK, "bob logs in with the new hash");

    // ---- removing a user ----------------------------------------------------
    let carol_cookie = w.login("carol", BOB_PASSWORD, "10.0.0.9").await.cookie();
    w.admin(
        "DELETE",
        "/api/admin/users/Carol",
        Some(ADMIN_TOKEN),
        Value::Null,
    )
    .await
    .expect(StatusCode::NO_CONTENT, "remove carol");
    w.me(&carol_cookie)
        .await
        .expect(StatusCode::UNAUTHORIZED, "a removed user's session");
    w.login("carol", BOB_PASSWORD, "10.0.0.10")
        .await
        .expect(StatusCode::UNAUTHORIZED, "a removed user logs in");
    w.admin(
        "DELETE",
        "/api/admin/users/carol",
        Some(ADMIN_TOKEN),
        Value::Null,
    )
    .await
    .expect(StatusCode::NOT_FOUND, "remove carol again");

    // ---- the session index ----------------------------------------------------
    for (m, what) in [
        (meta("s1", "alice", 1_000, "first"), "s1"),
        (meta("s2", "alice", 3_000, "second"), "s2"),
        (meta("s3", "bob", 2_000, "bob's"), "s3"),
        (meta("s1", "alice", 5_000, "first, updated"), "s1 updated"),
        (meta("s2", "alice", 10, "stale"), "a stale s2"),
    ] {
        w.send("POST", "/test/d1/index", &[], Some(m.to_string()))
            .await
            .expect(StatusCode::OK, what);
    }
    let stolen = meta("s3", "alice", 9_000, "stolen");
    let claim = w
        .send("POST", "/test/d1/index", &[], Some(stolen.to_string()))
        .await;
    assert_eq!(
        claim.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "s3 claimed by alice: {}",
        claim.text
    );
    assert!(claim.text.contains("another user"), "{}", claim.text);
    let list = w.send("GET", "/test/d1/list?owner=alice", &[], None).await;
    list.expect(StatusCode::OK, "alice's sessions");
    let listed: Vec<(String, String)> = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["session_id"].as_str().unwrap().to_owned(),
                m["title"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("s1".to_owned(), "first, updated".to_owned()),
            ("s2".to_owned(), "second".to_owned())
        ],
        "most recent first; a stale update ignored"
    );
    assert_eq!(list.json[0], meta("s1", "alice", 5_000, "first, updated"));
    let owner = w.send("GET", "/test/d1/owner?id=s3", &[], None).await;
    assert_eq!(owner.json, json!("bob"), "the first owner stays");
    let s3 = w.send("GET", "/test/d1/list?owner=bob", &[], None).await;
    assert_eq!(
        s3.json[0]["title"],
        json!("bob's"),
        "a claim by another owner changes nothing"
    );
    let none = w.send("GET", "/test/d1/owner?id=nope", &[], None).await;
    assert_eq!(none.json, Value::Null);
    let empty = w.send("GET", "/test/d1/list?owner=dave", &[], None).await;
    assert_eq!(empty.json, json!([]));

    // ---- the CPU a login costs ---------------------------------------------
    // Measured on the wrangler process group (the worker and its local D1):
    // a login is one PBKDF2 on top of what /api/me costs, and a login as an
    // unknown user costs a PBKDF2 too.
    const ROUNDS: u32 = 20;
    let cpu = |w: &Worker| w.wrangler.group_cpu();
    let c0 = cpu(&w);
    for _ in 0..ROUNDS {
        w.me(&alice_cookie)
            .await
            .expect(StatusCode::OK, "me, for the CPU figure");
    }
    let c1 = cpu(&w);
    for i in 0..ROUNDS {
        let a = w.login("alice", NEW_PASSWORD, &format!("10.4.0.{i}")).await;
        a.expect(StatusCode::OK, "a login, for the CPU figure");
    }
    let c2 = cpu(&w);
    for i in 0..ROUNDS {
        let a = w
            .login(&format!("ghost{i}"), NEW_PASSWORD, &format!("10.3.0.{i}"))
            .await;
        a.expect(
            StatusCode::UNAUTHORIZED,
            "an unknown user, for the CPU figure",
        );
    }
    let c3 = cpu(&w);
    if let (Some(c0), Some(c1), Some(c2), Some(c3)) = (c0, c1, c2, c3) {
        let (me_cpu, login_cpu, unknown_cpu) =
            ((c1 - c0) / ROUNDS, (c2 - c1) / ROUNDS, (c3 - c2) / ROUNDS);
        eprintln!(
            "CPU per request (worker + local D1): /api/me {me_cpu:.1?}, login {login_cpu:.1?}, \
             unknown-user login {unknown_cpu:.1?}"
        );
        assert!(
            unknown_cpu.as_secs_f64() >= 0.6 * login_cpu.as_secs_f64(),
            "an unknown user must cost a hash too: {unknown_cpu:?} vs {login_cpu:?}"
        );
    } else {
        eprintln!("CPU per request: not measurable here (no /proc or getconf)");
    }

    // ---- the rate limit --------------------------------------------------------
    // Five failures for bob, each from another address, lock the name.
    for i in 0..5 {
        let a = w
            .login("bob", "wrong password!", &format!("10.1.0.{i}"))
            .await;
        a.expect(StatusCode::UNAUTHORIZED, "a failure before the lockout");
    }
    let locked = w.login("bob", BOB_PASSWORD, "10.1.1.1").await;
    locked.expect(
        StatusCode::TOO_MANY_REQUESTS,
        "the right password while locked",
    );
    let retry: u64 = locked
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(locked.json["retry_after_secs"], json!(retry));
    assert!(locked.json["error"].is_string());
    // Five failures from one address, on five names, lock the address (its
    // /64 for IPv6) for every name.
    for i in 0..5 {
        let a = w
            .login(
                &format!("guess{i}"),
                "wrong password!",
                &format!("2001:db8:1:2::{i}"),
            )
            .await;
        a.expect(StatusCode::UNAUTHORIZED, "a failure from the prefix");
    }
    w.login("alice", NEW_PASSWORD, "2001:db8:1:2:ffff::1")
        .await
        .expect(StatusCode::TOO_MANY_REQUESTS, "alice from the locked /64");
    w.login("alice", NEW_PASSWORD, "2001:db8:1:3::1")
        .await
        .expect(StatusCode::OK, "alice from another /64");

    // ---- restart: no admin token, an https public origin ------------------------
    drop(w);
    let vars = format!(
        "DURACLAW_COOKIE_SECRET=\"{COOKIE_SECRET}\"\n\
         DURACLAW_PUBLIC_ORIGIN=\"https://claw.example.com\"\n"
    );
    let w = Worker::start(&tools, dir.path(), &vars).await;
    w.admin(
        "POST",
        "/api/admin/users",
        Some(ADMIN_TOKEN),
        json!({ "username": "eve", "password": BOB_PASSWORD }),
    )
    .await
    .expect(
        StatusCode::NOT_FOUND,
        "admin routes without DURACLAW_ADMIN_TOKEN",
    );
    w.admin("GET", "/api/admin/users", None, Value::Null)
        .await
        .expect(
            StatusCode::NOT_FOUND,
            "admin routes without DURACLAW_ADMIN_TOKEN",
        );
    w.me(&alice_cookie)
        .await
        .expect(StatusCode::OK, "a login session survives the restart");
    w.login("alice", NEW_PASSWORD, "10.2.0.1").await.expect(
        StatusCode::FORBIDDEN,
        "the local origin is not the public one",
    );
    let secure = w
        .send(
            "POST",
            "/api/login",
            &[
                ("Origin", "https://claw.example.com"),
                ("CF-Connecting-IP", "10.2.0.2"),
            ],
            Some(json!({ "username": "alice", "password": NEW_PASSWORD }).to_string()),
        )
        .await;
    secure.expect(StatusCode::OK, "a login from the public origin");
    assert!(
        secure.set_cookie().ends_with("; Max-Age=2592000; Secure"),
        "{}",
        secure.set_cookie()
    );

    // ---- a database newer than the code ------------------------------------------
    w.send("GET", "/test/d1/set-version?v=99", &[], None)
        .await
        .expect(StatusCode::OK, "claim schema version 99");
    let refused = w.send("GET", "/test/d1/migrate", &[], None).await;
    refused.expect(
        StatusCode::INTERNAL_SERVER_ERROR,
        "migrate a newer database",
    );
    drop(w);
    let w = Worker::start(&tools, dir.path(), &vars).await;
    let refused = w.me(&alice_cookie).await;
    refused.expect(
        StatusCode::INTERNAL_SERVER_ERROR,
        "a fresh isolate on a newer database",
    );
    let reason = refused.json["error"].as_str().unwrap_or("");
    assert!(
        reason.contains("version 99") && reason.contains("newer"),
        "the 500 says why: {reason}"
    );
}
