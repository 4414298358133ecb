//! Support for the benchmarks (`make bench`): the release server as a child process on
//! loopback ([`Server`]), a lean HTTP/1.1 keep-alive client ([`Client`]) and a load driver
//! ([`drive`]), a webhook receiver that records arrival times ([`Receiver`]), statistics and
//! the raw result files that `bench/report.py` turns into `results.json`, the Markdown table
//! and the plots.
//!
//! Everything talks to 127.0.0.1 only. The server is started on port 0 with a fresh data
//! directory and stopped by its PID.

#[cfg(feature = "aws")]
pub mod aws_stub;
pub mod cli;
pub mod client;
pub mod receiver;
pub mod results;
pub mod server;

pub use cli::{arg, build_profile, command_line, quick};
pub use client::{Client, Load, drive, drive_to, task_body};
pub use integration_tests::{millis, rfc3339};
pub use receiver::{Arrival, Receiver, ms_between};
pub use results::{Figure, percentile, results_dir, sort_f64, write_results};
pub use server::{Server, data_dir, health, proc_cpu, proc_memory, server_binary};
