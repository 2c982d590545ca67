use super::*;
use crate::error::Error;
use crate::state::SessionState;

#[test]
fn fast_event_frames_match_serde() {
    let event = Event::UserMessage(UserMessage {
        text: "hi \"there\"".into(),
        by: None,
        queued: false,
    });
    let json = event.to_json().unwrap();
    let typed = FromGateway::Event {
        session_id: "s-\"1\"".into(),
        gseq: 42,
        event: event.clone(),
    };
    assert_eq!(
        gateway_event_frame("s-\"1\"", 42, &json).unwrap(),
        encode_frame(&typed).unwrap()
    );
    let typed = ToBrowser::Event { seq: 7, event };
    assert_eq!(browser_event_frame(7, &json), encode_frame(&typed).unwrap());
}

fn known_events() -> Vec<Event> {
    vec![
        Event::SessionInit(SessionInit {
            model: Some("m".into()),
            ..SessionInit::default()
        }),
        Event::Assistant(Assistant {
            message_id: "m1".into(),
            phase: AssistantPhase::Delta,
            text: "héllo \"x\"\n".into(),
            aborted: false,
        }),
        Event::Result(TurnResult::default()),
        Event::Error(ErrorEvent {
            message: "boom".into(),
            ..ErrorEvent::default()
        }),
        Event::UserMessage(UserMessage {
            text: "hi".into(),
            by: None,
            queued: false,
        }),
        Event::SessionState(StateChange {
            state: SessionState::Active,
        }),
        Event::Unknown(serde_json::json!({"type": "future.thing", "x": [1, 2]})),
    ]
}

#[test]
fn a_raw_event_keeps_its_text_and_decodes_only_stateful_bodies() {
    for event in known_events() {
        let json = event.to_json().unwrap();
        let raw = RawEvent::from_json(&json).unwrap();
        assert_eq!(&**raw.json(), json.as_str());
        let stateful = STATEFUL_EVENT_TYPES.contains(&event.type_name());
        assert_eq!(raw.event(), stateful.then_some(&event), "{json}");
        assert_eq!(RawEvent::from_event(&event).unwrap(), raw);
    }
    // A stateful type whose body does not decode is kept, raw.
    let odd = r#"{"type":"result","cost_usd":"lots"}"#;
    let raw = RawEvent::from_json(odd).unwrap();
    assert_eq!(&**raw.json(), odd);
    assert!(matches!(raw.event(), Some(Event::Unknown(_))));
    // Not an event: refused, as the typed decoding refuses it.
    for bad in [
        "[\"assistant\"]",
        "{\"text\":\"no type\"}",
        "{\"type\":7}",
        "\"x\"",
        "{",
    ] {
        assert!(RawEvent::from_json(bad).is_err(), "{bad}");
    }
}

#[test]
fn gateway_frames_decode_as_the_typed_frames_do() {
    for event in known_events() {
        let json = event.to_json().unwrap();
        let text = gateway_event_frame("s\"1", 9, &json).unwrap();
        let GatewayFrame::Event {
            session_id,
            gseq,
            event: raw,
        } = decode_gateway_frame(&text).unwrap()
        else {
            panic!("not an event frame: {text}");
        };
        assert_eq!((session_id.as_str(), gseq), ("s\"1", 9));
        assert_eq!(&**raw.json(), json.as_str());
        let FromGateway::Event { event: typed, .. } =
            decode_frame::<FromGateway>(&text, "frame").unwrap()
        else {
            panic!("not an event frame");
        };
        assert_eq!(RawEvent::from_event(&typed).unwrap().event(), raw.event());
    }
    // Other frames decode as before; bad ones are refused.
    let pong = encode_frame(&FromGateway::Pong { nonce: 3 }).unwrap();
    assert_eq!(
        decode_gateway_frame(&pong).unwrap(),
        GatewayFrame::Other(FromGateway::Pong { nonce: 3 })
    );
    for bad in [
        r#"{"type":"event","session_id":"s","gseq":1,"event":[1]}"#,
        r#"{"type":"event","session_id":"s","event":{"type":"assistant"}}"#,
        r#"{"type":"nope"}"#,
        "not json",
    ] {
        assert!(decode_gateway_frame(bad).is_err(), "{bad}");
    }
    let huge = format!(
        r#"{{"type":"event","session_id":"s","gseq":1,"event":{{"type":"x","pad":"{}"}}}}"#,
        "a".repeat(MAX_FRAME_BYTES)
    );
    assert!(matches!(
        decode_gateway_frame(&huge),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn modes_that_skip_approvals_and_odd_models_are_refused() {
    use super::{check_model, check_permission_mode};
    for ok in ["default", "acceptEdits", "plan"] {
        assert_eq!(check_permission_mode(ok), Ok(()));
    }
    for skip in ["bypassPermissions", "auto", "dontAsk"] {
        let e = check_permission_mode(skip).unwrap_err();
        assert!(
            e.contains("refused") && e.contains("without approval"),
            "{e}"
        );
    }
    let e = check_permission_mode("yolo").unwrap_err();
    assert!(e.starts_with("unknown permission mode `yolo`"), "{e}");
    assert_eq!(check_model("claude-opus-4-1"), Ok(()));
    assert_eq!(check_model("opus"), Ok(()));
    for bad in ["", "a b", "x\u{202e}y", &"m".repeat(101)] {
        assert!(check_model(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn an_epoch_is_sixteen_hex_digits_on_the_wire() {
    let e = Epoch(0xaf);
    assert_eq!(serde_json::to_string(&e).unwrap(), "\"00000000000000af\"");
    assert_eq!(serde_json::from_str::<Epoch>("\"AF\"").unwrap(), e);
    assert_eq!(
        serde_json::from_str::<Epoch>("\"ffffffffffffffff\"").unwrap(),
        Epoch(u64::MAX)
    );
    for bad in [
        "\"\"",
        "\"10000000000000000\"",
        "\"-1\"",
        "\"0x1\"",
        "175",
        "null",
    ] {
        assert!(serde_json::from_str::<Epoch>(bad).is_err(), "{bad}");
    }
}
