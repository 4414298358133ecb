//! Wake-ups on AWS: an SQS delay queue for the next 15 minutes, EventBridge Scheduler
//! one-time schedules beyond.
//!
//! Scheduler fires anywhere within the minute of its `at()` (and moto never fires at all),
//! so a schedule is set two minutes early and, when it fires, `Scheduler::fire_due` sees
//! from the `due` it carries that it is early and re-arms it here: it then lands on the
//! delay queue for the remaining seconds (rounded down; the message carries `due` and the
//! function waits out the fraction), so deliveries are on time to the millisecond, not one
//! minute late. Schedules
//! delete themselves after firing (`ActionAfterCompletion DELETE`) and there is never an
//! EventBridge *rule*: nothing accumulates per task.
//!
//! SQS messages cannot be recalled: a message for a cancelled task, an old attempt or a
//! duplicate is dropped by `fire`, whose claim is conditional.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use aws_sdk_scheduler::{
    operation::{create_schedule::CreateScheduleError, delete_schedule::DeleteScheduleError},
    types::{
        ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode,
        RetryPolicy, Target,
    },
};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::domain::{TaskId, WakeUp, format_time};
use crate::ports::{Clock, PortError, Waker};

/// The longest delay SQS accepts (`DelaySeconds` 0..=900).
pub(crate) const MAX_QUEUE_DELAY: TimeDelta = TimeDelta::seconds(900);
/// How early a schedule fires: covers Scheduler's minute of jitter plus one spare minute.
pub(crate) const SCHEDULE_LEAD: TimeDelta = TimeDelta::minutes(2);
/// Scheduler's retry policy for invoking the function. A wake-up Scheduler gives up on is a
/// task left for the sweeper (`Scheduler::recover`), so retry as long as Scheduler allows:
/// these are its maxima. They only matter while Lambda refuses invocations (throttling,
/// outage); after them the event goes to the DLQ, where an operator can see it.
pub(crate) const RETRY_MAX_EVENT_AGE_SECONDS: i32 = 86_400;
pub(crate) const RETRY_MAX_ATTEMPTS: i32 = 185;

/// The payload of every wake-up, on the queue and as a schedule's `Input`:
/// `{"kind":"wake","task_id":"...","attempt":N,"due":"..."}`. With `due`, an early schedule
/// firing re-arms on the delay queue without asking the table (the precision hop costs one
/// SendMessage, not a claim too), and a queued message that arrives within the queue's
/// one-second granularity waits for its moment. Without it (hand-written events), the
/// conditional claim decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WakeMessage {
    pub(crate) kind: WakeKind,
    pub(crate) task_id: TaskId,
    pub(crate) attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) due: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WakeKind {
    Wake,
}

impl From<WakeUp> for WakeMessage {
    fn from(w: WakeUp) -> Self {
        Self {
            kind: WakeKind::Wake,
            task_id: w.task_id,
            attempt: w.attempt,
            due: None,
        }
    }
}

impl From<WakeMessage> for WakeUp {
    fn from(m: WakeMessage) -> Self {
        Self {
            task_id: m.task_id,
            attempt: m.attempt,
        }
    }
}

impl WakeMessage {
    /// A wake-up that knows when its attempt is due.
    pub(crate) fn due_at(wake: WakeUp, due: DateTime<Utc>) -> Self {
        Self {
            due: Some(due),
            ..Self::from(wake)
        }
    }

    pub(crate) fn to_json(self) -> String {
        serde_json::to_string(&self).expect("a wake message serializes")
    }
}

/// `arn:partition:lambda:region:account:function:name[:qualifier]` without the qualifier.
pub(crate) fn unqualified(arn: &str) -> &str {
    let parts: Vec<&str> = arn.splitn(8, ':').collect();
    if parts.len() == 8 && parts[2] == "lambda" && parts[5] == "function" {
        let keep: usize = parts[..7].iter().map(|p| p.len() + 1).sum::<usize>() - 1;
        &arn[..keep]
    } else {
        arn
    }
}

/// A schedule name Scheduler would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule name {0:?}: 1-64 of [0-9a-zA-Z-_.]")]
pub(crate) struct InvalidScheduleName(String);

/// A schedule expression Scheduler would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule expression {0:?}: want at(yyyy-mm-ddThh:mm:ss)")]
pub(crate) struct InvalidAtExpression(String);

/// A schedule name Scheduler accepts: 1 to 64 of `[0-9a-zA-Z-_.]`. (moto accepts anything,
/// so the project checks before sending.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScheduleName(String);

