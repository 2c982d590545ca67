//! [`host_object!`](crate::host_object): a Durable Object class around one
//! of this crate's hosts, so every Worker exporting them (the deployable
//! one, the bench worker) declares each class in one line.

/// Declares `pub struct $name`, a `#[durable_object]` class whose every
/// handler forwards to `$host` (`SessionHost`, `UserHost` or `PushHost`),
/// built with `$host::new(state, env)`. With `fetch = path`, requests go to
/// `path(&Rc<$host>, req)` instead (which forwards what it does not answer
/// to the host's `fetch`).
///
/// The calling crate depends on `worker` and `wasm-bindgen`, which
/// `#[durable_object]` expands to.
#[macro_export]
macro_rules! host_object {
    ($(#[$meta:meta])* $name:ident($host:ty)) => {
        $crate::host_object!(@object $(#[$meta])* $name($host), |host, req| host.fetch(req).await);
    };
    ($(#[$meta:meta])* $name:ident($host:ty), fetch = $fetch:path) => {
        $crate::host_object!(@object $(#[$meta])* $name($host), |host, req| $fetch(host, req).await);
    };
    (@object $(#[$meta:meta])* $name:ident($host:ty), |$h:ident, $r:ident| $fetch:expr) => {
        $(#[$meta])*
        #[::worker::durable_object]
        pub struct $name {
            host: ::std::rc::Rc<$host>,
        }

        impl ::worker::DurableObject for $name {
            fn new(state: ::worker::State, env: ::worker::Env) -> Self {
                $name {
                    host: ::std::rc::Rc::from(<$host>::new(state, env)),
                }
            }

            async fn fetch(&self, $r: ::worker::Request) -> ::worker::Result<::worker::Response> {
                let $h = &self.host;
                $fetch
            }

            async fn alarm(&self) -> ::worker::Result<::worker::Response> {
                self.host.alarm().await
            }

            // Every handler the runtime could call is implemented: the
            // defaults panic.
            async fn connect(&self, _socket: ::worker::Socket) -> ::worker::Result<()> {
                Ok(())
            }

            async fn websocket_message(
                &self,
                ws: ::worker::WebSocket,
                message: ::worker::WebSocketIncomingMessage,
            ) -> ::worker::Result<()> {
                self.host.websocket_message(ws, message).await
            }

            async fn websocket_close(
                &self,
                ws: ::worker::WebSocket,
                code: usize,
                _reason: String,
                _was_clean: bool,
            ) -> ::worker::Result<()> {
                self.host.websocket_close(ws, code).await
            }

            async fn websocket_error(
                &self,
                _ws: ::worker::WebSocket,
                _error: ::worker::Error,
            ) -> ::worker::Result<()> {
                Ok(())
            }
        }
    };
}
