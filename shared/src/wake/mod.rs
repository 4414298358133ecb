//! Wake-up adapters: the in-process timer for the local host, Scheduler + SQS on AWS.

pub mod aws;
pub mod local;

pub use aws::{AwsDeadLetters, AwsWaker};
pub use local::{DueSource, LocalWaker};