impl ScheduleName {
    pub(crate) fn parse(s: &str) -> Result<Self, InvalidScheduleName> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if (1..=64).contains(&s.len()) && s.chars().all(ok_char) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidScheduleName(s.to_owned()))
        }
    }

    /// `<task_id>-<attempt>`: one schedule per attempt, so re-arming is idempotent.
    pub(crate) fn of(wake: WakeUp) -> Self {
        Self::parse(&format!("{}-{}", wake.task_id, wake.attempt)).expect("ULID-number is valid")
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A one-time schedule expression, `at(yyyy-mm-ddThh:mm:ss)` in UTC, whole minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AtExpression {
    pub(crate) at: DateTime<Utc>,
}

impl AtExpression {
    pub(crate) fn to_expression(&self) -> String {
        format!("at({})", self.at.format("%Y-%m-%dT%H:%M:%S"))
    }

    /// Parses and checks an expression the way Scheduler would: the exact shape, a real
    /// date and time.
    pub(crate) fn parse(s: &str) -> Result<Self, InvalidAtExpression> {
        let bad = || InvalidAtExpression(s.to_owned());
        let inner = s
            .strip_prefix("at(")
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(bad)?;
        if inner.len() != 19 {
            return Err(bad());
        }
        let at = chrono::NaiveDateTime::parse_from_str(inner, "%Y-%m-%dT%H:%M:%S")
            .map_err(|_| bad())?
            .and_utc();
        Ok(Self { at })
    }
}

/// How a wake-up is carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// `SendMessage` with `DelaySeconds`.
    Queue { delay_seconds: i32 },
    /// `CreateSchedule` firing at `expression`.
    Schedule {
        name: ScheduleName,
        expression: AtExpression,
    },
}

/// Due within 15 minutes: the delay queue, `floor(at - now)` seconds. The message carries
/// its due time and arrives up to a second early; `Scheduler::fire_due` waits out that
/// fraction, so the delivery is on time rather than up to a second late. Later: a schedule
/// two minutes early, truncated to the minute.
pub(crate) fn plan(wake: WakeUp, at: DateTime<Utc>, now: DateTime<Utc>) -> Plan {
    let wait = at - now;
    if wait <= MAX_QUEUE_DELAY {
        return Plan::Queue {
            delay_seconds: wait.num_seconds().clamp(0, MAX_QUEUE_DELAY.num_seconds()) as i32,
        };
    }
    let fire = (at - SCHEDULE_LEAD)
        .duration_trunc(TimeDelta::minutes(1))
        .expect("minute truncation is in range");
    Plan::Schedule {
        name: ScheduleName::of(wake),
        expression: AtExpression { at: fire },
    }
}

/// `CreateSchedule`'s idempotency token: the schedule's name and the due instant in epoch
/// milliseconds. Arming the same attempt for the same time again is one request; a task
/// moved to another time (`PATCH`) after its schedule was deleted gets a new schedule of the
/// same name, which a token reused with other parameters could refuse or answer with the old
/// one. At most 53 printable characters (Scheduler allows 64).
pub(crate) fn client_token(name: &ScheduleName, due: DateTime<Utc>) -> String {
    format!("{}.{}", name.as_str(), due.timestamp_millis())
}

/// Where the wake-ups go; from the environment (see `lambda::AwsConfig`).
#[derive(Debug, Clone)]
pub(crate) struct AwsWakerConfig {
    pub(crate) delay_queue_url: String,
    pub(crate) schedule_group: String,
    pub(crate) scheduler_role_arn: String,
    pub(crate) dlq_arn: String,
}

fn built<T>(r: Result<T, aws_sdk_scheduler::error::BuildError>) -> Result<T, PortError> {
    r.map_err(|e| PortError::Unavailable(format!("scheduler request: {e}")))
}

use crate::aws_error::sdk_error;

/// [`Waker`] on SQS (delay queue) and EventBridge Scheduler.
#[derive(Clone)]
pub(crate) struct AwsWaker {
    sqs: aws_sdk_sqs::Client,
    scheduler: aws_sdk_scheduler::Client,
    clock: Arc<dyn Clock>,
    config: AwsWakerConfig,
    /// This function's ARN, the schedules' target: known from the first invocation's
    /// context, so the function needs no reference to itself in its environment.
    target_arn: Arc<OnceLock<String>>,
}

