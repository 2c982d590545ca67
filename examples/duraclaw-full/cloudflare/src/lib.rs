//! Duraclaw on Cloudflare: the glue that exports the Worker's fetch handler
//! and the Durable Objects (`SessionObject` per session, `UserObject` and
//! `PushObject` per user) to the runtime. All the logic is in `duraclaw-cf`
//! (`router::handle`, `session::SessionHost`, `user::UserHost`,
//! `push::PushHost`).

#![cfg(target_arch = "wasm32")]
// `#[durable_object]` exports methods to JavaScript that carry no docs.
#![allow(missing_docs)]

use worker::{Context, Env, Request, Response, Result, event};

duraclaw_cf::host_object!(
    /// One session: its log, its browser sockets and its gateway link.
    SessionObject(duraclaw_cf::session::SessionHost)
);

duraclaw_cf::host_object!(
    /// One user: their inbox and its live stream.
    UserObject(duraclaw_cf::user::UserHost)
);

duraclaw_cf::host_object!(
    /// One user's Web Push sender: records deliveries in D1, sends them
    /// with `fetch`, retries by its alarm.
    PushObject(duraclaw_cf::push::PushHost)
);

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    duraclaw_cf::router::handle(req, env).await
}
