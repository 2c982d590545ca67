//! `embed-orchestrator`: serves [`embed_orchestrator::app`] on
//! `EMBED_BIND` (default 127.0.0.1:8788), dialling the gateway at
//! `CC_GATEWAY_URL` with `CC_GATEWAY_SECRET`; users are `EMBED_TOKENS`,
//! `user:token` pairs separated by commas.

use std::process::ExitCode;

use duraclaw_orchestrator::Authenticator;
use embed_orchestrator::{TokenAuth, app, orchestrator};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed-orchestrator: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let url = std::env::var("CC_GATEWAY_URL").unwrap_or_else(|_| "ws://127.0.0.1:9877".into());
    let secret = var("CC_GATEWAY_SECRET")?;
    let users = var("EMBED_TOKENS")?
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            pair.split_once(':')
                .map(|(user, token)| (user.trim().to_owned(), token.trim().to_owned()))
                .ok_or_else(|| format!("EMBED_TOKENS: expected user:token, got {pair:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bind = std::env::var("EMBED_BIND").unwrap_or_else(|_| "127.0.0.1:8788".into());
    let (orch, _tasks) = orchestrator(&url, &secret);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    println!("listening on http://{bind} (Duraclaw under /claw)");
    axum::serve(
        listener,
        app(Authenticator::new(TokenAuth::new(users)), orch),
    )
    .await
    .map_err(|e| format!("server error: {e}"))
}
