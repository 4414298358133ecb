//! The operator console: a static page (HTML, one stylesheet, ES modules) embedded in the
//! binary and served at `/console`. It holds no data: everything it shows it fetches from the
//! API with relative, same-origin paths (`/tasks`, `/tasks/{id}`, ...), so the same page works
//! on the local host (`task-scheduler serve` mounts [`router`]) and behind a forwarding proxy
//! that adds the credentials itself.
//!
//! The page and its assets are served without authentication, like `/health`: they are the
//! same bytes for everyone and carry nothing of anyone's. Every API call the page makes is
//! authenticated as any other client's. Every response here carries a strict
//! Content-Security-Policy (scripts, styles and connections from this origin only, nothing
//! inline, no framing, no forms, no base URL), `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.

#[cfg(test)]
mod tests;

use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// The policy of every console response. `img-src data:` is for the inline favicon (an empty
/// `data:` URL, so that the browser does not ask the API for `/favicon.ico`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

/// The page itself, at `/console` and `/console/`.
const INDEX: &str = include_str!("assets/index.html");

/// The assets under `/console/assets/`: name, media type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dom.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/views.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/overview.js"),
    ),
    (
        "schedules.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/schedules.js"),
    ),
];

/// The console's routes, as `docs/api.md` and the README list them (a test keeps them the same).
pub const ROUTES: &[&str] = &["/console", "/console/", "/console/assets/{file}"];

/// `GET /console`, `GET /console/` and `GET /console/assets/{file}`, without authentication
/// and without a fallback of its own: merge it into a router that has one.
pub fn router() -> Router {
    Router::new()
        .route(ROUTES[0], get(index))
        .route(ROUTES[1], get(index))
        .route(ROUTES[2], get(asset))
}

async fn index() -> Response {
    secured(StatusCode::OK, "text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, media_type, body)) => secured(StatusCode::OK, media_type, body),
        None => secured(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "no such console asset\n",
        ),
    }
}

/// A response with the console's security headers. `no-cache`: the browser revalidates, so a
/// new binary's page is never mixed with an old one's modules.
fn secured(status: StatusCode, media_type: &'static str, body: &'static str) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, media_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}
