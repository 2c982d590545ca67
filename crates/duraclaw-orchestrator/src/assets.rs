//! The browser UI, embedded in the library (feature `ui`).
//!
//! `examples/duraclaw-full/ui/dist` (built by `scripts/build-ui.sh` and
//! committed, so building needs no Node) is compiled in with `rust-embed`,
//! by a path relative to this crate. [`router`] serves it:
//!
//! - every file with core's [`UI_HEADERS`] (the same the Cloudflare Worker
//!   sends): a `Content-Security-Policy` that allows only this origin (no
//!   inline scripts or styles, nothing remote, no framing), `X-Frame-Options`,
//!   `nosniff` and `Referrer-Policy`;
//! - `/` and `/index.html`: the page, `Cache-Control: no-cache` (revalidated
//!   with its `ETag`);
//! - `/assets/…`: content-hashed scripts and styles, cached for a year as
//!   immutable;
//! - other files of `ui/dist` (the icon): `no-cache` with an `ETag`;
//! - any other path outside `/api/` that does not look like a file: the page,
//!   so client-side routes load; unknown `/api/…` paths get the API's JSON
//!   404, and missing files a plain 404.

use std::borrow::Cow;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use duraclaw_core::backend::web::{UI_HEADERS, hex};
use rust_embed::RustEmbed;

/// The built UI.
#[derive(RustEmbed)]
#[folder = "../../examples/duraclaw-full/ui/dist/"]
struct Ui;

const INDEX: &str = "index.html";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const NO_CACHE: &str = "no-cache";

/// The routes serving the embedded UI; merge them after the API routes.
///
/// The router carries a fallback (client-side routes and 404s), so the router
/// it is merged into must not have one of its own.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{*path}", get(asset))
        .fallback(fallback)
}

async fn index(headers: HeaderMap) -> Response {
    file_response(INDEX, &headers)
}

async fn asset(uri: Uri, headers: HeaderMap) -> Response {
    file_response(uri.path().trim_start_matches('/'), &headers)
}

async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path == "api" || path.starts_with("api/") {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"no such API route"}"#,
        )
            .into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "method not allowed\n",
        )
            .into_response();
    }
    if Ui::get(path).is_some() {
        return file_response(path, &headers);
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    if path.starts_with("assets/") || last.contains('.') {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response();
    }
    // A client-side route: the page decides what to show.
    file_response(INDEX, &headers)
}

/// Answers with an embedded file (404 when there is none), honouring
/// `If-None-Match`.
fn file_response(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Ui::get(path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let is_index = path == INDEX;
    let cache = if path.starts_with("assets/") {
        IMMUTABLE
    } else {
        NO_CACHE
    };
    let mime = if is_index {
        "text/html; charset=utf-8".to_owned()
    } else {
        content_type(file.metadata.mimetype())
    };

    let mut builder = Response::builder()
        .header(header::CACHE_CONTROL, cache)
        .header(header::ETAG, &etag);
    for (name, value) in UI_HEADERS {
        builder = builder.header(*name, *value);
    }
    let not_modified = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let built = if not_modified {
        builder.status(StatusCode::NOT_MODIFIED).body(Body::empty())
    } else {
        let body = match file.data {
            Cow::Borrowed(bytes) => Bytes::from_static(bytes),
            Cow::Owned(bytes) => Bytes::from(bytes),
        };
        builder
            .status(StatusCode::OK)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&mime)
                    .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            )
            .body(Body::from(body))
    };
    built.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A `Content-Type` for a guessed MIME type, with a charset for text.
