//! The web dashboard: one HTML page with plain CSS and vanilla JavaScript, compiled into the
//! binary with `include_str!` (no build step, no CDN). The page talks to the JSON API in
//! `http::api`; it is a client-side app with hash routes (`#/runs`, `#/runs/<id>`,
//! `#/queues`, `#/events`).

use axum::Router;
use axum::response::Response;
use axum::routing::get;
use tonic::codegen::http::{HeaderValue, StatusCode, header};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The dashboard's routes: `/`, `/ui/app.js`, `/ui/style.css`.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .fallback(|| async { not_found() })
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn not_found() -> Response {
    let mut resp = Response::new(axum::body::Body::from("not found\n"));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
