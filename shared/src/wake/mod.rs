//! Wake-up adapters: the in-process timer for the local host, Scheduler + SQS on AWS.

#[cfg(feature = "aws")]
pub mod aws;
pub mod local;

#[cfg(feature = "aws")]
pub use aws::AwsWaker;
pub use local::{DueSource, LocalWaker};
