//! `/schedules`: recurring schedules, their request and response bodies and OpenAPI paths.
//! On a scheduler built without a schedule store (no host ships so: both keep schedules) every
//! route answers `501`.

use axum::{
    Extension, Json,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::JsonBody;
use super::types::{
    CreateTaskRequest, PayloadView, RetryRequest, RetryView, TaskStatus, TaskView,
    WebhookPayloadRequest,
};
use super::{ApiState, Caller, idempotency_key, request_hash};
use crate::app::{CreateScheduleCommand, CreatedSchedule, ScheduleView};
use crate::domain::{
    CronExpr, Every, NewSchedule, Recurrence, Schedule, ScheduleChanges, ScheduleId, TaskTemplate,
    ValidationError, format_time, parse_time, parse_timezone,
};

/// How many upcoming instants `GET /schedules/{id}` shows.
const NEXT_RUNS: usize = 5;

/// What each occurrence does: `POST /tasks`'s body without `run_at` and `delay_seconds`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskTemplateRequest {
    /// The kind of action; only `webhook` today.
    #[schema(example = "webhook")]
    pub(crate) action: String,
    pub(crate) payload: WebhookPayloadRequest,
    #[serde(default)]
    pub(crate) retry: Option<RetryRequest>,
    /// Webhook timeout in seconds, 1..=30 (default 10).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 30)]
    pub(crate) timeout_seconds: Option<i64>,
}

impl TaskTemplateRequest {
    /// Parsed as `POST /tasks` parses its body; errors name the field under `task.`.
    fn parse(self, now: DateTime<Utc>) -> Result<TaskTemplate, ValidationError> {
        let as_task = CreateTaskRequest {
            action: self.action,
            payload: self.payload,
            run_at: None,
            delay_seconds: Some(0),
            run_at_local: None,
            timezone: None,
            retry: self.retry,
            timeout_seconds: self.timeout_seconds,
        };
        let t = as_task.parse(now).map_err(|e| ValidationError {
            field: format!("task.{}", e.field),
            message: e.message,
        })?;
        Ok(TaskTemplate {
            action: t.action,
            retry: t.retry,
            timeout: t.timeout,
        })
    }
}

/// `POST /schedules`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateScheduleRequest {
    /// A cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
    /// seconds first; `L`, `#`, `W`, names (`MON`, `JAN`) and `@daily`-style nicknames.
    /// Exactly one of `cron` and `every`.
    #[serde(default)]
    #[schema(example = "0 9 * * MON-FRI")]
    pub(crate) cron: Option<String>,
    /// A fixed period, `90s`, `15m`, `1h`, `1d` (1 s to 366 d), counted from `start_at` or
    /// the creation; absolute time, unaffected by DST.
    #[serde(default)]
    #[schema(example = "15m")]
    pub(crate) every: Option<String>,
    /// IANA time zone the cron expression is read in (default `UTC`).
    #[serde(default)]
    #[schema(example = "Europe/Paris")]
    pub(crate) timezone: Option<String>,
    /// No occurrence before this instant (RFC 3339 with an offset).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub(crate) start_at: Option<String>,
    /// No occurrence after this instant (RFC 3339 with an offset).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub(crate) end_at: Option<String>,
    /// Created paused: no occurrence until resumed (default false).
    #[serde(default)]
    pub(crate) paused: Option<bool>,
    pub(crate) task: TaskTemplateRequest,
}

fn recurrence(
    cron: Option<String>,
    every: Option<String>,
) -> Result<Option<Recurrence>, ValidationError> {
    match (cron, every) {
        (Some(c), None) => Ok(Some(Recurrence::Cron(CronExpr::parse("cron", &c)?))),
        (None, Some(e)) => Ok(Some(Recurrence::Every(Every::parse("every", &e)?))),
        (Some(_), Some(_)) => Err(ValidationError::new(
            "every",
            "give cron or every, not both",
        )),
        (None, None) => Ok(None),
    }
}

fn end_after(
    end_at: Option<DateTime<Utc>>,
    start_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), ValidationError> {
    match end_at {
        Some(end) if end <= now => Err(ValidationError::new("end_at", "must be in the future")),
        Some(end) if start_at.is_some_and(|s| end < s) => Err(ValidationError::new(
            "end_at",
            "must not be before start_at",
        )),
        _ => Ok(()),
    }
}

