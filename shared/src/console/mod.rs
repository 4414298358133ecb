//! The operator console's page and its assets, served at `GET /console`.
//!
//! A placeholder until the page itself lands (branch `console`): the same path and
//! signature, a one-line page. `task-scheduler console` serves this router beside its
//! forwarding proxy.

use axum::{Router, response::Html, routing::get};

/// `GET /console` and its assets. The page calls the API with relative paths.
pub fn router() -> Router {
    Router::new().route(
        "/console",
        get(|| async {
            Html("<!doctype html><title>task-scheduler console</title><p>console</p>")
        }),
    )
}
