//! The web dashboard: a page and its script and style, embedded in the
//! binary and served at `/`, that drive the `/v1` API from the browser.
//!
//! The assets hold no data, so they are served without the token; the
//! script asks for it when the API answers 401 and keeps it for the
//! browser tab (`sessionStorage`), sending it in the `Authorization`
//! header, never in a URL. Nothing is loaded from elsewhere (the hosts
//! that run this have no internet), and the Content-Security-Policy says
//! so to the browser: only this server's script, style and API.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const LOG_SCRIPT: &str = include_str!("log.js");
const SUBMIT_SCRIPT: &str = include_str!("submit.js");
const ICON: &str = include_str!("favicon.svg");
const STYLE: &str = include_str!("app.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

/// Routes for the page (`/`) and its assets (`/ui/…`).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/ui/app.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/ui/log.js",
            get(|| asset("text/javascript; charset=utf-8", LOG_SCRIPT)),
        )
        .route(
            "/ui/submit.js",
            get(|| asset("text/javascript; charset=utf-8", SUBMIT_SCRIPT)),
        )
        .route(
            "/ui/app.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
        .route("/ui/favicon.svg", get(|| asset("image/svg+xml", ICON)))
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Assets change with the binary; revalidate instead of caching
            // an old script against a new API.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