impl CreateScheduleRequest {
    pub(crate) fn parse(self, now: DateTime<Utc>) -> Result<NewSchedule, ValidationError> {
        let recurrence = recurrence(self.cron, self.every)?
            .ok_or_else(|| ValidationError::new("cron", "required (or every)"))?;
        let timezone = parse_timezone("timezone", self.timezone.as_deref().unwrap_or("UTC"))?;
        let start_at = self
            .start_at
            .map(|s| parse_time("start_at", &s))
            .transpose()?;
        let end_at = self.end_at.map(|s| parse_time("end_at", &s)).transpose()?;
        end_after(end_at, start_at, now)?;
        Ok(NewSchedule {
            recurrence,
            timezone,
            start_at,
            end_at,
            paused: self.paused.unwrap_or(false),
            task: self.task.parse(now)?,
        })
    }
}

/// `PATCH /schedules/{schedule_id}`: each field given is changed; at least one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchScheduleRequest {
    /// A new cron expression (replaces `every`).
    #[serde(default)]
    pub(crate) cron: Option<String>,
    /// A new period (replaces `cron`), counted from now.
    #[serde(default)]
    pub(crate) every: Option<String>,
    #[serde(default)]
    pub(crate) timezone: Option<String>,
    /// `true` pauses (the pending occurrence is cancelled), `false` resumes (the next
    /// occurrence after now is planned).
    #[serde(default)]
    pub(crate) paused: Option<bool>,
    /// A new end (RFC 3339 with an offset), or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub(crate) end_at: Option<Value>,
    #[serde(default)]
    pub(crate) task: Option<TaskTemplateRequest>,
}

/// A field that is present, `null` included: plain `Option<Value>` reads `null` as absent,
/// which would make `{"end_at": null}` change nothing.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl PatchScheduleRequest {
    pub(crate) fn parse(self, now: DateTime<Utc>) -> Result<ScheduleChanges, ValidationError> {
        let end_at = match self.end_at {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(parse_time("end_at", &s)?)),
            Some(_) => {
                return Err(ValidationError::new(
                    "end_at",
                    "must be an RFC 3339 timestamp or null",
                ));
            }
        };
        if let Some(end) = end_at {
            end_after(end, None, now)?;
        }
        let changes = ScheduleChanges {
            recurrence: recurrence(self.cron, self.every)?,
            timezone: self
                .timezone
                .map(|t| parse_timezone("timezone", &t))
                .transpose()?,
            task: self.task.map(|t| t.parse(now)).transpose()?,
            paused: self.paused,
            end_at,
        };
        if changes == ScheduleChanges::default() {
            return Err(ValidationError::new(
                "",
                "give at least one of cron, every, timezone, paused, end_at, task",
            ));
        }
        Ok(changes)
    }
}

/// One upcoming instant, in the schedule's zone and in UTC.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct NextRun {
    #[schema(example = "2027-03-29T09:00:00+02:00")]
    pub(crate) local: String,
    #[schema(example = "2027-03-29T07:00:00Z")]
    pub(crate) utc: String,
}

/// The last occurrence (claimed or triggered) and how it is going.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LastOccurrence {
    pub(crate) task_id: String,
    pub(crate) status: TaskStatus,
    pub(crate) planned_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TemplateView {
    #[schema(example = "webhook")]
    pub(crate) action: String,
    pub(crate) payload: PayloadView,
    pub(crate) retry: RetryView,
    pub(crate) timeout_seconds: u32,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ScheduleResponse {
    #[schema(example = "01JF3Q8R5V2Z6X4W9YH7K1M0NB")]
    pub(crate) schedule_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) every: Option<String>,
    pub(crate) timezone: String,
    pub(crate) start_at: Option<String>,
    pub(crate) end_at: Option<String>,
    pub(crate) paused: bool,
    pub(crate) task: TemplateView,
    /// The next 5 instants (fewer when the plan ends; none while paused). The first is the
    /// pending occurrence's.
    pub(crate) next_runs: Vec<NextRun>,
    /// The pending occurrence: a `scheduled` task (null while paused or after `end_at`).
    pub(crate) pending_task_id: Option<String>,
    pub(crate) last_occurrence: Option<LastOccurrence>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) idempotency_key: Option<String>,
}

