//! The compressed replay (`compress=deflate-raw`, `docs/protocol.md`,
//! "Compressed replay"): a replay's text frames joined by `"\n"` (JSON
//! never holds a raw newline) and sent as binary frames of raw DEFLATE
//! (RFC 1951), which browsers decode with
//! `DecompressionStream('deflate-raw')`. Both hosts batch through
//! [`Batcher`].

use miniz_oxide::deflate::compress_to_vec;
use miniz_oxide::inflate::decompress_to_vec_with_limit;

/// The `compress` value that asks for it.
pub const DEFLATE_RAW: &str = "deflate-raw";

/// The most bytes of text frames (with their separating newlines) one
/// binary frame carries; a single frame over it goes alone.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The DEFLATE level (0–10), measured in `docs/PERFORMANCE.md` §7: on
/// text like a coding agent's, 2 sends a fifth fewer bytes than 1 for a
/// fifth more CPU; 6 (the usual default) saves 11 % more for 3× the CPU.
pub const LEVEL: u8 = 2;

/// Raw DEFLATE of `text`.
pub fn deflate(text: &str) -> Vec<u8> {
    compress_to_vec(text.as_bytes(), LEVEL)
}

/// Inflates one binary frame of a compressed replay into its text frames
/// (at most `limit` bytes of text). The error says why it cannot.
pub fn inflate(bytes: &[u8], limit: usize) -> Result<Vec<String>, String> {
    let raw = decompress_to_vec_with_limit(bytes, limit)
        .map_err(|e| format!("not raw DEFLATE within {limit} bytes: {e}"))?;
    let text = String::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))?;
    Ok(text.split('\n').map(str::to_owned).collect())
}

/// Gathers a replay's text frames into binary frames of at most
/// [`MAX_BATCH_BYTES`] of text each, in order.
#[derive(Debug, Default)]
pub struct Batcher {
    text: String,
    frames: usize,
}

impl Batcher {
    /// An empty batcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `frame` (one text frame, no newline in it); returns the binary
    /// frame of what was gathered before it when `frame` does not fit.
    pub fn push(&mut self, frame: &str) -> Option<Vec<u8>> {
        debug_assert!(!frame.contains('\n'));
        let out = if self.frames > 0 && self.text.len() + 1 + frame.len() > MAX_BATCH_BYTES {
            self.finish()
        } else {
            None
        };
        if self.frames > 0 {
            self.text.push('\n');
        }
        self.text.push_str(frame);
        self.frames += 1;
        out
    }

    /// The binary frame of what is gathered, if anything.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if self.frames == 0 {
            return None;
        }
        let out = deflate(&self.text);
        self.text.clear();
        self.frames = 0;
        Some(out)
    }
}

/// The binary frames of `frames`, in order (none for none).
pub fn batches<S: AsRef<str>>(frames: impl IntoIterator<Item = S>) -> Vec<Vec<u8>> {
    let mut b = Batcher::new();
    let mut out: Vec<Vec<u8>> = frames
        .into_iter()
        .filter_map(|f| b.push(f.as_ref()))
        .collect();
    out.extend(b.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 4 * MAX_BATCH_BYTES;

    fn frame() -> impl Strategy<Value = String> {
        prop_oneof![
            // Small JSON-like frames, and some large enough to fill batches.
            "[{}\"a-z0-9 ,:é\\\\]{0,200}",
            (1usize..120_000).prop_map(|n| format!("{{\"t\":\"{}\"}}", "x".repeat(n))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn batches_decode_to_the_frames_in_order(frames in prop::collection::vec(frame(), 0..40)) {
            let mut b = Batcher::new();
            let mut out = Vec::new();
            let mut sizes = Vec::new();
            for f in &frames {
                if let Some(bin) = b.push(f) {
                    out.push(bin);
                }
                sizes.push(f.len());
            }
            out.extend(b.finish());
            let mut got = Vec::new();
            for bin in &out {
                let lines = inflate(bin, LIMIT).unwrap();
                let text_len = lines.iter().map(|l| l.len() + 1).sum::<usize>() - 1;
                prop_assert!(text_len <= MAX_BATCH_BYTES || lines.len() == 1, "{} bytes in {} frames", text_len, lines.len());
                got.extend(lines);
            }
            prop_assert_eq!(&got, &frames);
            prop_assert_eq!(batches(&frames), out);
        }
    }

    #[test]
    fn nothing_gives_no_frame_and_a_big_frame_goes_alone() {
        assert!(batches(Vec::<String>::new()).is_empty());
        assert!(Batcher::new().finish().is_none());
        let big = "y".repeat(MAX_BATCH_BYTES + 10);
        let out = batches(["a", big.as_str(), "b"]);
        assert_eq!(out.len(), 3);
        assert_eq!(inflate(&out[1], LIMIT).unwrap(), [big]);
        assert!(inflate(b"\xff\xff", LIMIT).is_err());
    }
}
