//! A browser on a session's WebSocket, as a client: the frames it reads
//! with a deadline and the events it got, checked to come in order with no
//! gap or duplicate.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The bound on any one frame's arrival and on a wait for an event.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A client end of a session's WebSocket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A browser on a session's WebSocket: the events it got, in order.
pub struct Browser {
    pub ws: Ws,
    /// The `snapshot` frame it got after `hello`.
    pub snapshot: Value,
    /// The seq it resumed after.
    pub after: u64,
    /// `(seq, event)` in the order they came.
    pub events: Vec<(u64, Value)>,
    /// One bound for every wait, set by [`Browser::bound_by`]; otherwise
    /// each wait gets [`DEADLINE`].
    pub deadline: Option<Instant>,
}

/// Opens session `id`'s socket after `after` with `cookie` from `base`'s
/// own origin; `HTTP <status>` when the upgrade is refused.
pub async fn open_ws(base: &str, cookie: &str, id: &str, after: u64) -> Result<Ws, String> {
    open_ws_query(base, cookie, id, &format!("after={after}&compact=0")).await
}

/// [`open_ws`] with the stream's whole `query`.
pub async fn open_ws_query(base: &str, cookie: &str, id: &str, query: &str) -> Result<Ws, String> {
    let url = format!(
        "{}/api/sessions/{id}/ws?{query}",
        base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Cookie", cookie.parse().unwrap());
    req.headers_mut().insert("Origin", base.parse().unwrap());
    match tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
            Err(format!("HTTP {}", r.status().as_u16()))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

impl Browser {
    /// Opens the socket and reads its `hello` and `snapshot`.
    pub async fn connect(base: &str, cookie: &str, id: &str, after: u64) -> Browser {
        Browser::connect_by(None, base, cookie, id, after).await
    }

    /// Resumes after `after`, naming the log's `epoch` the copy came from
    /// (the snapshot's `epoch`), and reads the `hello` and `snapshot`.
    pub async fn resume(
        base: &str,
        cookie: &str,
        id: &str,
        after: u64,
        epoch: Option<&str>,
    ) -> Browser {
        let query = match epoch {
            Some(e) => format!("after={after}&epoch={e}&compact=0"),
            None => format!("after={after}&compact=0"),
        };
        let ws = open_ws_query(base, cookie, id, &query)
            .await
            .unwrap_or_else(|e| panic!("WebSocket to {id}: {e}"));
        Browser::opened(ws, None, after).await
    }

    /// The snapshot's `epoch`, where the host names one.
    pub fn epoch(&self) -> Option<String> {
        self.snapshot["epoch"].as_str().map(str::to_owned)
    }

    /// [`Browser::connect`] with every wait of the browser bounded by
    /// `deadline` (see [`Browser::bound_by`]).
    pub async fn connect_by(
        deadline: Option<Instant>,
        base: &str,
        cookie: &str,
        id: &str,
        after: u64,
    ) -> Browser {
        let ws = open_ws(base, cookie, id, after)
            .await
            .unwrap_or_else(|e| panic!("WebSocket to {id}: {e}"));
        Browser::opened(ws, deadline, after).await
    }

    async fn opened(ws: Ws, deadline: Option<Instant>, after: u64) -> Browser {
        let mut b = Browser {
            ws,
            snapshot: Value::Null,
            after,
            events: Vec::new(),
            deadline,
        };
        let hello = b.frame().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["role"], "orchestrator");
        let snapshot = b.frame().await;
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        b.snapshot = snapshot;
        b
    }

    /// Bounds every later wait by `deadline`, one bound for a whole step
    /// (e.g. a host coming back by itself) instead of [`DEADLINE`] for each
    /// frame.
    pub fn bound_by(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// The end of a wait that starts now.
    fn wait_end(&self) -> Instant {
        self.deadline.unwrap_or_else(|| Instant::now() + DEADLINE)
    }

    /// The next frame of any type.
    pub async fn frame(&mut self) -> Value {
        let deadline = self.wait_end();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("a readable frame");
            match msg {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Close(c) => panic!("the server closed the socket: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The seq of the last event it got.
    pub fn last_seq(&self) -> u64 {
        self.events.last().map_or(self.after, |(s, _)| *s)
    }

    /// Records an event frame, checking it is the next seq.
    pub fn take_event(&mut self, f: &Value) -> bool {
        if f["type"] != "event" {
            return false;
        }
        let seq = f["seq"].as_u64().unwrap();
        assert_eq!(
            seq,
            self.last_seq() + 1,
            "events must come in order with no gap or duplicate: {f}"
        );
        self.events.push((seq, f["event"].clone()));
        true
    }

    /// Reads frames until an event matching `until`; returns it.
    pub async fn until(&mut self, until: impl Fn(&Value) -> bool) -> Value {
        let within = self.wait_end().saturating_duration_since(Instant::now());
        self.until_within(within, until).await
    }

    /// [`until`](Browser::until), first among the events already recorded
    /// after `seq` (a command's reply may come after the events it caused).
    pub async fn until_after(&mut self, seq: u64, until: impl Fn(&Value) -> bool) -> Value {
        let seen = self.events.iter().find(|(s, e)| *s > seq && until(e));
        match seen {
            Some((_, e)) => e.clone(),
            None => self.until(until).await,
        }
    }

    /// [`until`](Browser::until) with a bound of `within`, however long the
    /// socket stays quiet meanwhile (a link coming back by itself).
    pub async fn until_within(
        &mut self,
        within: Duration,
        until: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("no such event within {within:?}; got {:?}", self.events)
                })
                .expect("the socket is open")
                .expect("a readable frame");
            let f: Value = match msg {
                Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
                Message::Close(c) => panic!("the server closed the socket: {c:?}"),
                _ => continue,
            };
            if self.take_event(&f) && until(&f["event"]) {
                return f["event"].clone();
            }
        }
    }

    /// Reads until the replay reached `seq`.
    pub async fn until_seq(&mut self, seq: u64) {
        while self.last_seq() < seq {
            let f = self.frame().await;
            self.take_event(&f);
        }
    }

    /// Sends `v` as a text frame.
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    /// Sends a command and returns its result (events meanwhile recorded).
    pub async fn command(&mut self, id: &str, command: Value) -> Value {
        self.send(json!({"type": "command", "id": id, "command": command}))
            .await;
        loop {
            let f = self.frame().await;
            assert_ne!(f["type"], "error", "the command was refused: {f}");
            if !self.take_event(&f) && f["type"] == "command_result" && f["id"] == id {
                return f;
            }
        }
    }

    /// The next frame that is not an event (events recorded).
    pub async fn reply(&mut self) -> Value {
        loop {
            let f = self.frame().await;
            if !self.take_event(&f) {
                return f;
            }
        }
    }
}

/// Matches an event of type `kind`.
pub fn is(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == kind
}

/// Matches a `session.state` event with `state` (and `reason`, when given).
pub fn state_is(state: &'static str, reason: Option<&'static str>) -> impl Fn(&Value) -> bool {
    move |e| {
        e["type"] == "session.state"
            && e["state"] == state
            && reason.is_none_or(|r| e["reason"] == r)
    }
}