fn next_runs(s: &Schedule) -> Vec<NextRun> {
    let Some(p) = s.pending else {
        return Vec::new();
    };
    let mut runs = vec![p.at];
    runs.extend(s.plan.next_runs(p.at, NEXT_RUNS - 1));
    runs.into_iter()
        .map(|t| NextRun {
            local: t
                .with_timezone(&s.plan.timezone)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
            utc: format_time(&t),
        })
        .collect()
}

impl ScheduleResponse {
    fn of(s: &Schedule, last: Option<&crate::domain::Task>) -> Self {
        let (cron, every) = match &s.plan.recurrence {
            Recurrence::Cron(c) => (Some(c.as_str().to_owned()), None),
            Recurrence::Every(e) => (None, Some(e.to_string())),
        };
        Self {
            schedule_id: s.id.to_string(),
            cron,
            every,
            timezone: s.plan.timezone.name().to_owned(),
            start_at: s.plan.start_at.as_ref().map(format_time),
            end_at: s.plan.end_at.as_ref().map(format_time),
            paused: s.paused,
            task: TemplateView {
                action: s.task.action.name().to_owned(),
                payload: s.task.action.webhook().into(),
                retry: (&s.task.retry).into(),
                timeout_seconds: s.task.timeout.get(),
            },
            next_runs: next_runs(s),
            pending_task_id: s.pending.map(|p| p.task_id.to_string()),
            last_occurrence: last.map(|t| LastOccurrence {
                task_id: t.id.to_string(),
                status: t.status.into(),
                planned_at: format_time(&t.occurrence.as_ref().map_or(t.run_at, |o| o.planned_at)),
            }),
            created_at: format_time(&s.created_at),
            updated_at: format_time(&s.updated_at),
            idempotency_key: s.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
        }
    }
}

impl From<&ScheduleView> for ScheduleResponse {
    fn from(v: &ScheduleView) -> Self {
        Self::of(&v.schedule, v.last.as_ref())
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ScheduleList {
    pub(crate) schedules: Vec<ScheduleResponse>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub(crate) next_cursor: Option<String>,
}

/// Query parameters of `GET /schedules` (documentation; parsed by hand for precise errors).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct ScheduleListParams {
    /// Page size, 1..=100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub(crate) limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

fn parse_schedule_id(raw: &str) -> Result<ScheduleId, ApiError> {
    ScheduleId::parse(raw).map_err(ApiError::from)
}

/// Create a recurring schedule; its first occurrence is planned at once.
#[utoipa::path(
    post, path = "/schedules", tag = "schedules",
    request_body = CreateScheduleRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "As for POST /tasks: a repeat with the same body returns the original schedule (200)")),
    responses(
        (status = 201, description = "Created", body = ScheduleResponse, headers(("Location" = String, description = "/schedules/{schedule_id}"))),
        (status = 200, description = "Idempotent repeat: the schedule created by the first request", body = ScheduleResponse),
        (status = 400, description = "Invalid request; `field` names the offending field", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with a different body", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
    )
)]
pub(crate) async fn create_schedule(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: JsonBody<CreateScheduleRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let schedule = body.value.parse(state.scheduler.now())?;
    let cmd = CreateScheduleCommand {
        owner: caller.0,
        schedule,
        idempotency: key.map(|k| (k, request_hash(&body.canonical))),
    };
    let (status, s) = match state.scheduler.create_schedule(cmd).await? {
        CreatedSchedule::New(s) => (StatusCode::CREATED, s),
        CreatedSchedule::Existing(s) => (StatusCode::OK, s),
    };
    Ok((
        status,
        [(header::LOCATION, format!("/schedules/{}", s.id))],
        Json(ScheduleResponse::of(&s, None)),
    )
        .into_response())
}

