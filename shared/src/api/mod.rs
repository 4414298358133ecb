//! The HTTP API of `docs/api.md` as one axum `Router`, served by `axum::serve` locally and fed
//! API Gateway events in Lambda.

pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod extract;
mod reschedule;
pub(crate) mod schedules;
pub(crate) mod types;

#[cfg(test)]
mod docs_tests;
#[cfg(test)]
mod schedules_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, patch, post},
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::app::{CreateCommand, Created, Scheduler};
use crate::domain::{Cursor, IdempotencyKey, ScheduleId, Status, Task, TaskId};
use crate::ports::ListQuery;
pub(crate) use auth::{ApiToken, Auth, Caller};
use error::{ApiError, ErrorBody};
use extract::JsonBody;
use types::{CreateTaskRequest, Health, ListParams, TaskList, TaskView};

#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) scheduler: Scheduler,
    pub(crate) auth: Arc<Auth>,
    pub(crate) rate_limit: Option<RateLimit>,
}

/// Requests per second allowed to each owner (a GCRA bucket per owner, governor). On AWS the
/// stage throttling does this job.
#[derive(Clone)]
pub(crate) struct RateLimit(Arc<governor::DefaultKeyedRateLimiter<String>>);

impl RateLimit {
    /// `None` when `per_second` is 0 (no limit).
    pub(crate) fn per_second(per_second: u32, burst: u32) -> Option<Self> {
        let rate = std::num::NonZeroU32::new(per_second)?;
        let burst = std::num::NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
        let quota = governor::Quota::per_second(rate).allow_burst(burst);
        Some(Self(Arc::new(governor::RateLimiter::keyed(quota))))
    }

    /// `Err(wait)` when the owner must wait before its next request.
    pub(crate) fn check(&self, owner: &str) -> Result<(), std::time::Duration> {
        use governor::clock::Clock;
        self.0.check_key(&owner.to_owned()).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }
}

/// Builds the router both hosts serve, without a rate limit (the Lambda host's: API
/// Gateway throttles).
#[cfg(any(feature = "aws", test))]
pub(crate) fn router(scheduler: Scheduler, auth: Auth) -> Router {
    router_with(scheduler, auth, None)
}

/// Builds the router with an optional per-owner rate limit (the local host's).
pub(crate) fn router_with(
    scheduler: Scheduler,
    auth: Auth,
    rate_limit: Option<RateLimit>,
) -> Router {
    let state = ApiState {
        scheduler,
        auth: Arc::new(auth),
        rate_limit,
    };
    let protected = Router::new()
        .route("/tasks", post(create_task).get(list_tasks))
        .route("/schedule-task", post(schedule_task))
        .route("/tasks/{task_id}", get(get_task).delete(cancel_task))
        .route("/tasks/{task_id}/retry", post(retry_task))
        .route("/tasks/{task_id}", patch(reschedule::reschedule_task))
        .route("/tasks/{task_id}/run", post(reschedule::run_task))
        .route(
            "/schedules",
            post(schedules::create_schedule).get(schedules::list_schedules),
        )
        .route(
            "/schedules/{schedule_id}",
            get(schedules::get_schedule)
                .patch(schedules::patch_schedule)
                .delete(schedules::delete_schedule),
        )
        .route(
            "/schedules/{schedule_id}/trigger",
            post(schedules::trigger_schedule),
        )
        .route("/openapi.json", get(openapi_json))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::internal().into_response()
        }))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(
                    tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
                )
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                ),
        )
        .with_state(state)
}

fn parse_id(raw: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(raw).map_err(ApiError::from)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key", "must be printable ASCII"))
                .and_then(|s| IdempotencyKey::parse(s).map_err(ApiError::from))
        })
        .transpose()
}

/// The hash an idempotent repeat is recognised by: of the body's canonical JSON.
fn request_hash(canonical: &str) -> String {
    use sha2::{Digest, Sha256};
    base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        Sha256::digest(canonical.as_bytes()),
    )
}

