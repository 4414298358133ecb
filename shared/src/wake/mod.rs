//! Wake-up adapters: the in-process timer for the local host, Scheduler + SQS on AWS.

#[cfg(feature = "aws")]
pub(crate) mod aws;
pub(crate) mod local;

pub(crate) use local::LocalWaker;
