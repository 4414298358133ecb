//! Request and response bodies of docs/api.md, with their OpenAPI schemas. Requests are parsed
//! into domain types (`CreateTaskRequest::parse`); responses are views of a `Task`.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::domain::{
    Action, AttemptOutcome, HttpMethod, LocalRunAt, NewTask, RetryPolicy, Status, Task,
    TimeoutSeconds, ValidationError, WebhookAction, WebhookHeaders, WebhookUrl, format_time,
    parse_time,
};

/// Deepest accepted nesting of `payload.data` (arrays and objects).
pub(crate) const MAX_DATA_DEPTH: usize = 32;

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Longest accepted `delay_seconds`: ten years.
pub(crate) const MAX_DELAY_SECONDS: i64 = 10 * 366 * 24 * 3600;

/// `POST /tasks` (and `POST /schedule-task`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTaskRequest {
    /// The kind of action; only `webhook` today.
    #[schema(value_type = ActionKind)]
    pub(crate) action: String,
    pub(crate) payload: WebhookPayloadRequest,
    /// When to call, RFC 3339 with an offset. A time in the past means "as soon as
    /// possible". Exactly one of `run_at`, `delay_seconds` and `run_at_local`.
    #[serde(default)]
    #[schema(example = "2026-05-17T15:00:00Z", format = DateTime)]
    pub(crate) run_at: Option<String>,
    /// Seconds from now; alternative to `run_at`.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 316_224_000)]
    pub(crate) delay_seconds: Option<i64>,
    /// A local date and time without offset (`YYYY-MM-DDTHH:MM[:SS[.fff]]`), in
    /// `timezone`; alternative to `run_at`. A time the clocks skip is the first instant
    /// after the gap; a time they repeat is its earlier instance.
    #[serde(default)]
    #[schema(example = "2027-03-28T09:00:00")]
    pub(crate) run_at_local: Option<String>,
    /// The IANA time zone of `run_at_local` (required with it, refused without it).
    #[serde(default)]
    #[schema(example = "Europe/Paris")]
    pub(crate) timezone: Option<String>,
    #[serde(default)]
    pub(crate) retry: Option<RetryRequest>,
    /// Webhook timeout in seconds, 1..=30 (default 10).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 30)]
    pub(crate) timeout_seconds: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookPayloadRequest {
    /// Absolute http(s) URL, at most 2048 characters, without credentials.
    #[schema(
        example = "https://example.com/hook",
        max_length = 2048,
        format = "uri",
        pattern = "^[hH][tT][tT][pP][sS]?://"
    )]
    pub(crate) url: String,
    /// `POST` (default), `PUT`, `PATCH`, `GET` or `DELETE`.
    #[serde(default)]
    #[schema(value_type = Option<MethodName>)]
    pub(crate) method: Option<String>,
    /// At most 32; hop-by-hop headers, `Host`, `Content-Length` and the `webhook-*`
    /// signature headers are refused.
    #[serde(default)]
    pub(crate) headers: Option<BTreeMap<String, String>>,
    /// Any JSON; sent as the request body.
    #[serde(default)]
    pub(crate) data: Option<Value>,
}

/// The kinds of action (documentation of `action`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ActionKind {
    Webhook,
}

/// The webhook's HTTP method (documentation of `payload.method`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum MethodName {
    Post,
    Put,
    Patch,
    Get,
    Delete,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryRequest {
    /// Attempts in all, 1..=25 (default 3).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 25)]
    pub(crate) max_attempts: Option<i64>,
    /// First backoff in seconds, 1..=86400 (default 10); doubles with full jitter.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub(crate) initial_backoff_seconds: Option<i64>,
    /// Backoff cap in seconds, 1..=86400, not below the initial (default 3600).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub(crate) max_backoff_seconds: Option<i64>,
}

impl CreateTaskRequest {
    /// Parses into a domain `NewTask`; `now` resolves `delay_seconds`.
    pub(crate) fn parse(self, now: DateTime<Utc>) -> Result<NewTask, ValidationError> {
        if self.action != Action::ALLOWED {
            return Err(ValidationError::new(
                "action",
                format!("must be one of: {}", Action::ALLOWED),
            ));
        }
        let p = self.payload;
        if p.data.as_ref().is_some_and(|d| depth(d) > MAX_DATA_DEPTH) {
            return Err(ValidationError::new(
                "payload.data",
                format!("nested deeper than {MAX_DATA_DEPTH} levels"),
            ));
        }
        let action = Action::Webhook(WebhookAction {
            url: WebhookUrl::parse(&p.url)?,
            method: p
                .method
                .as_deref()
                .map(HttpMethod::parse)
                .transpose()?
                .unwrap_or_default(),
            headers: WebhookHeaders::parse(p.headers.unwrap_or_default())?,
            data: p.data,
        });
        let (run_at, local) = RescheduleRequest {
            run_at: self.run_at,
            delay_seconds: self.delay_seconds,
            run_at_local: self.run_at_local,
            timezone: self.timezone,
        }
        .parse(now)?;
        let retry = match self.retry {
            Some(r) => RetryPolicy::parse(
                r.max_attempts,
                r.initial_backoff_seconds,
                r.max_backoff_seconds,
            )?,
            None => RetryPolicy::default(),
        };
        let timeout = self
            .timeout_seconds
            .map(TimeoutSeconds::parse)
            .transpose()?
            .unwrap_or_default();
        Ok(NewTask {
            action,
            run_at,
            retry,
            timeout,
            local,
        })
    }
}

