//! An axum app with its own login that embeds Duraclaw's orchestrator.
//!
//! [`TokenAuth`] says who a request comes from by a bearer token in
//! `Authorization`; [`app`] serves the app's own routes and mounts the
//! orchestrator's session API ([`duraclaw_orchestrator::router`]) under
//! `/claw`, both behind that login.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::get;
use duraclaw_orchestrator::authn::BoxFuture;
use duraclaw_orchestrator::gateway::GatewayLink;
use duraclaw_orchestrator::{
    ApiError, AppState, AuthUser, Authenticate, Authenticator, LoginId, Orchestrator,
};
use subtle::ConstantTimeEq;

/// Users by bearer token: `Authorization: Bearer <token>` is the user the
/// token belongs to. Tokens are compared in constant time.
#[derive(Debug, Clone, Default)]
pub struct TokenAuth {
    users: Vec<(String, String)>,
}

impl TokenAuth {
    /// `(user, token)` pairs.
    pub fn new(users: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            users: users.into_iter().collect(),
        }
    }

    fn user_of(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (user, known) in &self.users {
            if bool::from(known.as_bytes().ct_eq(token.as_bytes())) {
                found = Some(user.as_str());
            }
        }
        found
    }
}

impl Authenticate for TokenAuth {
    fn authenticate<'a>(
        &'a self,
        parts: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<AuthUser>, ApiError>> {
        let user = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|token| self.user_of(token.trim()))
            .map(|name| AuthUser {
                name: name.to_owned(),
                // One login per user: the name, never the token.
                login: LoginId::new(name),
            });
        Box::pin(async move { Ok(user) })
    }
}

/// The app's own state: here only who is asking.
#[derive(Clone)]
struct Own {
    auth: Authenticator,
}

impl FromRef<Own> for Authenticator {
    fn from_ref(own: &Own) -> Self {
        own.auth.clone()
    }
}

/// The app: `/` and `/whoami` of its own, the orchestrator under `/claw`.
pub fn app(auth: Authenticator, orchestrator: Arc<Orchestrator>) -> Router {
    let claw = duraclaw_orchestrator::router(AppState {
        auth: auth.clone(),
        orchestrator,
        public_origin: None,
        executor: None,
        executor_error: None,
    });
    Router::new()
        .route(
            "/",
            get(|| async { "an app that embeds Duraclaw under /claw\n" }),
        )
        .route(
            "/whoami",
            get(|user: AuthUser| async move { format!("{}\n", user.name) }),
        )
        .with_state(Own { auth })
        .nest("/claw", claw)
}

/// An orchestrator over sessions in memory, dialling the gateway at
/// `gateway_url` with `secret`; keep the returned tasks (the gateway link
/// and the evictor) running while it serves.
pub fn orchestrator(
    gateway_url: &str,
    secret: &str,
) -> (Arc<Orchestrator>, [tokio::task::JoinHandle<()>; 2]) {
    let link = GatewayLink::new(gateway_url, secret);
    let orch = Orchestrator::new(
        Arc::new(duraclaw_store::MemoryDirectory::new()),
        link.clone(),
        Duration::from_secs(60),
    );
    let dialler = link.spawn(Arc::downgrade(&orch));
    let evictor = orch.spawn_evictor();
    (orch, [dialler, evictor])
}
