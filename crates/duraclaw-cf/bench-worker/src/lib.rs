//! The bench worker: the product's Worker (`duraclaw_cf::router::handle`)
//! and Durable Objects (`SessionHost`, `UserHost`), exactly as
//! `examples/duraclaw-full/cloudflare` exports them, plus bench-only routes
//! that measure the raw baselines inside the same session object:
//!
//! - `GET /bench/<session>/scan`: one raw DO SQL scan of the session's
//!   events (`SELECT seq, json … ORDER BY seq`), every row read; answers
//!   `{"rows", "bytes"}`.
//! - `GET /bench/<session>/raw-replay` (WebSocket upgrade): the same scan,
//!   each row framed as the browser's event frame and sent on a plain
//!   accepted socket, before the response returns (as the real replay
//!   does): the physical limit of a replay.
//! - `GET /bench/<session>/echo?url=<http url>`: opens an outbound WebSocket
//!   from the object to `url` (the way the gateway link is opened) and
//!   echoes every text frame: the raw round trip through the object that
//!   the gateway link's append + ack is compared with.
//!
//! Every other path is the product's. Nothing here is deployed.

#![cfg(target_arch = "wasm32")]
// `#[durable_object]` exports methods to JavaScript that carry no docs.
#![allow(missing_docs)]

use std::rc::Rc;

use duraclaw_cf::DoSqlConn;
use duraclaw_cf::gateway_client::upgrade_url;
use duraclaw_cf::session::SessionHost;
use duraclaw_cf::user::UserHost;
use duraclaw_core::backend::migrate::{SqlConn, SqlValue};
use duraclaw_core::protocol::browser_event_frame;
use futures::StreamExt;
use worker::{
    Context, Env, Fetch, Headers, Method, Request, RequestInit, Response, Result, SqlStorage,
    SqlStorageValue, WebSocketPair, WebsocketEvent, event, js_sys,
};

duraclaw_cf::host_object!(
    /// The product's user object (the inbox session objects update).
    UserObject(UserHost)
);

duraclaw_cf::host_object!(
    /// The product's session object, with the bench routes in front.
    SessionObject(SessionHost),
    fetch = bench_fetch
);

/// The bench routes of a session object; every other request is the
/// product's.
async fn bench_fetch(host: &Rc<SessionHost>, req: Request) -> Result<Response> {
    let raw = Raw {
        sql: host.state().storage().sql(),
    };
    match req.path().as_str() {
        "/bench/scan" => raw.scan(),
        "/bench/raw-replay" => raw.raw_replay(),
        "/bench/echo" => echo(&req, host.clone()).await,
        "/bench/sql" => Response::from_json(&duraclaw_cf::do_sql::sql_counts()),
        _ => host.fetch(req).await,
    }
}

/// The raw baselines over the object's SQL.
struct Raw {
    sql: SqlStorage,
}

impl Raw {
    /// Every event row, read through `each(seq, json)`.
    fn each_event(&self, mut each: impl FnMut(u64, &str) -> Result<()>) -> Result<()> {
        let cursor = self
            .sql
            .exec("SELECT seq, json FROM events ORDER BY seq", None)?;
        for row in cursor.raw() {
            let row = row?;
            let (Some(SqlStorageValue::Integer(seq)), Some(SqlStorageValue::String(json))) =
                (row.first(), row.get(1))
            else {
                return Err(worker::Error::RustError(format!(
                    "an event row is not (seq, json): {row:?}"
                )));
            };
            each(u64::try_from(*seq).unwrap_or(0), json)?;
        }
        Ok(())
    }

    fn scan(&self) -> Result<Response> {
        let (mut rows, mut bytes) = (0u64, 0u64);
        self.each_event(|_, json| {
            rows += 1;
            bytes += json.len() as u64;
            Ok(())
        })?;
        Response::from_json(&serde_json::json!({"rows": rows, "bytes": bytes}))
    }

    fn raw_replay(&self) -> Result<Response> {
        let pair = WebSocketPair::new()?;
        pair.server.accept()?;
        self.each_event(|seq, json| pair.server.send_with_str(browser_event_frame(seq, json)))?;
        Response::from_websocket(pair.client)
    }
}

/// What the echo does with a frame before it sends it back.
#[derive(Clone, Copy, PartialEq)]
enum Store {
    /// Nothing.
    Raw,
    /// One autocommit `INSERT`.
    Write,
    /// An append's statements in one `transactionSync`, a read back, and
    /// the frame sent to every browser socket of the object.
    Txn,
}

