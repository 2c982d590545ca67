//! `duraclaw-gateway`: runs Claude Code sessions in git worktrees behind an
//! authenticated loopback WebSocket.

use clap::{Parser, Subcommand};
use duraclaw_gateway::cmd::{ServeArgs, init_logging, load_secret, shutdown_signal};

#[derive(Parser)]
#[command(name = "duraclaw-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve (the default).
    Serve(Box<ServeArgs>),
    /// Print the discovered worktrees and exit.
    Worktrees {
        /// Comma-separated globs.
        #[arg(long = "worktrees", env = "WORKTREE_PATTERNS", default_value = "")]
        patterns: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Worktrees { patterns, json }) => worktrees(&patterns, json),
        Some(Cmd::Serve(args)) => serve(*args).await,
        None => serve(cli.serve).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duraclaw-gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> duraclaw_core::Result<()> {
    let secret = load_secret(args.secret_file.as_deref())?;
    let running = duraclaw_gateway::cmd::RunningGateway::bind(&args, secret).await?;
    println!("duraclaw-gateway listening on ws://{}", running.addr);
    running.serve(shutdown_signal()).await;
    Ok(())
}

fn worktrees(patterns: &str, json: bool) -> duraclaw_core::Result<()> {
    let index = duraclaw_gateway::worktree::WorktreeIndex::from_env_value(patterns)?;
    let list = index.discover()?;
    if json {
        let text = serde_json::to_string_pretty(&list)
            .map_err(|e| duraclaw_core::Error::Invalid(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    if list.is_empty() {
        println!("no worktrees match {patterns:?} (set WORKTREE_PATTERNS)");
    }
    for w in list {
        println!(
            "{}\t{}\t{}\t{}",
            w.path,
            w.branch.as_deref().unwrap_or("(detached)"),
            w.head
                .as_deref()
                .map(|h| &h[..h.len().min(12)])
                .unwrap_or("-"),
            if w.dirty { "dirty" } else { "clean" }
        );
    }
    Ok(())
}