impl AwsWaker {
    pub(crate) fn new(
        sqs: aws_sdk_sqs::Client,
        scheduler: aws_sdk_scheduler::Client,
        clock: Arc<dyn Clock>,
        config: AwsWakerConfig,
    ) -> Self {
        Self {
            sqs,
            scheduler,
            clock,
            config,
            target_arn: Arc::new(OnceLock::new()),
        }
    }

    /// Sets the schedules' target once (later calls are ignored: a cold start serves one
    /// function).
    /// The schedules' target. A qualified ARN (`...:function:name:alias` or `:version`) is
    /// cut to the function itself: the scheduler role may invoke only the unqualified ARN,
    /// and a wake-up should reach whatever version is live when it fires.
    pub(crate) fn set_target_arn(&self, arn: &str) {
        if !arn.is_empty() {
            let _ = self.target_arn.set(unqualified(arn).to_owned());
        }
    }

    async fn enqueue(
        &self,
        wake: WakeUp,
        due: DateTime<Utc>,
        delay_seconds: i32,
    ) -> Result<(), PortError> {
        self.sqs
            .send_message()
            .queue_url(&self.config.delay_queue_url)
            .message_body(WakeMessage::due_at(wake, due).to_json())
            .delay_seconds(delay_seconds)
            .send()
            .await
            .map_err(|e| sdk_error("sqs SendMessage", &e))?;
        info!(task_id = %wake.task_id, attempt = wake.attempt, delay_seconds, due = %format_time(&due), "wake-up queued");
        Ok(())
    }

    async fn schedule(
        &self,
        wake: WakeUp,
        due: DateTime<Utc>,
        name: &ScheduleName,
        expression: &AtExpression,
    ) -> Result<(), PortError> {
        let arn = self.target_arn.get().ok_or_else(|| {
            PortError::Unavailable(
                "scheduler: this function's ARN is not known yet (no invocation context)".into(),
            )
        })?;
        // Check what moto would not.
        let text = expression.to_expression();
        AtExpression::parse(&text).map_err(|e| PortError::Unavailable(e.to_string()))?;
        ScheduleName::parse(name.as_str()).map_err(|e| PortError::Unavailable(e.to_string()))?;
        let target = built(
            Target::builder()
                .arn(arn)
                .role_arn(&self.config.scheduler_role_arn)
                .input(WakeMessage::due_at(wake, due).to_json())
                .retry_policy(
                    RetryPolicy::builder()
                        .maximum_event_age_in_seconds(RETRY_MAX_EVENT_AGE_SECONDS)
                        .maximum_retry_attempts(RETRY_MAX_ATTEMPTS)
                        .build(),
                )
                .dead_letter_config(
                    DeadLetterConfig::builder()
                        .arn(&self.config.dlq_arn)
                        .build(),
                )
                .build(),
        )?;
        let window = built(
            FlexibleTimeWindow::builder()
                .mode(FlexibleTimeWindowMode::Off)
                .build(),
        )?;
        let result = self
            .scheduler
            .create_schedule()
            .name(name.as_str())
            .group_name(&self.config.schedule_group)
            .schedule_expression(&text)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            .client_token(client_token(name, due))
            .send()
            .await;
        match result {
            Ok(_) => {}
            // Same name = same task and attempt: it is already armed.
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(CreateScheduleError::ConflictException(_))
                ) => {}
            Err(e) => return Err(sdk_error("scheduler CreateSchedule", &e)),
        }
        info!(task_id = %wake.task_id, attempt = wake.attempt, schedule = name.as_str(), expression = %text, "wake-up scheduled");
        Ok(())
    }
}

#[async_trait]
impl Waker for AwsWaker {
    async fn arm(&self, wake: WakeUp, at: DateTime<Utc>) -> Result<(), PortError> {
        match plan(wake, at, self.clock.now()) {
            Plan::Queue { delay_seconds } => self.enqueue(wake, at, delay_seconds).await,
            Plan::Schedule { name, expression } => {
                self.schedule(wake, at, &name, &expression).await
            }
        }
    }

    async fn disarm(&self, wake: WakeUp) -> Result<(), PortError> {
        let name = ScheduleName::of(wake);
        let result = self
            .scheduler
            .delete_schedule()
            .name(name.as_str())
            .group_name(&self.config.schedule_group)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already fired and deleted, or carried by the queue: nothing to remove.
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteScheduleError::ResourceNotFoundException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error("scheduler DeleteSchedule", &e)),
        }
    }
}

#[cfg(test)]
mod tests;