fn content_type(mime: &str) -> String {
    let text = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript" | "application/json" | "image/svg+xml"
        );
    if text && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_with(
        path: &str,
        headers: &[(&str, &str)],
        method: Method,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get(path: &str) -> (StatusCode, HeaderMap, String) {
        get_with(path, &[], Method::GET).await
    }

    fn h(headers: &HeaderMap, name: header::HeaderName) -> &str {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn embedded(prefix: &str, suffix: &str) -> String {
        Ui::iter()
            .find(|p| p.starts_with(prefix) && p.ends_with(suffix))
            .map(|p| format!("/{p}"))
            .unwrap_or_else(|| panic!("ui/dist has no {prefix}*{suffix}; run scripts/build-ui.sh"))
    }

    #[tokio::test]
    async fn root_serves_the_page_uncached_under_a_strict_policy() {
        let (status, headers, body) = get("/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            h(&headers, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(h(&headers, header::CACHE_CONTROL), "no-cache");
        assert!(!h(&headers, header::ETAG).is_empty());
        let csp = h(&headers, header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(
            !csp.contains("http:") && !csp.contains("https:") && !csp.contains('*'),
            "{csp}"
        );
        assert_eq!(h(&headers, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert!(body.contains(r#"<div id="app">"#), "{body}");
        let (status, _, again) = get("/index.html").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again, body);
    }

    #[tokio::test]
    async fn the_page_has_no_inline_script_or_style_and_loads_nothing_remote() {
        let (_, _, body) = get("/").await;
        for (i, _) in body.match_indices("<script") {
            let tag = &body[i..i + body[i..].find('>').unwrap()];
            // A file of this origin (the bundle, or the early script).
            assert!(
                tag.contains("src=\"/") && !tag.contains("src=\"//"),
                "inline or remote script: {tag}"
            );
        }
        assert!(!body.contains("<style"), "inline style element");
        assert!(!body.contains(" style="), "inline style attribute");
        assert!(!body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"));
    }

    #[tokio::test]
    async fn hashed_assets_are_immutable_with_their_types() {
        let js = embedded("assets/index-", ".js");
        let (status, headers, body) = get(&js).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            h(&headers, header::CONTENT_TYPE).contains("javascript"),
            "{headers:?}"
        );
        assert_eq!(h(&headers, header::CACHE_CONTROL), IMMUTABLE);
        assert!(!body.is_empty());
        let (_, page_headers, page) = get("/").await;
        assert!(page.contains(&js), "index.html does not load {js}");
        assert!(page_headers.get(header::CONTENT_SECURITY_POLICY).is_some());
        // The chunks loaded on first use: immutable too, and each one
        // imported by the entry script.
        for chunk in Ui::iter().filter(|p| p.starts_with("assets/") && p.ends_with(".js")) {
            let path = format!("/{chunk}");
            if path == js {
                continue;
            }
            let (status, headers, _) = get(&path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(h(&headers, header::CACHE_CONTROL), IMMUTABLE, "{path}");
            let name = chunk.trim_start_matches("assets/");
            assert!(
                body.contains(&format!("./{name}")),
                "{js} does not import {name}"
            );
        }

        let css = embedded("assets/", ".css");
        let (status, headers, _) = get(&css).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h(&headers, header::CONTENT_TYPE), "text/css; charset=utf-8");
        assert_eq!(h(&headers, header::CACHE_CONTROL), IMMUTABLE);
    }

    #[tokio::test]
    async fn other_files_are_served_with_revalidation() {
        let (status, headers, body) = get("/favicon.svg").await;
        assert_eq!(status, StatusCode::OK);
        assert!(h(&headers, header::CONTENT_TYPE).starts_with("image/svg+xml"));
        assert_eq!(h(&headers, header::CACHE_CONTROL), "no-cache");
        assert!(body.contains("<svg"));
        // The early script is not content-hashed: revalidated, never stale.
        let (status, headers, body) = get("/early.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(h(&headers, header::CONTENT_TYPE).contains("javascript"));
        assert_eq!(h(&headers, header::CACHE_CONTROL), "no-cache");
        assert!(body.contains("__duraclawEarly"));
    }

    #[tokio::test]
    async fn client_routes_get_the_page_and_api_paths_do_not() {
        let (_, _, page) = get("/").await;
        for path in ["/s/01J9Z3", "/sessions", "/new"] {
            let (status, headers, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(h(&headers, header::CACHE_CONTROL), "no-cache", "{path}");
            assert_eq!(body, page, "{path}");
        }
        for path in ["/api/nope", "/api", "/api/sessions/x/nothing"] {
            let (status, headers, body) = get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(
                h(&headers, header::CONTENT_TYPE),
                "application/json",
                "{path}"
            );
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(v["error"].is_string(), "{path}: {body}");
        }
        let (status, _, _) = get_with("/api/nope", &[], Method::POST).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn missing_files_are_404_not_the_page() {
        for path in [
            "/assets/index-missing.js",
            "/assets/",
            "/favicon.ico",
            "/robots.txt",
        ] {
            let (status, _, body) = get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(!body.contains("<div id=\"app\">"), "{path}");
        }
    }

    #[tokio::test]
    async fn a_matching_etag_gets_304() {
        let (_, headers, _) = get("/").await;
        let etag = h(&headers, header::ETAG).to_owned();
        let (status, headers, body) = get_with("/", &[("if-none-match", &etag)], Method::GET).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert_eq!(h(&headers, header::ETAG), etag);
        let (status, _, _) = get_with("/", &[("if-none-match", "\"other\"")], Method::GET).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn writes_to_ui_paths_are_refused() {
        let (status, headers, _) = get_with("/s/abc", &[], Method::POST).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(h(&headers, header::ALLOW), "GET, HEAD");
        let (status, _, _) = get_with("/", &[], Method::DELETE).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn the_page_and_every_asset_carry_the_ui_headers() {
        let js = embedded("assets/", ".js");
        for path in ["/", "/s/abc", js.as_str(), "/favicon.svg"] {
            let (status, headers, _) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            for (name, value) in UI_HEADERS {
                assert_eq!(
                    headers.get(*name).and_then(|v| v.to_str().ok()),
                    Some(*value),
                    "{path}: {name}"
                );
            }
        }
        let (_, headers, _) = get("/").await;
        assert_eq!(h(&headers, header::X_FRAME_OPTIONS), "DENY");
        assert_eq!(h(&headers, header::REFERRER_POLICY), "no-referrer");
    }

    #[tokio::test]
    async fn head_is_answered_like_get() {
        let (status, headers, _) = get_with("/", &[], Method::HEAD).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get(header::CONTENT_SECURITY_POLICY).is_some());
    }
}
