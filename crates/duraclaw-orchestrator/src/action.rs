//! `POST /api/push/act`: Approve or Deny from a notification
//! (`duraclaw_host::push::action`). The token's decision goes through the
//! session's command path exactly as a browser's `answer` does: the actor
//! records it first-answer-wins in the log, the command is queued for the
//! gateway (whose audit trail names the decider) and sent.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Extension, Json, Router};
use duraclaw_host::push::action::{self, ActRequest};

use crate::api::{AppState, owned_actor};
use crate::authn::AuthUser;
use crate::error::ApiError;

/// The key action tokens are made and checked under
/// ([`action::action_key`]); `Debug` never shows it.
#[derive(Clone)]
pub struct ActionKey(Arc<[u8; 32]>);

impl ActionKey {
    /// The key.
    pub fn new(key: [u8; 32]) -> Self {
        ActionKey(Arc::new(key))
    }

    /// The key derived from the host's push secret ([`action::action_key`]).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self::new(action::action_key(secret))
    }
}

impl std::fmt::Debug for ActionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActionKey(…)")
    }
}

/// The route, checking tokens under `key` (none: push is turned off and
/// the route answers 503); merge it with [`api::routes`](crate::api::routes)
/// before the state is given.
pub fn routes(key: Option<ActionKey>) -> Router<AppState> {
    Router::new()
        .route("/api/push/act", post(act))
        .layer(Extension(key))
}

async fn act(
    State(app): State<AppState>,
    Extension(key): Extension<Option<ActionKey>>,
    user: AuthUser,
    Json(body): Json<ActRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let key = key.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            crate::push::OFF,
        )
    })?;
    let now = u64::try_from(app.orchestrator.clock().now_ms()).unwrap_or(0);
    let claim = action::check(key.0.as_slice(), &body, &user.name, now)?;
    let actor = owned_actor(&app, &user, &claim.session_id).await?;
    let id = action::command_id(&app.orchestrator.new_session_id());
    let out = actor.command(&id, claim.command(), &claim.person()).await?;
    for frame in &out.forward {
        // Not connected: the outbox sends it when the gateway is back.
        let _ = app.orchestrator.gateway().send(frame);
    }
    let answer = action::answer(&claim, &out)?;
    tracing::info!(
        session = %claim.session_id,
        question = %claim.question_id,
        user = %user.name,
        decision = claim.decision.name(),
        "decided from a notification"
    );
    Ok(Json(answer))
}