async fn create(
    state: ApiState,
    caller: Caller,
    headers: HeaderMap,
    body: JsonBody<CreateTaskRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let task = body.value.parse(state.scheduler.now())?;
    let hash = request_hash(&body.canonical);
    let cmd = CreateCommand {
        owner: caller.0,
        task,
        idempotency: key.map(|k| (k, hash)),
    };
    Ok(match state.scheduler.create(cmd).await? {
        Created::New(t) => (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/tasks/{}", t.id))],
            Json(TaskView::from(&t)),
        )
            .into_response(),
        Created::Existing(t) => (
            StatusCode::OK,
            [(header::LOCATION, format!("/tasks/{}", t.id))],
            Json(TaskView::from(&t)),
        )
            .into_response(),
    })
}

/// Schedule a webhook call.
#[utoipa::path(
    post, path = "/tasks", tag = "tasks",
    request_body = CreateTaskRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "≤ 64 printable characters; a repeat with the same body returns the original task (200)")),
    responses(
        (status = 201, description = "Created", body = TaskView, headers(("Location" = String, description = "/tasks/{task_id}"))),
        (status = 200, description = "Idempotent repeat: the task created by the first request", body = TaskView),
        (status = 400, description = "Invalid request; `field` names the offending field", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with a different body", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    )
)]
async fn create_task(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: JsonBody<CreateTaskRequest>,
) -> Result<Response, ApiError> {
    create(state, caller, headers, body).await
}

/// Alias of `POST /tasks`: the original design's path.
#[utoipa::path(
    post, path = "/schedule-task", tag = "tasks",
    request_body = CreateTaskRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "As for POST /tasks")),
    responses(
        (status = 201, description = "Created", body = TaskView),
        (status = 200, description = "Idempotent repeat", body = TaskView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with a different body", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    )
)]
async fn schedule_task(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: JsonBody<CreateTaskRequest>,
) -> Result<Response, ApiError> {
    create(state, caller, headers, body).await
}

/// List the caller's tasks, ordered by `run_at` (newest last).
///
/// A page holds at most `limit` tasks and at most 5,000,000 bytes of them (counted as they
/// travel in a Lambda response: `"` and `\` twice), so that it stays under Lambda's 6 MiB
/// response limit: a page of large tasks may hold fewer than `limit`, and then has a
/// `next_cursor`. It always holds at least one task when there is one.
#[utoipa::path(
    get, path = "/tasks", tag = "tasks",
    params(ListParams),
    responses(
        (status = 200, description = "A page of tasks: at most `limit` tasks, and at most 5,000,000 bytes of them (fewer tasks when they are large; `next_cursor` then names the rest)", body = TaskList),
        (status = 400, description = "Invalid query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
    )
)]
async fn list_tasks(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<TaskList>, ApiError> {
    let mut query = ListQuery {
        owner: caller.0,
        status: None,
        schedule_id: None,
        limit: 50,
        after: None,
    };
    let mut seen = std::collections::HashSet::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !seen.insert(k.clone()) {
            return Err(ApiError::invalid(k, "given more than once"));
        }
        match k.as_ref() {
            "status" => query.status = Some(Status::parse(&v)?),
            "limit" => {
                query.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid("limit", "must be an integer between 1 and 100")
                    })?
            }
            "cursor" => query.after = Some(Cursor::decode(&v)?),
            "schedule_id" => query.schedule_id = Some(ScheduleId::parse(&v)?),
            other => {
                return Err(ApiError::invalid(
                    other,
                    "unknown query parameter (status, schedule_id, limit, cursor)",
                ));
            }
        }
    }
    let page = state.scheduler.list(&query).await?;
    Ok(Json(within_budget(
        &page.tasks,
        page.next,
        LIST_PAGE_BUDGET,
    )))
}

/// The most the tasks of one `GET /tasks` page may take, counted as they travel inside a
/// Lambda response (see [`lambda_size`]): Lambda refuses responses over 6 MiB
/// (6,291,456 bytes), and the rest of the response (the page's envelope, the headers) needs
/// far less than the margin left.
pub(crate) const LIST_PAGE_BUDGET: usize = 5_000_000;

/// How many bytes `json` takes inside an API Gateway response, whose body is one JSON string:
/// every `"` and `\` is escaped there (the body's JSON has no raw control characters, and
/// other characters are copied as they are).
fn lambda_size(json: &[u8]) -> usize {
    json.len() + json.iter().filter(|b| matches!(b, b'"' | b'\\')).count()
}

