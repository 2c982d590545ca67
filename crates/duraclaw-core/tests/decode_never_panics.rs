//! Decoding a frame from a peer never panics, whatever the peer sends, and
//! whatever decodes re-encodes to something that decodes to the same value.
//!
//! Inputs: arbitrary strings, arbitrary JSON values, JSON shaped like frames
//! (known tags and field names with arbitrary values), and the golden
//! fixtures with one part replaced or removed. The case count comes from
//! `PROPTEST_CASES` (the test script sets 256).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use duraclaw_core::protocol::{
    Decision, Event, FromBrowser, FromGateway, ToBrowser, ToGateway, decode_frame, encode_frame,
};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Tags and field names of the protocol, so generated JSON reaches past the
/// first `type` check into the bodies.
const NAMES: &str = "\
    type v role agent id session_id command event gseq seq after_gseq nonce \
    ok error code message worktrees path repo dirty hello ack attach \
    list_worktrees ping pong snapshot command_result state reason last_seq \
    pending execute resume abort answer worktree prompt text question_id \
    decision allow deny answered expired cancelled updated_input remember \
    interrupt answers by who client kind permission ask_user tool_name input \
    questions options label session.init assistant tool_use tool_result \
    user_question question.resolved result user.message session.state \
    message_id phase delta final tool_use_id content is_error usage at_ms \
    paused active idle awaiting_approval gateway browser orchestrator tools";

fn names() -> Vec<&'static str> {
    NAMES.split_whitespace().collect()
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(names()).prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0u64), Just(1), Just(2), Just(u64::from(u32::MAX) + 1)]
            .prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        name().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((name(), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// An object with a known `type` and a few known fields.
fn frame_shaped() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(names()),
        prop::collection::vec((name(), json_value()), 0..6),
    )
        .prop_map(|(tag, fields)| {
            let mut map: Map<String, Value> = fields.into_iter().collect();
            map.insert("type".into(), Value::String(tag.into()));
            Value::Object(map)
        })
}

fn fixtures() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
            out.push(serde_json::from_str(&text).unwrap());
        }
    }
    out.sort_by_key(Value::to_string);
    out
}

/// Every position in `v` as a JSON pointer, the root included.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{at}/{escaped}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// A fixture with the value at one position replaced, or the key removed.
fn mutated_fixture() -> impl Strategy<Value = Value> {
    let fixtures = fixtures();
    (
        prop::sample::select(fixtures),
        any::<prop::sample::Index>(),
        prop::option::of(json_value()),
    )
        .prop_map(|(mut fixture, index, replacement)| {
            let mut at = Vec::new();
            pointers(&fixture, String::new(), &mut at);
            let pointer = index.get(&at).clone();
            match replacement {
                Some(new) => {
                    if let Some(slot) = fixture.pointer_mut(&pointer) {
                        *slot = new;
                    }
                }
                None => {
                    if let Some((parent, key)) = pointer.rsplit_once('/') {
                        let key = key.replace("~1", "/").replace("~0", "~");
                        match fixture.pointer_mut(parent) {
                            Some(Value::Object(map)) => {
                                map.remove(&key);
                            }
                            Some(Value::Array(items)) => {
                                if let Ok(i) = key.parse::<usize>() {
                                    items.remove(i);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            fixture
        })
}

/// Decodes `text` as `T`; if that works, the value must re-encode and decode
/// to itself.
fn decode_roundtrip<T>(text: &str) -> Result<(), TestCaseError>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = decode_frame::<T>(text, "frame") {
        let again = encode_frame(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = decode_frame::<T>(&again, "frame")
            .map_err(|e| TestCaseError::fail(format!("{e}: {text} re-encoded as {again}")))?;
        prop_assert_eq!(back, value);
    }
    Ok(())
}

fn decode_everything(text: &str) -> Result<(), TestCaseError> {
    decode_roundtrip::<ToGateway>(text)?;
    decode_roundtrip::<FromGateway>(text)?;
    decode_roundtrip::<FromBrowser>(text)?;
    decode_roundtrip::<ToBrowser>(text)?;
    decode_roundtrip::<Decision>(text)?;
    decode_roundtrip::<Event>(text)?;
    let _ = Event::from_json(text);
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        let _ = Event::from_value_lenient(value.clone());
        if let Ok(event) = Event::from_value(value) {
            let _ = event.type_name();
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_strings(text in any::<String>()) {
        decode_everything(&text)?;
    }

    #[test]
    fn json_like_strings(text in r#"[\[\]{}",:0-9a-z_. -]{0,64}"#) {
        decode_everything(&text)?;
    }

    #[test]
    fn arbitrary_json(value in json_value()) {
        decode_everything(&value.to_string())?;
    }

    #[test]
    fn frame_shaped_json(value in frame_shaped()) {
        decode_everything(&value.to_string())?;
        let frame = serde_json::json!({"type": "event", "session_id": "s", "gseq": 1, "seq": 1, "event": value});
        decode_everything(&frame.to_string())?;
    }

    #[test]
    fn mutated_fixtures(value in mutated_fixture()) {
        decode_everything(&value.to_string())?;
    }
}