/// `PATCH /tasks/{task_id}`: the task's new time, given as on create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RescheduleRequest {
    /// The new time, RFC 3339 with an offset; a time in the past means "as soon as
    /// possible". Exactly one of `run_at`, `delay_seconds` and `run_at_local`.
    #[serde(default)]
    #[schema(example = "2026-05-17T15:00:00Z", format = DateTime)]
    pub(crate) run_at: Option<String>,
    /// Seconds from now.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 316_224_000)]
    pub(crate) delay_seconds: Option<i64>,
    /// A local date and time without offset, in `timezone` (as on create).
    #[serde(default)]
    #[schema(example = "2027-03-28T09:00:00")]
    pub(crate) run_at_local: Option<String>,
    /// The IANA time zone of `run_at_local` (required with it, refused without it).
    #[serde(default)]
    #[schema(example = "Europe/Paris")]
    pub(crate) timezone: Option<String>,
}

impl RescheduleRequest {
    /// The instant these time fields name (a `PATCH`'s, or a create's: it has the same
    /// ones), in whole milliseconds (`delay_seconds` counts from `now`), with the local time
    /// and zone when they were given. Neither is a `400` naming `run_at`; more than one names
    /// the later one (`delay_seconds`, then `run_at_local`); `timezone` goes with
    /// `run_at_local` and only with it.
    pub(crate) fn parse(
        self,
        now: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, Option<LocalRunAt>), ValidationError> {
        const ONE_OF: &str = "give exactly one of run_at, delay_seconds and run_at_local";
        if self.run_at_local.is_none() && self.timezone.is_some() {
            return Err(ValidationError::new(
                "timezone",
                "only with run_at_local (run_at carries its own offset)",
            ));
        }
        match (self.run_at, self.delay_seconds, self.run_at_local) {
            (Some(s), None, None) => Ok((parse_time("run_at", &s)?, None)),
            (None, Some(d), None) if (0..=MAX_DELAY_SECONDS).contains(&d) => {
                // Whole milliseconds, like a parsed run_at: the precision the stores compare.
                Ok((crate::domain::to_millis(now) + TimeDelta::seconds(d), None))
            }
            (None, Some(_), None) => Err(ValidationError::new(
                "delay_seconds",
                format!("must be between 0 and {MAX_DELAY_SECONDS}"),
            )),
            (None, None, Some(local)) => {
                let zone = self.timezone.ok_or_else(|| {
                    ValidationError::new(
                        "timezone",
                        "required with run_at_local (e.g. Europe/Paris)",
                    )
                })?;
                let (local, at) = LocalRunAt::parse(&local, &zone)?;
                Ok((at, Some(local)))
            }
            (Some(_), Some(_), None) => Err(ValidationError::new("delay_seconds", ONE_OF)),
            (_, _, Some(_)) => Err(ValidationError::new("run_at_local", ONE_OF)),
            (None, None, None) => Err(ValidationError::new(
                "run_at",
                "required (or delay_seconds, or run_at_local with timezone)",
            )),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TaskStatus {
    Scheduled,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl From<Status> for TaskStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Scheduled => Self::Scheduled,
            Status::Running => Self::Running,
            Status::Completed => Self::Completed,
            Status::Failed => Self::Failed,
            Status::Cancelled => Self::Cancelled,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
}

impl From<AttemptOutcome> for Outcome {
    fn from(o: AttemptOutcome) -> Self {
        match o {
            AttemptOutcome::Succeeded => Self::Succeeded,
            AttemptOutcome::Failed => Self::Failed,
            AttemptOutcome::TimedOut => Self::TimedOut,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct PayloadView {
    pub(crate) url: String,
    #[schema(example = "POST")]
    pub(crate) method: String,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) data: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RetryView {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff_seconds: u32,
    pub(crate) max_backoff_seconds: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct AttemptView {
    pub(crate) number: u32,
    pub(crate) started_at: String,
    pub(crate) finished_at: String,
    pub(crate) outcome: Outcome,
    pub(crate) status_code: Option<u16>,
    pub(crate) error: Option<String>,
    pub(crate) duration_ms: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DeadLetterView {
    pub(crate) recorded_at: String,
    pub(crate) attempts: u32,
    pub(crate) last_error: String,
}

/// A task as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TaskView {
    #[schema(example = "01JF3Q8R5V2Z6X4W9YH7K1M0NB")]
    pub(crate) task_id: String,
    pub(crate) status: TaskStatus,
    #[schema(example = "webhook")]
    pub(crate) action: String,
    pub(crate) payload: PayloadView,
    pub(crate) run_at: String,
    /// The local time `run_at` was given as (`run_at_local`), only when it was; `run_at` is
    /// the instant it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2027-03-28T09:00:00")]
    pub(crate) run_at_local: Option<String>,
    /// The IANA time zone of `run_at_local`, only with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "Europe/Paris")]
    pub(crate) timezone: Option<String>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) retry: RetryView,
    pub(crate) timeout_seconds: u32,
    pub(crate) attempts: Vec<AttemptView>,
    /// When the next (or running) attempt is due; null once finished.
    pub(crate) next_attempt_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) idempotency_key: Option<String>,
    /// Present once the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dead_letter: Option<DeadLetterView>,
    /// Present on a schedule's occurrences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) occurrence: Option<OccurrenceView>,
}

/// What links an occurrence to its schedule.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct OccurrenceView {
    pub(crate) schedule_id: String,
    /// The instant the plan gave it (a trigger's: when it was asked for).
    pub(crate) planned_at: String,
    /// Present when it ran more than one period late: it stands for this many later
    /// occurrences of the missed span too, which do not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) catch_up: Option<u32>,
    /// Made by `POST /schedules/{schedule_id}/trigger`, outside the plan.
    pub(crate) triggered: bool,
}

impl From<&WebhookAction> for PayloadView {
    fn from(hook: &WebhookAction) -> Self {
        Self {
            url: hook.url.to_string(),
            method: hook.method.as_str().to_owned(),
            headers: hook.headers.as_map().clone(),
            data: hook.data.clone(),
        }
    }
}

impl From<&RetryPolicy> for RetryView {
    fn from(retry: &RetryPolicy) -> Self {
        Self {
            max_attempts: retry.max_attempts.get(),
            initial_backoff_seconds: retry.initial_backoff_seconds.get(),
            max_backoff_seconds: retry.max_backoff_seconds.get(),
        }
    }
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> Self {
        let hook = t.action.webhook();
        Self {
            task_id: t.id.to_string(),
            status: t.status.into(),
            action: t.action.name().to_owned(),
            payload: hook.into(),
            run_at: format_time(&t.run_at),
            run_at_local: t.local.as_ref().map(|l| l.run_at_local.clone()),
            timezone: t.local.as_ref().map(|l| l.timezone.clone()),
            created_at: format_time(&t.created_at),
            updated_at: format_time(&t.updated_at),
            retry: (&t.retry).into(),
            timeout_seconds: t.timeout.get(),
            attempts: t
                .attempts
                .iter()
                .map(|a| AttemptView {
                    number: a.number,
                    started_at: format_time(&a.started_at),
                    finished_at: format_time(&a.finished_at),
                    outcome: a.outcome.into(),
                    status_code: a.status_code,
                    error: a.error.clone(),
                    duration_ms: a.duration_ms,
                })
                .collect(),
            next_attempt_at: t
                .next_attempt_at
                .filter(|_| !t.status.is_finished())
                .map(|a| format_time(&a)),
            idempotency_key: t.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            dead_letter: t.dead_letter.as_ref().map(|d| DeadLetterView {
                recorded_at: format_time(&d.recorded_at),
                attempts: d.attempts,
                last_error: d.last_error.clone(),
            }),
            occurrence: t.occurrence.as_ref().map(|o| OccurrenceView {
                schedule_id: o.schedule_id.to_string(),
                planned_at: format_time(&o.planned_at),
                catch_up: o.catch_up,
                triggered: o.triggered,
            }),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TaskList {
    pub(crate) tasks: Vec<TaskView>,
    /// Pass as `cursor` for the next page; null on the last page. A page may end before
    /// `limit` tasks when its tasks are large (at most 5,000,000 bytes of tasks per page);
    /// it then has a `next_cursor` too.
    pub(crate) next_cursor: Option<String>,
}

/// Query parameters of `GET /tasks` (documentation; parsed by hand for precise errors).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct ListParams {
    /// Only tasks in this status.
    pub(crate) status: Option<TaskStatus>,
    /// Only the occurrences of this schedule.
    pub(crate) schedule_id: Option<String>,
    /// Page size, 1..=100 (default 50): the most tasks a page holds. A page of large tasks
    /// holds fewer (at most 5,000,000 bytes of tasks).
    #[param(minimum = 1, maximum = 100)]
    pub(crate) limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_-]+$")]
    pub(crate) cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Health {
    #[schema(example = "ok")]
    pub(crate) status: String,
}
