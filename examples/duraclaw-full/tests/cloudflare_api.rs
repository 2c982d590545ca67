//! The API suite (`duraclaw_testkit::api`, shared with `api.rs`) on
//! Cloudflare: the full example's Worker under `wrangler dev`, its Durable
//! Objects and D1, against the real gateway (`duraclaw gateway`, scripted).
//! One `wrangler dev` serves every case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duraclaw_testkit::api::{self, Case, PASSWORD};
use duraclaw_testkit::both_hosts;
use duraclaw_testkit::host::{CloudflareHost, Host, create_session, login};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_suite_on_cloudflare() {
    let host = CloudflareHost::start("cloudflare-api").await;
    let mut cases = api::cases();
    let only_here: Case<CloudflareHost> = (
        "a_login_gone_without_notice_is_refused_by_the_object",
        |h| Box::pin(a_login_gone_without_notice_is_refused_by_the_object(h)),
    );
    cases.push(only_here);
    api::run(&host, &cases).await;
}

/// A login that ends with no notice reaching the session's object (its D1
/// row deleted behind the Worker's back, as a missed or late notice would
/// leave it): the object's own check before a command refuses it. Only on
/// Cloudflare: there the Worker tells the object of an ended login, a
/// notice that can be lost; the local host has no such notice to lose.
async fn a_login_gone_without_notice_is_refused_by_the_object(h: &CloudflareHost) {
    let base = h.base();
    h.add_user("unnoticed", PASSWORD).await;
    let cookie = login(h, "unnoticed", PASSWORD).await;
    let id = create_session(h, &cookie, "unnoticed", "build it").await;
    let (mut ws, _) = both_hosts::open(base, &cookie, &id).await;
    h.d1_execute("DELETE FROM login_sessions WHERE user_name = 'unnoticed'");
    both_hosts::assert_login_ended(&mut ws, "after-row-gone", "sent after the row went").await;
    let last = login(h, "unnoticed", PASSWORD).await;
    both_hosts::assert_never_ran(base, &last, &id, "sent after the row went").await;
}
