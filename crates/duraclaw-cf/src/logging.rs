//! Logs from a Worker or Durable Object: `tracing` events as one line each
//! on the runtime's console (`wrangler dev` prints them; `wrangler tail` in
//! production), and panics reported there before the instance aborts.

use std::io::Write;
use std::sync::Once;

/// One event's text, written to the console when the formatter is done.
struct ConsoleLine(Vec<u8>);

impl Write for ConsoleLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ConsoleLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim_end();
        if !text.is_empty() {
            worker::console_log!("{text}");
        }
    }
}

/// Installs the console subscriber (at `info`) and the panic hook, once per
/// instance; later calls do nothing.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| ConsoleLine(Vec::new()))
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::INFO)
            .try_init();
        std::panic::set_hook(Box::new(|info| {
            worker::console_error!("panic: {info}");
        }));
    });
}
