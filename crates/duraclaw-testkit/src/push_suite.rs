//! The Web Push suite, written once against [`Host`] and a
//! [`PushService`] stand-in whose CA the host trusts: what a question,
//! its decision, a busy or gone push service and the user's settings make
//! the host send, as the push service and the browser see it, and what
//! `/api/push/…` records and refuses. `tests/push.rs` runs it on the
//! local host.
//!
//! `DURACLAW_CASES=name,name` runs only those cases.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::api::PASSWORD;
use crate::browser::{Browser, is};
use crate::host::{DEADLINE, Host, http, login};
use crate::push_service::{Arrival, PushService, Subscriber};
use crate::rules::send as call;

/// The worktrees the suite starts sessions in (pass them as
/// `Options::worktrees`).
pub const WORKTREES: &[&str] = &["push-owner", "push-retry", "push-off", "push-short"];

/// How long a push may take to arrive (retries included).
const ARRIVES_WITHIN: Duration = Duration::from_secs(30);

/// A case of the suite.
pub type Case<H> = (
    &'static str,
    for<'a> fn(&'a H, &'a PushService) -> BoxFuture<'a, ()>,
);

macro_rules! cases {
    ($($case:ident),+ $(,)?) => {
        vec![$((stringify!($case),
            |h: &'_ H, p: &'_ PushService| -> BoxFuture<'_, ()> { Box::pin($case(h, p)) })),+]
    };
}

/// The suite's cases.
pub fn cases<H: Host>() -> Vec<Case<H>> {
    cases![
        a_question_arrives_decrypted_at_its_owner_only_then_its_decision_replaces_it,
        a_busy_push_service_is_retried_and_a_gone_subscription_removed,
        settings_off_send_nothing_and_a_short_preview_shows_the_input,
        the_push_routes_refuse_bad_bodies_and_other_users_ids,
    ]
}

/// Runs `cases` on `h` (those in `DURACLAW_CASES` when set), each to its
/// end; panics naming every failed one, with the host's logs.
pub async fn run<H: Host>(h: &H, push: &PushService, cases: &[Case<H>]) {
    let only: Option<Vec<String>> = std::env::var("DURACLAW_CASES")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let (mut ran, mut failed) = (0, Vec::new());
    for (name, case) in cases {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        ran += 1;
        let t = Instant::now();
        match AssertUnwindSafe(case(h, push)).catch_unwind().await {
            Ok(()) => eprintln!("{} host: {name} ok ({:.1?})", h.name(), t.elapsed()),
            Err(_) => {
                eprintln!("{} host: {name} FAILED ({:.1?})", h.name(), t.elapsed());
                failed.push(*name);
            }
        }
    }
    assert!(ran > 0, "DURACLAW_CASES names no case of this suite");
    assert!(
        failed.is_empty(),
        "{} of {ran} push cases failed on the {} host: {failed:?}\n\n{}",
        failed.len(),
        h.name(),
        h.log_tails()
    );
}

async fn get(h: &dyn Host, cookie: &str, path: &str) -> (u16, Value) {
    call(h, reqwest::Method::GET, cookie, path, None).await
}

/// A new user `name`, logged in: the cookie.
async fn user(h: &dyn Host, name: &str) -> String {
    h.add_user(name, PASSWORD).await;
    login(h, name, PASSWORD).await
}

/// Subscribes `sub` for the user of `cookie` (the stand-in then expects
/// the host's key): the subscription's id.
async fn subscribe(h: &dyn Host, push: &PushService, cookie: &str, sub: &Subscriber) -> String {
    let (status, key) = get(h, cookie, "/api/push/key").await;
    assert_eq!(status, 200, "{key}");
    push.expect_key(key["public_key"].as_str().unwrap());
    let (status, s) = call(
        h,
        reqwest::Method::POST,
        cookie,
        "/api/push/subscriptions",
        Some(sub.body("test phone")),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    s["id"].as_str().unwrap().to_owned()
}

/// A session of `cookie`'s user in `worktree`, opened until its first
/// question: the session's id, the question's id and the browser.
async fn question(h: &dyn Host, cookie: &str, worktree: &str) -> (String, String, Browser) {
    let path = h
        .root()
        .join("projects")
        .join(worktree)
        .display()
        .to_string();
    let (status, s) = call(
        h,
        reqwest::Method::POST,
        cookie,
        "/api/sessions",
        Some(json!({"worktree": path, "prompt": "build it"})),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    let id = s["session_id"].as_str().unwrap().to_owned();
    let mut b = Browser::connect(h.base(), cookie, &id, 0).await;
    let q = b.until(is("user_question")).await;
    (id, q["question_id"].as_str().unwrap().to_owned(), b)
}

fn payloads(arrivals: &[Arrival]) -> Vec<&Value> {
    arrivals.iter().filter_map(|a| a.payload.as_ref()).collect()
}

fn has_kind(kind: &'static str) -> impl Fn(&[Arrival]) -> bool {
    move |a: &[Arrival]| {
        a.iter()
            .any(|a| a.status == 201 && a.payload.as_ref().is_some_and(|p| p["kind"] == kind))
    }
}

/// The user's deliveries once `done` holds for them (bounded).
async fn deliveries_until(
    h: &dyn Host,
    cookie: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + ARRIVES_WITHIN;
    loop {
        let (status, list) = get(h, cookie, "/api/push/deliveries?limit=50").await;
        assert_eq!(status, 200, "{list}");
        let list = list.as_array().unwrap().clone();
        if done(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries never settled: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A question opened in a session arrives, decrypted, at the owner's
/// subscriber and at nobody else's, tagged by its id with Approve/Deny
/// tokens and no tool input (the default preview); answering it sends the
/// `resolved` push with the same tag; the records say so.
async fn a_question_arrives_decrypted_at_its_owner_only_then_its_decision_replaces_it(
    h: &dyn Host,
    push: &PushService,
) {
    let alice = user(h, "push-alice").await;
    let bob = user(h, "push-bob").await;
    let (a, b) = (push.subscriber(), push.subscriber());
    let a_id = subscribe(h, push, &alice, &a).await;
    subscribe(h, push, &bob, &b).await;

    let (session, qid, mut browser) = question(h, &alice, "push-owner").await;
    let got = push
        .wait_for(&a, ARRIVES_WITHIN, "question push", has_kind("question"))
        .await;
    let p = payloads(&got)[0].clone();
    assert_eq!(p["v"], 1, "{p}");
    assert_eq!(p["tag"], format!("q:{qid}"), "{p}");
    assert_eq!(p["session_id"], session.as_str(), "{p}");
    assert_eq!(p["question_id"], qid.as_str(), "{p}");
    assert_eq!(p["url"], format!("/#/s/{session}?q={qid}"), "{p}");
    assert_eq!(p["title"], "Approve Bash?", "{p}");
    assert!(
        !p["body"].as_str().unwrap().contains("make") && p.get("input").is_none(),
        "the tool preview shows no input: {p}"
    );
    let actions: Vec<&str> = p["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["approve", "deny"], "{p}");
    assert!(p["actions"][0]["token"].as_str().unwrap().len() > 20, "{p}");
    assert_eq!(got[0].urgency.as_deref(), Some("high"));
    assert!(got[0].topic.is_some(), "a question's push has a Topic");

    // Decided in the page: the resolved push replaces it.
    let ok = browser
        .command(
            "push-allow",
            json!({"type": "answer", "question_id": qid, "decision": "allow"}),
        )
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    let got = push
        .wait_for(&a, ARRIVES_WITHIN, "resolved push", has_kind("resolved"))
        .await;
    let resolved = payloads(&got)
        .into_iter()
        .find(|p| p["kind"] == "resolved")
        .unwrap()
        .clone();
    assert_eq!(resolved["tag"], format!("q:{qid}"), "{resolved}");
    assert_eq!(resolved["title"], "Approved by push-alice", "{resolved}");
    assert!(resolved.get("actions").is_none(), "{resolved}");

    // Bob's browser got nothing of alice's.
    assert!(push.arrivals(&b).is_empty(), "{:#?}", push.arrivals(&b));
    assert!(
        push.all_arrivals().iter().all(|a| a.refused.is_none()),
        "every push passed the VAPID and decryption checks: {:#?}",
        push.all_arrivals()
    );

    let list = deliveries_until(h, &alice, |l| {
        l.len() == 2 && l.iter().all(|d| d["status"] == "accepted")
    })
    .await;
    assert_eq!(list[0]["kind"], "resolved", "newest first: {list:#?}");
    assert_eq!(list[1]["kind"], "question");
    for d in &list {
        assert_eq!(
            (&d["subscription_id"], &d["http_status"], &d["attempts"]),
            (&json!(a_id), &json!(201), &json!(1)),
            "{d}"
        );
        assert_eq!(d["question_id"], qid.as_str());
        assert_eq!(d["device"], "test phone");
    }
    let (_, none) = get(h, &bob, "/api/push/deliveries").await;
    assert_eq!(none, json!([]));
    let (_, subs) = get(h, &alice, "/api/push/subscriptions").await;
    assert!(subs[0]["last_success_ms"].as_i64().is_some(), "{subs}");
    assert_eq!(subs[0]["last_failure_ms"], Value::Null, "{subs}");
}

/// 429 and 500 are retried (after Retry-After) until accepted; 410 removes
/// the subscription; the records say each.
async fn a_busy_push_service_is_retried_and_a_gone_subscription_removed(
    h: &dyn Host,
    push: &PushService,
) {
    let carol = user(h, "push-carol").await;
    let (busy, gone) = (push.subscriber(), push.subscriber());
    push.answer(&busy, &[429, 500]);
    push.answer(&gone, &[410]);
    let busy_id = subscribe(h, push, &carol, &busy).await;
    let gone_id = subscribe(h, push, &carol, &gone).await;
    let (_, _qid, _b) = question(h, &carol, "push-retry").await;

    let got = push
        .wait_for(
            &busy,
            ARRIVES_WITHIN,
            "the third attempt",
            has_kind("question"),
        )
        .await;
    let statuses: Vec<u16> = got.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [429, 500, 201], "{got:#?}");
    assert_eq!(
        payloads(&got)[0],
        payloads(&got)[2],
        "the same push retried"
    );
    let gone_got = push
        .wait_for(&gone, ARRIVES_WITHIN, "the 410", |a| !a.is_empty())
        .await;
    assert_eq!(gone_got[0].status, 410);

    let list = deliveries_until(h, &carol, |l| {
        l.len() == 2
            && l.iter()
                .all(|d| ["accepted", "removed"].contains(&d["status"].as_str().unwrap_or("")))
    })
    .await;
    let by = |id: &str| list.iter().find(|d| d["subscription_id"] == id).unwrap();
    let retried = by(&busy_id);
    assert_eq!(
        (
            &retried["status"],
            &retried["attempts"],
            &retried["http_status"]
        ),
        (&json!("accepted"), &json!(3), &json!(201)),
        "{retried}"
    );
    let removed = by(&gone_id);
    assert_eq!(
        (
            &removed["status"],
            &removed["attempts"],
            &removed["http_status"]
        ),
        (&json!("removed"), &json!(1), &json!(410)),
        "{removed}"
    );
    assert!(
        removed["error"].as_str().unwrap().contains("410"),
        "{removed}"
    );
    let (_, subs) = get(h, &carol, "/api/push/subscriptions").await;
    let subs = subs.as_array().unwrap();
    assert_eq!(subs.len(), 1, "the gone one is removed: {subs:#?}");
    assert_eq!(subs[0]["id"], busy_id.as_str());
    assert!(subs[0]["last_success_ms"].as_i64().is_some(), "{subs:#?}");
    assert!(subs[0]["last_failure_ms"].as_i64().is_some(), "{subs:#?}");
    assert!(
        subs[0]["last_failure"].as_str().unwrap().contains("500"),
        "{subs:#?}"
    );
}

/// With the question trigger off, neither a question nor its decision is
/// pushed, while the turn's end is (events are handed to the sender in
/// order, so once the turn's end arrived the others were weighed); then,
/// with questions on and the short preview, the next question's push
/// shows the tool's input.
async fn settings_off_send_nothing_and_a_short_preview_shows_the_input(
    h: &dyn Host,
    push: &PushService,
) {
    let dave = user(h, "push-dave").await;
    let (status, defaults) = get(h, &dave, "/api/push/settings").await;
    assert_eq!(status, 200);
    assert_eq!(
        defaults,
        json!({"on_question": true, "on_turn_finished": false, "on_error": true, "preview": "tool"})
    );
    let put = |settings: Value| {
        let dave = dave.clone();
        async move {
            let (status, body) = call(
                h,
                reqwest::Method::PUT,
                &dave,
                "/api/push/settings",
                Some(settings.clone()),
            )
            .await;
            assert_eq!((status, &body), (200, &settings));
            assert_eq!(get(h, &dave, "/api/push/settings").await.1, settings);
        }
    };
    put(
        json!({"on_question": false, "on_turn_finished": true, "on_error": false,
        "preview": "short"}),
    )
    .await;
    let sub = push.subscriber();
    subscribe(h, push, &dave, &sub).await;

    let (_, qid, mut browser) = question(h, &dave, "push-off").await;
    let ok = browser
        .command(
            "push-deny",
            json!({"type": "answer", "question_id": qid, "decision": "deny", "reason": "no"}),
        )
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    let got = push
        .wait_for(
            &sub,
            ARRIVES_WITHIN,
            "the turn's end",
            has_kind("turn_finished"),
        )
        .await;
    let kinds: Vec<&Value> = payloads(&got).iter().map(|p| &p["kind"]).collect();
    assert_eq!(
        kinds,
        [&json!("turn_finished")],
        "questions are off: {got:#?}"
    );

    put(
        json!({"on_question": true, "on_turn_finished": false, "on_error": true,
        "preview": "short"}),
    )
    .await;
    let (_, qid2, _b) = question(h, &dave, "push-short").await;
    let got = push
        .wait_for(&sub, ARRIVES_WITHIN, "the second question", |a| {
            a.iter().any(|a| {
                a.payload
                    .as_ref()
                    .is_some_and(|p| p["kind"] == "question" && p["question_id"] == qid2.as_str())
            })
        })
        .await;
    let p = payloads(&got)
        .into_iter()
        .find(|p| p["kind"] == "question")
        .unwrap();
    assert!(
        p["body"].as_str().unwrap().ends_with("Bash: make"),
        "the short preview shows the command: {p}"
    );
    let list = deliveries_until(h, &dave, |l| l.len() == 2).await;
    let kinds: Vec<&Value> = list.iter().map(|d| &d["kind"]).collect();
    assert_eq!(
        kinds,
        [&json!("question"), &json!("turn_finished")],
        "{list:#?}"
    );
}

/// The routes need a login and the host's origin, refuse bad bodies with
/// 400 and oversized ones with 413, answer another user's subscription
/// 404 exactly as a missing one, take the same endpoint again as an
/// update, and a logout removes the login's subscriptions.
async fn the_push_routes_refuse_bad_bodies_and_other_users_ids(h: &dyn Host, push: &PushService) {
    use reqwest::Method;
    let erin = user(h, "push-erin").await;
    let frank = user(h, "push-frank").await;
    for path in [
        "/api/push/key",
        "/api/push/subscriptions",
        "/api/push/settings",
        "/api/push/deliveries",
    ] {
        let (status, body) = get(h, "", path).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let sub = push.subscriber();
    let id = subscribe(h, push, &erin, &sub).await;
    // The same endpoint again: the same subscription, updated.
    let (status, again) = call(
        h,
        Method::POST,
        &erin,
        "/api/push/subscriptions",
        Some(sub.body("renamed phone")),
    )
    .await;
    assert_eq!((status, &again["id"]), (201, &json!(id)), "{again}");
    assert_eq!(again["device"], "renamed phone");
    assert_eq!(again["current"], true);
    assert_eq!(again["endpoint_origin"], push.origin());

    let good = sub.body("x");
    let mut bad = vec![
        json!({}),
        json!([]),
        json!({"endpoint": "http://127.0.0.1/push/1", "keys": good["keys"]}),
        json!({"endpoint": good["endpoint"], "keys": {"p256dh": "AAAA", "auth": good["keys"]["auth"]}}),
        json!({"endpoint": good["endpoint"], "keys": {"p256dh": good["keys"]["p256dh"], "auth": "x"}}),
    ];
    bad.push(json!({"endpoint": 7, "keys": good["keys"]}));
    for body in bad {
        let (status, answer) = call(
            h,
            Method::POST,
            &erin,
            "/api/push/subscriptions",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let raw = http()
        .post(format!("{}/api/push/subscriptions", h.base()))
        .header("cookie", &erin)
        .header("origin", h.origin())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let huge = json!({"endpoint": format!("https://x/{}", "a".repeat(2 * 1024 * 1024)),
        "keys": good["keys"]});
    let (status, _) = call(
        h,
        Method::POST,
        &erin,
        "/api/push/subscriptions",
        Some(huge),
    )
    .await;
    assert_eq!(status, 413);
    let cross = http()
        .post(format!("{}/api/push/subscriptions", h.base()))
        .header("cookie", &erin)
        .header("origin", "http://evil.example")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    for settings in [
        json!({"on_question": true}),
        json!({"on_question": true, "on_turn_finished": true, "on_error": true, "preview": "all"}),
    ] {
        let (status, _) = call(h, Method::PUT, &erin, "/api/push/settings", Some(settings)).await;
        assert_eq!(status, 400);
    }
    assert_eq!(get(h, &erin, "/api/push/deliveries?limit=0").await.0, 400);

    // Frank sees none of erin's and cannot remove hers.
    assert_eq!(get(h, &frank, "/api/push/subscriptions").await.1, json!([]));
    let path = format!("/api/push/subscriptions/{id}");
    let (status, theirs) = call(h, Method::DELETE, &frank, &path, None).await;
    let (missing_status, missing) = call(
        h,
        Method::DELETE,
        &frank,
        "/api/push/subscriptions/nosuch",
        None,
    )
    .await;
    assert_eq!((status, &theirs), (404, &missing), "{theirs}");
    assert_eq!(missing_status, 404);
    assert_eq!(
        get(h, &erin, "/api/push/subscriptions")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Another login of erin's: not `current` there; removed, then 404.
    let erin2 = login(h, "push-erin", PASSWORD).await;
    let (_, seen) = get(h, &erin2, "/api/push/subscriptions").await;
    assert_eq!(seen[0]["current"], false, "{seen}");
    let (status, _) = call(h, Method::DELETE, &erin2, &path, None).await;
    assert_eq!(status, 204);
    assert_eq!(call(h, Method::DELETE, &erin2, &path, None).await.0, 404);

    // Subscribed again from the first login, which then logs out: gone.
    subscribe(h, push, &erin, &sub).await;
    assert_eq!(
        get(h, &erin2, "/api/push/subscriptions")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let out = http()
        .post(format!("{}/api/logout", h.base()))
        .header("cookie", &erin)
        .header("origin", h.origin())
        .send()
        .await
        .unwrap();
    assert!(out.status().is_success(), "{}", out.status());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, list) = get(h, &erin2, "/api/push/subscriptions").await;
        if list == json!([]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ended login's subscription stays: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
