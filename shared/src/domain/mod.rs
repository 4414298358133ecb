//! Pure types and rules. Nothing here knows SQL, AWS or HTTP frameworks; every type is
//! built by parsing, so a value that exists is a valid one.

mod error;
mod id;
mod retry;
mod task;
mod time;
mod webhook;

pub use error::ValidationError;
pub use id::{Cursor, IdempotencyKey, Owner, TaskId};
pub use retry::{BackoffSeconds, MaxAttempts, RetryPolicy};
pub use task::{
    Attempt, AttemptOutcome, ClaimRejection, DeadLetter, Delivery, NewTask, Next, RetryHint,
    Status, Task, TimeoutSeconds, TransitionError, WakeUp,
};
pub use time::{format_time, parse_time, to_millis};
pub use webhook::{Action, HttpMethod, WebhookAction, WebhookHeaders, WebhookUrl};
