//! The one place errors become HTTP: `{"error": {"code", "message", "field"}}`.

use axum::{
    Json,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppError;
use crate::domain::ValidationError;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// One of `invalid_request`, `unauthorized`, `not_found`, `method_not_allowed`,
    /// `conflict`, `payload_too_large`, `unsupported_media_type`, `rate_limited`, `internal`,
    /// `outcome_unknown`.
    #[schema(example = "invalid_request")]
    pub(crate) code: &'static str,
    #[schema(
        example = "run_at: not an RFC 3339 timestamp with offset (e.g. 2026-05-17T15:00:00Z)"
    )]
    pub(crate) message: String,
    /// The offending request field, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "run_at")]
    pub(crate) field: Option<String>,
}

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) field: Option<String>,
    /// Seconds for a `Retry-After` header (429).
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: if field.is_empty() {
                message.to_string()
            } else {
                format!("{field}: {message}")
            },
            field: (!field.is_empty()).then_some(field),
            retry_after: None,
        }
    }

    pub(crate) fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn rate_limited(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for this caller; retry in {secs} s"),
        );
        e.retry_after = Some(secs.max(1));
        e
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; nothing was changed, the request may be retried",
        )
    }

    /// A write was sent but whether it took effect could not be known (its answer was lost
    /// and reading it back failed): never "nothing was changed".
    pub(crate) fn outcome_unknown() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "outcome_unknown",
            OUTCOME_UNKNOWN_MESSAGE,
        )
    }
}

/// What a client is told when a write's outcome is unknown.
pub(crate) const OUTCOME_UNKNOWN_MESSAGE: &str = "the outcome is unknown: the change may have \
     been applied. Read the task (GET /tasks/{task_id}) to see, or repeat a create with the same \
     Idempotency-Key (without one, a repeat may create a second task)";

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::invalid(e.field, e.message)
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid(v) => v.into(),
            AppError::NotFound => Self::not_found("task not found"),
            AppError::ScheduleNotFound => Self::not_found("schedule not found"),
            AppError::NotImplemented(m) => {
                Self::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", m)
            }
            AppError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            AppError::Unavailable(detail) => {
                // The detail goes to the log, never to the client.
                tracing::error!(error = %detail, "request failed");
                Self::internal()
            }
            AppError::OutcomeUnknown(detail) => {
                tracing::error!(error = %detail, "request outcome unknown");
                Self::outcome_unknown()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code,
                    message: self.message,
                    field: self.field,
                },
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write whose outcome is unknown is never answered "nothing was changed".
    #[test]
    fn an_unknown_outcome_says_so_and_how_to_find_out() {
        let e = ApiError::from(AppError::from(crate::ports::PortError::OutcomeUnknown(
            "PutItem: lost".into(),
        )));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::INTERNAL_SERVER_ERROR, "outcome_unknown")
        );
        assert!(!e.message.contains("nothing was changed"), "{}", e.message);
        assert!(e.message.contains("may have been applied"), "{}", e.message);
        assert!(e.message.contains("Idempotency-Key"), "{}", e.message);
        let plain = ApiError::from(AppError::from(crate::ports::PortError::Unavailable(
            "PutItem: down".into(),
        )));
        assert_eq!(plain.code, "internal");
    }
}
