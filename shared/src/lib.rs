//! task-scheduler: a durable "call this webhook at that time" service.
//!
//! Module map (the folder names tell the architecture):
//! - [`domain`]: pure types and rules (Task, TaskId, RetryPolicy, Attempt, the status
//!   machine). Knows no SQL, AWS or HTTP framework.
//! - [`ports`]: the seams (TaskStore, Waker, WebhookClient, Clock, ...).
//! - [`app`]: the use cases (create, get, list, cancel, retry, fire).
//! - [`api`]: the axum Router both hosts serve, its JSON errors and OpenAPI document.
//! - [`store`]: task stores (SQLite locally, DynamoDB on AWS).
//! - [`wake`]: wake-up adapters (the in-process timer locally, Scheduler + SQS on AWS).
//! - [`webhook`]: the HTTP client that delivers.
//! - [`local`]: the local host: configuration and wiring for `serve`.
//! - [`lambda`]: the AWS host: event shapes, configuration and wiring for `lambda`.
//!
//! The AWS parts (`lambda`, the DynamoDB store, the Scheduler + SQS waker) are behind the
//! `aws` feature, on by default; without it the crate is the local host alone.
//! - [`metrics`]: CloudWatch embedded-metric-format counters for the AWS host.

pub mod api;
pub mod app;
#[cfg(feature = "aws")]
mod aws_error;
pub mod domain;
#[cfg(test)]
pub(crate) mod fakes;
#[cfg(feature = "aws")]
pub mod lambda;
pub mod local;
pub mod metrics;
pub mod ports;
pub mod store;
pub mod wake;
pub mod webhook;
