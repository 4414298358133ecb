//! task-scheduler: a durable "call this webhook at that time" service.
//!
//! Module map (the folder names tell the architecture):
//! - [`domain`]: pure types and rules (Task, TaskId, RetryPolicy, Attempt, the status
//!   machine). Knows no SQL, AWS or HTTP framework.
//! - [`ports`]: the seams (TaskStore, Waker, WebhookClient, Clock, ...).
//! - [`app`]: the use cases (create, get, list, cancel, retry, fire).
//! - [`api`]: the axum Router both hosts serve, its JSON errors and OpenAPI document.
//! - [`store`]: task stores (SQLite locally).
//! - [`wake`]: wake-up adapters (the in-process timer locally).
//! - [`webhook`]: the HTTP client that delivers.
//! - [`local`]: the local host: configuration and wiring for `serve`.

pub mod api;
pub mod app;
pub mod domain;
#[cfg(test)]
pub(crate) mod fakes;
pub mod local;
pub mod ports;
pub mod store;
pub mod wake;
pub mod webhook;
