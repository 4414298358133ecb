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
//! - [`dead_letters`]: the SQS dead-letter queue (AWS).
//! - [`console`]: the operator console, a static page served at `/console` that calls the API.
//! - [`local`]: the local host: configuration and wiring for `serve`.
//! - [`lambda`]: the AWS host: event shapes, configuration and wiring for `lambda`.
//!
//! The AWS parts (`lambda`, the DynamoDB store, the Scheduler + SQS waker) are behind the
//! `aws` feature, on by default; without it the crate is the local host alone.
//! - [`metrics`]: CloudWatch embedded-metric-format counters for the AWS host.

#![warn(unreachable_pub)]

// What other crates use is public: the two hosts' entry points (`local`, `lambda`) and the
// console's router (the CLI's `console` command mounts it too). The rest is the crate's own.
pub(crate) mod api;
pub(crate) mod app;
#[cfg(feature = "aws")]
mod aws_error;
mod config;
pub mod console;
#[cfg(feature = "aws")]
pub(crate) mod dead_letters;
pub(crate) mod domain;
#[cfg(test)]
pub(crate) mod fakes;
#[cfg(feature = "aws")]
pub mod lambda;
pub mod local;
#[cfg(feature = "aws")]
pub(crate) mod metrics;
pub(crate) mod ports;
pub(crate) mod store;
pub(crate) mod wake;
pub(crate) mod webhook;
