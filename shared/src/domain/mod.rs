//! Pure types and rules. Nothing here knows SQL, AWS or HTTP frameworks; every type is
//! built by parsing, so a value that exists is a valid one.

mod error;
mod id;
mod local_time;
mod recurrence;
mod retry;
mod schedule;
mod task;
mod time;
mod webhook;

pub(crate) use error::ValidationError;
pub(crate) use id::{Cursor, IdempotencyKey, Owner, TaskId};
pub(crate) use local_time::LocalRunAt;
pub(crate) use recurrence::{CronExpr, Every, Recurrence, parse_timezone};
pub(crate) use retry::RetryPolicy;
pub(crate) use schedule::{
    NewSchedule, Occurrence, Pending, Replanned, Schedule, ScheduleChanges, ScheduleId,
    TaskTemplate,
};
pub(crate) use task::{
    AttemptOutcome, ClaimRejection, Delivery, NewTask, Next, RetryHint, Status, Task,
    TimeoutSeconds, TransitionError, WakeUp,
};
// Named outside the domain only by the DynamoDB item mapping.
#[cfg(feature = "aws")]
pub(crate) use task::{Attempt, DeadLetter, Rearmed};
pub(crate) use time::{format_time, parse_time, to_millis};
pub(crate) use webhook::{Action, HttpMethod, WebhookAction, WebhookHeaders, WebhookUrl};
