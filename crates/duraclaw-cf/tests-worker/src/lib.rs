//! The conformance test worker: `GET /conformance` runs every case of core's
//! store suite (`STORE_CASES`) and migration suite (`SQL_CASES`) against the
//! DO-SQL store, and duraclaw-cf's own `DO_CASES`, each case in a fresh
//! Durable Object, and answers JSON `{case: "ok" | "failed: …"}`.
//! `GET /health` answers `ok`.
//!
//! The D1 auth (`duraclaw_cf::auth`, database binding `DB`), driven by
//! crates/duraclaw-cf/tests/d1_auth.rs: every `/api/*` request migrates the
//! schema (500 with the reason when it cannot) and goes to
//! `CfAuth::handle`; `/api/whoami` (any method) answers the user of
//! `CfAuth::require_user`. `/test/d1/*` are this worker's own probes:
//! `dump` (every row of every table), `migrate` (twice, uncached),
//! `set-version?v=N`, `pbkdf2?i=N` (whether WebCrypto accepts N
//! iterations), `weak-hash?name=&password=&i=N` (an old, weaker hash), and
//! the session index (`index` POST a SessionMeta,
//! `list?owner=`, `owner?id=`).
//!
//! `?run=<id>` names the objects of one run (default: the time), so a run
//! never meets the data of an earlier one. A case that makes its object
//! fail is reported as failed and the run goes on with the next case.

#![cfg(target_arch = "wasm32")]
// `#[durable_object]` exports methods to JavaScript that carry no docs.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use duraclaw_cf::auth::{CfAuth, json_error};
use duraclaw_cf::conformance::{DO_CASES, DoSqlHarness, DoStoreHarness, run_do_case};
use duraclaw_core::conformance::{
    CaseResult, SQL_CASES, STORE_CASES, run_sql_case, run_store_case,
};
use worker::{
    Context, Date, DurableObject, Env, Request, Response, Result, Socket, State, WebSocket,
    WebSocketIncomingMessage, durable_object, event,
};

/// Runs one case per request: `/store/<case>`, `/sql/<case>` or `/do/<case>`.
#[durable_object]
pub struct ConformanceObject {
    state: State,
}

impl DurableObject for ConformanceObject {
    fn new(state: State, _env: Env) -> Self {
        ConformanceObject { state }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let path = req.path();
        let outcome: CaseResult = if let Some(case) = path.strip_prefix("/store/") {
            run_store_case(case, &DoStoreHarness::new(&self.state.storage())).await
        } else if let Some(case) = path.strip_prefix("/sql/") {
            run_sql_case(case, &DoSqlHarness::new(&self.state.storage()))
        } else if let Some(case) = path.strip_prefix("/do/") {
            run_do_case(case, &self.state.storage())
        } else {
            return Response::error(
                format!("no path {path:?} here: /store/<case>, /sql/<case> or /do/<case>"),
                404,
            );
        };
        Response::ok(match outcome {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("failed: {e}"),
        })
    }

    // Every handler the runtime could call is implemented: the defaults panic.
    async fn alarm(&self) -> Result<Response> {
        Response::error("this object sets no alarms", 500)
    }

    async fn connect(&self, _socket: Socket) -> Result<()> {
        Ok(())
    }

    async fn websocket_message(
        &self,
        _ws: WebSocket,
        _message: WebSocketIncomingMessage,
    ) -> Result<()> {
        Ok(())
    }

    async fn websocket_close(
        &self,
        _ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        Ok(())
    }

    async fn websocket_error(&self, _ws: WebSocket, _error: worker::Error) -> Result<()> {
        Ok(())
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    match route(req, env).await {
        Ok(response) => Ok(response),
        Err(e) => Response::error(format!("conformance worker: {e}"), 500),
    }
}

async fn route(mut req: Request, env: Env) -> Result<Response> {
    let url = req.url()?;
    if url.path().starts_with("/api/") {
        return api(&mut req, &env).await;
    }
    if let Some(probe) = url.path().strip_prefix("/test/d1/") {
        return d1_probe(probe, &mut req, &url, &env).await;
    }
    match url.path() {
        "/health" => Response::ok("ok"),
        "/conformance" => {
            let run = url
                .query_pairs()
                .find(|(k, _)| k == "run")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| Date::now().as_millis().to_string());
            Response::from_json(&run_all(&env, &run).await?)
        }
        other => Response::error(format!("no path {other:?} here: try /conformance"), 404),
    }
}