/// The page as answered: the tasks in order while they fit in `budget` (at least one, so
/// paging always moves on; a single task is far below it), and a cursor after the last one
/// answered when some were left out.
fn within_budget(tasks: &[Task], next: Option<Cursor>, budget: usize) -> TaskList {
    let mut views = Vec::with_capacity(tasks.len());
    let mut used = 0;
    for (i, task) in tasks.iter().enumerate() {
        let view = TaskView::from(task);
        // A view that cannot be sized is answered anyway; serializing it for the response
        // fails the same way.
        let size = serde_json::to_vec(&view).map_or(0, |json| lambda_size(&json) + 1);
        if i > 0 && used + size > budget {
            let last = &tasks[i - 1];
            return TaskList {
                tasks: views,
                next_cursor: Some(
                    Cursor {
                        run_at: last.run_at,
                        task_id: last.id,
                    }
                    .encode(),
                ),
            };
        }
        used += size;
        views.push(view);
    }
    TaskList {
        tasks: views,
        next_cursor: next.map(|c| c.encode()),
    }
}

/// A task with its attempts.
#[utoipa::path(
    get, path = "/tasks/{task_id}", tag = "tasks",
    params(("task_id" = String, Path, description = "The task id (a ULID)", pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 400, description = "Not a task id", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
        (status = 404, description = "No such task for this caller", body = ErrorBody),
    )
)]
async fn get_task(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let task = state.scheduler.get(&caller.0, parse_id(&id)?).await?;
    Ok(Json(TaskView::from(&task)))
}

/// Cancel a scheduled task; its pending wake-up is removed.
#[utoipa::path(
    delete, path = "/tasks/{task_id}", tag = "tasks",
    params(("task_id" = String, Path, description = "The task id (a ULID)", pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "The task, now cancelled", body = TaskView),
        (status = 400, description = "Not a task id", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
        (status = 404, description = "No such task for this caller", body = ErrorBody),
        (status = 409, description = "Not scheduled (running, completed, failed or cancelled)", body = ErrorBody),
    )
)]
async fn cancel_task(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let task = state.scheduler.cancel(&caller.0, parse_id(&id)?).await?;
    Ok(Json(TaskView::from(&task)))
}

/// Re-arm a failed task now, with a fresh attempt budget.
#[utoipa::path(
    post, path = "/tasks/{task_id}/retry", tag = "tasks",
    params(("task_id" = String, Path, description = "The task id (a ULID)", pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "The task, scheduled again", body = TaskView),
        (status = 400, description = "Not a task id", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
        (status = 404, description = "No such task for this caller", body = ErrorBody),
        (status = 409, description = "Not failed", body = ErrorBody),
    )
)]
async fn retry_task(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let task = state.scheduler.retry(&caller.0, parse_id(&id)?).await?;
    Ok(Json(TaskView::from(&task)))
}

/// Liveness; no authentication.
#[utoipa::path(get, path = "/health", tag = "meta", security(()), responses((status = 200, description = "Up", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "meta",
    responses(
        (status = 200, description = "OpenAPI 3.1 document", content_type = "application/json"),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 429, description = "Too many requests for this caller (local host: SCHEDULER_RATE_LIMIT); see Retry-After", body = ErrorBody),
    )
)]
async fn openapi_json() -> Response {
    let mut resp = Json(ApiDoc::openapi()).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Local host: a token from SCHEDULER_API_TOKENS. On AWS the API uses IAM (SigV4) instead."))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "task-scheduler", description = "A durable \"call this webhook at that time\" service."),
    paths(create_task, schedule_task, list_tasks, get_task, cancel_task, retry_task, reschedule::reschedule_task, reschedule::run_task, health, openapi_json,
        schedules::create_schedule, schedules::list_schedules, schedules::get_schedule,
        schedules::patch_schedule, schedules::delete_schedule, schedules::trigger_schedule),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "tasks", description = "Scheduled webhook calls"), (name = "schedules", description = "Recurring schedules: cron or every, in an IANA time zone; each occurrence is a task"), (name = "meta", description = "Service endpoints"))
)]
pub(crate) struct ApiDoc;
