//! Wake-up adapters: the in-process timer for the local host (and Scheduler + SQS on AWS).

pub mod local;

pub use local::{DueSource, LocalWaker};