/// The caller's schedules, oldest first.
#[utoipa::path(
    get, path = "/schedules", tag = "schedules",
    params(ScheduleListParams),
    responses(
        (status = 200, description = "A page of schedules", body = ScheduleList),
        (status = 400, description = "Invalid query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
    )
)]
pub(crate) async fn list_schedules(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ScheduleList>, ApiError> {
    let mut limit = 50;
    let mut after = None;
    let mut seen = std::collections::HashSet::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !seen.insert(k.clone()) {
            return Err(ApiError::invalid(k, "given more than once"));
        }
        match k.as_ref() {
            "limit" => {
                limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid("limit", "must be an integer between 1 and 100")
                    })?;
            }
            "cursor" => {
                after = Some(ScheduleId::parse_field("cursor", &v).map_err(ApiError::from)?);
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "unknown query parameter (limit, cursor)",
                ));
            }
        }
    }
    let (schedules, more) = state
        .scheduler
        .list_schedules(&caller.0, limit, after)
        .await?;
    Ok(Json(ScheduleList {
        next_cursor: more
            .then(|| schedules.last().map(|s| s.id.to_string()))
            .flatten(),
        schedules: schedules
            .iter()
            .map(|s| ScheduleResponse::of(s, None))
            .collect(),
    }))
}

/// A schedule with its next 5 instants and its last occurrence.
#[utoipa::path(
    get, path = "/schedules/{schedule_id}", tag = "schedules",
    params(("schedule_id" = String, Path, description = "The schedule id (a ULID)", pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleResponse),
        (status = 400, description = "Not a schedule id", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "No such schedule for this caller", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
    )
)]
pub(crate) async fn get_schedule(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    let view = state
        .scheduler
        .get_schedule(&caller.0, parse_schedule_id(&id)?)
        .await?;
    Ok(Json(ScheduleResponse::from(&view)))
}

/// Change a schedule; the pending occurrence is re-planned at once.
#[utoipa::path(
    patch, path = "/schedules/{schedule_id}", tag = "schedules",
    request_body = PatchScheduleRequest,
    params(("schedule_id" = String, Path, description = "The schedule id (a ULID)", pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "The schedule as changed", body = ScheduleResponse),
        (status = 400, description = "Invalid request; `field` names the offending field", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "No such schedule for this caller", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
    )
)]
pub(crate) async fn patch_schedule(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: JsonBody<PatchScheduleRequest>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    let id = parse_schedule_id(&id)?;
    let changes = body.value.parse(state.scheduler.now())?;
    let s = state
        .scheduler
        .change_schedule(&caller.0, id, changes)
        .await?;
    let view = state.scheduler.view_of(s).await?;
    Ok(Json(ScheduleResponse::from(&view)))
}

/// Delete a schedule: no further occurrence; its tasks keep their history.
#[utoipa::path(
    delete, path = "/schedules/{schedule_id}", tag = "schedules",
    params(("schedule_id" = String, Path, description = "The schedule id (a ULID)", pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "The schedule as it was deleted (no pending occurrence)", body = ScheduleResponse),
        (status = 400, description = "Not a schedule id", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "No such schedule for this caller", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
    )
)]
pub(crate) async fn delete_schedule(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    let s = state
        .scheduler
        .delete_schedule(&caller.0, parse_schedule_id(&id)?)
        .await?;
    Ok(Json(ScheduleResponse::of(&s, None)))
}

/// One occurrence now, outside the plan (the pending one is left as it is).
#[utoipa::path(
    post, path = "/schedules/{schedule_id}/trigger", tag = "schedules",
    params(("schedule_id" = String, Path, description = "The schedule id (a ULID)", pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 201, description = "The occurrence's task, due now", body = TaskView, headers(("Location" = String, description = "/tasks/{task_id}"))),
        (status = 400, description = "Not a schedule id", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "No such schedule for this caller", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
    )
)]
pub(crate) async fn trigger_schedule(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let task = state
        .scheduler
        .trigger_schedule(&caller.0, parse_schedule_id(&id)?)
        .await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/tasks/{}", task.id))],
        Json(TaskView::from(&task)),
    )
        .into_response())
}

#[cfg(test)]
mod patch_tests {
    use super::*;

    #[test]
    fn a_null_end_at_removes_the_end_and_an_absent_one_keeps_it() {
        let now = Utc::now();
        let null: PatchScheduleRequest = serde_json::from_str(r#"{"end_at": null}"#).unwrap();
        assert_eq!(null.parse(now).unwrap().end_at, Some(None));
        let absent: PatchScheduleRequest = serde_json::from_str(r#"{"paused": true}"#).unwrap();
        assert_eq!(absent.parse(now).unwrap().end_at, None);
    }
}
