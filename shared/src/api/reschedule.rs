//! `PATCH /tasks/{task_id}` and `POST /tasks/{task_id}/run`: move a scheduled task in time.

use axum::{
    Extension, Json,
    extract::{Path, State},
};

use super::error::{ApiError, ErrorBody};
use super::extract::JsonBody;
use super::types::{RescheduleRequest, TaskView};
use super::{ApiState, Caller, parse_id};

/// Move a scheduled task to another time.
///
/// Exactly one of `run_at`, `delay_seconds` and `run_at_local` (with `timezone`), as on
/// create. `run_at` and the next attempt move to the new time; the old wake-up is disarmed
/// or, when it still arrives, finds the attempt not due (or made) and delivers nothing.
#[utoipa::path(
    patch, path = "/tasks/{task_id}", tag = "tasks",
    params(("task_id" = String, Path, description = "The task id (a ULID)", pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    request_body = RescheduleRequest,
    responses(
        (status = 200, description = "The task, due at its new time", body = TaskView),
        (status = 400, description = "Not a task id, or an invalid body; `field` names the offending field", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
        (status = 404, description = "No such task for this caller", body = ErrorBody),
        (status = 409, description = "Not scheduled (running, completed, failed or cancelled); the message names the status", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    )
)]
pub(super) async fn reschedule_task(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: JsonBody<RescheduleRequest>,
) -> Result<Json<TaskView>, ApiError> {
    let id = parse_id(&id)?;
    let (at, local) = body.value.parse(state.scheduler.now())?;
    let task = state.scheduler.reschedule(&caller.0, id, at, local).await?;
    Ok(Json(TaskView::from(&task)))
}

/// Make a scheduled task due now.
#[utoipa::path(
    post, path = "/tasks/{task_id}/run", tag = "tasks",
    params(("task_id" = String, Path, description = "The task id (a ULID)", pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "The task, due now", body = TaskView),
        (status = 400, description = "Not a task id", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
        (status = 404, description = "No such task for this caller", body = ErrorBody),
        (status = 409, description = "Not scheduled (running, completed, failed or cancelled); the message names the status", body = ErrorBody),
    )
)]
pub(super) async fn run_task(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let task = state.scheduler.run_now(&caller.0, parse_id(&id)?).await?;
    Ok(Json(TaskView::from(&task)))
}
