//! The shell-script agent hosted in this process: no gateway, no WebSocket.
//! Sessions live in a SQLite file; the first run starts one and allows its
//! command, every later run replays the log and sends one more message.
//!
//! Usage: `in_process <directory>`

use std::sync::Arc;

use custom_executor::ShellExecutor;
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::local::LocalSession;
use duraclaw_core::protocol::{Decision, Event, Execute};
use duraclaw_core::store::{SessionDirectory, SessionMeta};
use duraclaw_store::SqliteDirectory;

const AGENT: &str = r#"case "$TURN" in
0) printf 'run touch hello.txt\n'; read reply; printf 'say The command was %s.\n' "$reply" ;;
*) printf 'say Turn %s: %s\n' "$TURN" "$1" ;;
esac
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).ok_or("usage: in_process <dir>")?);
    let app = dir.join("app");
    std::fs::create_dir_all(&app)?;
    std::fs::write(dir.join("agent.sh"), AGENT)?;
    let agent = Arc::new(ShellExecutor::new(dir.join("agent.sh"), dir.join("state")));
    let sessions = SqliteDirectory::open(dir.join("sessions.db")).await?;

    let (session, after) = if sessions.list_all().await?.is_empty() {
        let store = sessions
            .create(SessionMeta::new("s1", "alice", SystemClock.now_ms()))
            .await?;
        let first = Execute::new(app.display().to_string(), "Create hello.txt");
        (LocalSession::start(agent, store, "alice", first).await?, 0)
    } else {
        let session = LocalSession::reopen(agent, sessions.open("s1").await?, "alice").await?;
        let last = session.snapshot().await?.last_seq;
        println!("replay of {last} events:");
        let mut replay = session.subscribe(0);
        while let Some(e) = replay.next().await {
            let e = e?;
            println!("  {} {}", e.seq, e.json);
            if e.seq == last {
                break;
            }
        }
        session.send("Anything else?").await?;
        (session, last)
    };

    let mut live = session.subscribe(after);
    while let Some(e) = live.next().await {
        let e = e?;
        println!("{} {}", e.seq, e.json);
        match e.event()? {
            Event::UserQuestion(q) => {
                let allow = Decision::Allow {
                    updated_input: None,
                    remember: false,
                };
                session.answer(&q.question_id, allow).await?;
            }
            Event::Result(_) => break,
            _ => {}
        }
    }
    session.shutdown().await?;
    println!("state: {:?}", session.snapshot().await?.state);
    Ok(())
}
