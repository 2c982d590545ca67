//! [`Relay`]: carries text frames between two tiers.
//!
//! Implementations: WebSockets (tokio-tungstenite, axum, Durable Object
//! sockets) and [`channel_pair`], an in-memory pair for tests. A relay checks
//! the frame limit on both ends so an oversized frame is an error value, not
//! a buffer that grows without bound.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::channel::mpsc;
use futures::lock::Mutex;

use crate::error::{Error, Result};
use crate::protocol::MAX_FRAME_BYTES;
use crate::{SendOutsideWasm, SyncOutsideWasm};

/// One end of a link that carries JSON text frames.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait Relay: std::fmt::Debug + SendOutsideWasm + SyncOutsideWasm {
    /// Sends one frame; [`Error::TooLarge`] over [`MAX_FRAME_BYTES`],
    /// [`Error::Closed`] when the other end is gone.
    async fn send(&self, frame: Arc<str>) -> Result<()>;

    /// The next frame, or `None` once the link is closed.
    async fn recv(&self) -> Result<Option<String>>;

    /// Closes the link; the other end's `recv` returns `None`.
    async fn close(&self) -> Result<()>;
}

/// A shared, dynamically typed relay.
pub type DynRelay = Arc<dyn Relay>;

/// One end of an in-memory link made by [`channel_pair`].
#[derive(Debug)]
pub struct ChannelRelay {
    tx: Mutex<Option<mpsc::Sender<Arc<str>>>>,
    rx: Mutex<mpsc::Receiver<Arc<str>>>,
}

/// Two connected in-memory relay ends, each buffering up to `capacity`
/// frames before `send` waits.
pub fn channel_pair(capacity: usize) -> (ChannelRelay, ChannelRelay) {
    let (a_tx, b_rx) = mpsc::channel(capacity);
    let (b_tx, a_rx) = mpsc::channel(capacity);
    (
        ChannelRelay {
            tx: Mutex::new(Some(a_tx)),
            rx: Mutex::new(a_rx),
        },
        ChannelRelay {
            tx: Mutex::new(Some(b_tx)),
            rx: Mutex::new(b_rx),
        },
    )
}

/// Checks a frame against the limit.
pub fn check_frame_size(len: usize) -> Result<()> {
    if len > MAX_FRAME_BYTES {
        Err(Error::TooLarge {
            what: "frame",
            size: len,
            limit: MAX_FRAME_BYTES,
        })
    } else {
        Ok(())
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl Relay for ChannelRelay {
    async fn send(&self, frame: Arc<str>) -> Result<()> {
        use futures::SinkExt;
        check_frame_size(frame.len())?;
        let mut guard = self.tx.lock().await;
        let tx = guard.as_mut().ok_or(Error::Closed("relay"))?;
        tx.send(frame).await.map_err(|_| Error::Closed("relay"))
    }

    async fn recv(&self) -> Result<Option<String>> {
        let mut rx = self.rx.lock().await;
        match rx.next().await {
            Some(frame) => {
                check_frame_size(frame.len())?;
                Ok(Some(frame.to_string()))
            }
            None => Ok(None),
        }
    }

    async fn close(&self) -> Result<()> {
        self.tx.lock().await.take();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn frames_cross_and_close_ends_the_stream() {
        block_on(async {
            let (a, b) = channel_pair(4);
            a.send("one".into()).await.unwrap();
            a.send("two".into()).await.unwrap();
            a.close().await.unwrap();
            assert_eq!(b.recv().await.unwrap().as_deref(), Some("one"));
            assert_eq!(b.recv().await.unwrap().as_deref(), Some("two"));
            assert_eq!(b.recv().await.unwrap(), None);
            assert!(matches!(a.send("x".into()).await, Err(Error::Closed(_))));
        });
    }

    #[test]
    fn an_oversized_frame_is_refused() {
        block_on(async {
            let (a, _b) = channel_pair(1);
            let big: Arc<str> = "x".repeat(MAX_FRAME_BYTES + 1).into();
            assert!(matches!(a.send(big).await, Err(Error::TooLarge { .. })));
        });
    }
}