const BENCH_TABLES: &str = "CREATE TABLE IF NOT EXISTS bench_echo (seq INTEGER PRIMARY KEY, json TEXT NOT NULL); \
     CREATE TABLE IF NOT EXISTS bench_head (id INTEGER PRIMARY KEY, last INTEGER NOT NULL); \
     INSERT OR IGNORE INTO bench_head (id, last) VALUES (1, 0)";

/// Stores `text` as `store` says; the seq it took.
fn store_frame(
    conn: &mut DoSqlConn,
    store: Store,
    seq: i64,
    text: &str,
) -> duraclaw_core::Result<()> {
    let row = [SqlValue::Integer(seq), SqlValue::Text(text.to_owned())];
    match store {
        Store::Raw => Ok(()),
        Store::Write => conn.execute("INSERT INTO bench_echo (seq, json) VALUES (?1, ?2)", &row),
        Store::Txn => {
            conn.transaction(&mut |tx| {
                tx.query("SELECT last FROM bench_head WHERE id = 1", &[])?;
                tx.execute("INSERT INTO bench_echo (seq, json) VALUES (?1, ?2)", &row)?;
                tx.execute("UPDATE bench_head SET last = ?1 WHERE id = 1", &row[..1])
            })?;
            conn.query(
                "SELECT seq, json FROM bench_echo WHERE seq >= ?1 ORDER BY seq",
                &row[..1],
            )
            .map(drop)
        }
    }
}

/// Opens an outbound WebSocket to `?url=` and echoes its text frames until
/// it closes, each stored first as `?store=` says.
async fn echo(req: &Request, host: Rc<SessionHost>) -> Result<Response> {
    let mut conn = DoSqlConn::new(&host.state().storage());
    let url = req.url()?;
    let query = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let store = match query("store").as_deref() {
        None | Some("raw") => Store::Raw,
        Some("write") => Store::Write,
        Some("txn") => Store::Txn,
        Some(other) => return Response::error(format!("no store mode {other}"), 400),
    };
    let Some(url) = query("url") else {
        return Response::error("echo needs ?url=", 400);
    };
    if store != Store::Raw {
        conn.execute_batch(BENCH_TABLES)
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
    }
    let headers = Headers::new();
    headers.set("Upgrade", "websocket")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let resp = Fetch::Request(Request::new_with_init(&upgrade_url(&url), &init)?)
        .send()
        .await?;
    let Some(ws) = resp.websocket() else {
        return Response::error(format!("{url} did not upgrade"), 502);
    };
    ws.accept()?;
    // Seqs after whatever an earlier echo stored.
    let mut seq = js_sys::Date::now() as i64 * 1000;
    worker::wasm_bindgen_futures::spawn_local(async move {
        let Ok(mut events) = ws.events() else { return };
        while let Some(Ok(WebsocketEvent::Message(m))) = events.next().await {
            let Some(text) = m.text() else { continue };
            seq += 1;
            if let Err(e) = store_frame(&mut conn, store, seq, &text) {
                worker::console_error!("the echo cannot store a frame: {e}");
                break;
            }
            if store == Store::Txn {
                // Published as an event is: to every browser socket (they
                // skip it: it is not an event frame).
                for browser in host.state().get_websockets() {
                    let _ = browser.send_with_str(&text);
                }
            }
            if ws.send_with_str(text).is_err() {
                break;
            }
        }
    });
    Response::ok("echoing")
}

/// `/bench/<session>/<op>` goes to that session's object as
/// `/bench/<op>`, a WebSocket upgrade included; the rest to the product.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    let Some(rest) = path.strip_prefix("/bench/") else {
        return duraclaw_cf::router::handle(req, env).await;
    };
    let Some((session, op)) = rest.split_once('/') else {
        return Response::error("/bench/<session>/<op>", 404);
    };
    let headers = Headers::new();
    if let Some(u) = req.headers().get("Upgrade")? {
        headers.set("Upgrade", &u)?;
    }
    let query = req
        .url()?
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let inner = Request::new_with_init(&format!("https://session/bench/{op}{query}"), &init)?;
    env.durable_object(duraclaw_cf::router::SESSIONS_BINDING)?
        .id_from_name(session)?
        .get_stub()?
        .fetch_with_request(inner)
        .await
}
