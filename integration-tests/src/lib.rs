//! Support for the black-box tests: the real `task-scheduler` binary as a child process
//! ([`App`]), a real webhook receiver on loopback ([`Receiver`]) and a small API client
//! ([`Api`]). Nothing here reaches into the product's crates: the tests see only what a user
//! sees (HTTP, logs, exit codes).
//!
//! - [`launcher`]: the one way a child of the product is started, and the product's
//!   environment variables it never inherits;
//! - [`process`]: the local server under test;
//! - [`api`]: the API client;
//! - [`receiver`]: the webhook receiver;
//! - `sigv4_stub` (feature `aws`): a stub of API Gateway that verifies SigV4 signatures and
//!   forwards to a local server;
//! - `aws` (feature `aws`): the cloud rehearsal's rig, events, function and recorder.

pub mod api;
#[cfg(feature = "aws")]
pub mod aws;
pub mod launcher;
pub mod process;
pub mod receiver;
#[cfg(feature = "aws")]
pub mod sigv4_stub;

use chrono::{DateTime, SecondsFormat, Utc};

pub use api::{Api, Resp, query_escape};
pub use launcher::{Output, binary_path, target_dir};
pub use process::{App, Launch, START_TIMEOUT};
pub use receiver::{Arrival, Receiver, Reply};

/// RFC 3339 with milliseconds, as the API accepts.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a time the API returned.
pub fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
        .to_utc()
}

/// `t` truncated to the millisecond (the API's precision).
pub fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("in range")
}

/// Now plus `ms` milliseconds, truncated to the millisecond.
pub fn in_ms(ms: i64) -> DateTime<Utc> {
    millis(Utc::now() + chrono::TimeDelta::milliseconds(ms))
}