/// Every case, each in the object named `<run>/<suite>/<case>`.
async fn run_all(env: &Env, run: &str) -> Result<BTreeMap<String, String>> {
    let objects = env.durable_object("CONFORMANCE")?;
    let mut results = BTreeMap::new();
    for (suite, cases) in [("store", STORE_CASES), ("sql", SQL_CASES), ("do", DO_CASES)] {
        for case in cases {
            let stub = objects
                .id_from_name(&format!("{run}/{suite}/{case}"))?
                .get_stub()?;
            let outcome = match stub
                .fetch_with_str(&format!("https://conformance/{suite}/{case}"))
                .await
            {
                Ok(mut answer) => {
                    let status = answer.status_code();
                    match answer.text().await {
                        Ok(text) if status == 200 => text,
                        Ok(text) => format!("failed: HTTP {status}: {text}"),
                        Err(e) => format!("failed: HTTP {status}, unreadable answer: {e}"),
                    }
                }
                Err(e) => format!("failed: the object did not answer: {e}"),
            };
            if results.insert((*case).to_owned(), outcome).is_some() {
                results.insert(
                    (*case).to_owned(),
                    "failed: two suites have a case of this name".to_owned(),
                );
            }
        }
    }
    Ok(results)
}

/// `/api/*`: the auth routes, and `/api/whoami` behind `require_user`.
async fn api(req: &mut Request, env: &Env) -> Result<Response> {
    let auth = CfAuth::from_env(env)?;
    if let Err(e) = auth.migrate().await {
        return json_error(500, &e.to_string());
    }
    if let Some(answer) = auth.handle(req).await {
        return answer;
    }
    if req.path() == "/api/whoami" {
        return match auth.require_user(req).await {
            Ok(user) => Response::from_json(&serde_json::json!({ "user": user.name })),
            Err(denied) => denied.into_response(),
        };
    }
    json_error(404, "no such route")
}

/// The worker's own probes of the auth's D1 side.
async fn d1_probe(
    probe: &str,
    req: &mut Request,
    url: &worker::Url,
    env: &Env,
) -> Result<Response> {
    let query = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let auth = CfAuth::from_env(env)?;
    match probe {
        "dump" => {
            let db = env.d1("DB")?;
            let mut tables = serde_json::Map::new();
            for table in [
                "duraclaw_meta",
                "duraclaw_migrations",
                "users",
                "login_sessions",
                "login_failures",
                "session_index",
            ] {
                let rows = db
                    .prepare(format!("SELECT * FROM {table}"))
                    .all()
                    .await?
                    .results::<serde_json::Value>()?;
                tables.insert(table.to_owned(), serde_json::Value::Array(rows));
            }
            Response::from_json(&tables)
        }
        "migrate" => {
            let first = auth.migrate_uncached().await;
            let again = auth.migrate_uncached().await;
            match (first, again) {
                (Ok(first), Ok(again)) => {
                    Response::from_json(&serde_json::json!({ "applied": first, "again": again }))
                }
                (Err(e), _) | (_, Err(e)) => json_error(500, &e.to_string()),
            }
        }
        "set-version" => {
            let version: i64 = query("v").parse().unwrap_or(0);
            env.d1("DB")?
                .prepare("UPDATE duraclaw_meta SET int_value = ?1 WHERE key = 'auth_schema'")
                .bind(&[wasm_bindgen::JsValue::from_f64(version as f64)])?
                .run()
                .await?;
            Response::ok("ok")
        }
        "index" => {
            let meta: duraclaw_core::store::SessionMeta = req.json().await?;
            auth.index_session(&meta).await?;
            Response::ok("ok")
        }
        "list" => Response::from_json(&auth.list_sessions(&query("owner")).await?),
        // Sets user `name`'s password to `password` hashed with only `i`
        // iterations, as an older release might have stored it.
        "weak-hash" => {
            use duraclaw_cf::auth::password::PasswordHash;
            let iterations: u32 = query("i").parse().unwrap_or(0);
            let salt = b"an old salt 0123".to_vec();
            let hash =
                duraclaw_cf::auth::pbkdf2_sha256(query("password").as_bytes(), &salt, iterations)
                    .await
                    .map_err(worker::Error::RustError)?;
            let stored = PasswordHash {
                iterations,
                salt,
                hash,
            }
            .encode();
            env.d1("DB")?
                .prepare("UPDATE users SET password_hash = ?1 WHERE name = ?2")
                .bind(&[stored.as_str().into(), query("name").as_str().into()])?
                .run()
                .await?;
            Response::ok("ok")
        }
        // Whether the runtime's PBKDF2 accepts `i` iterations.
        "pbkdf2" => {
            let iterations: u32 = query("i").parse().unwrap_or(0);
            match duraclaw_cf::auth::pbkdf2_sha256(b"password", b"saltsalt", iterations).await {
                Ok(bytes) => Response::from_json(&serde_json::json!({ "ok": bytes.len() })),
                Err(e) => Response::from_json(&serde_json::json!({ "error": e })),
            }
        }
        "owner" => Response::from_json(&auth.session_owner(&query("id")).await?),
        other => Response::error(format!("no probe {other:?}"), 404),
    }
}
