//! Event shapes and the conversions between API Gateway HTTP API v2 and `http`.
//!
//! Hand-written serde structs for the handful of fields we read: they make the accepted
//! shapes explicit and keep `aws_lambda_events`' hundreds of types out of the binary.

use std::collections::HashMap;

use axum::body::Body;
use base64::{Engine, engine::general_purpose::STANDARD};
use http::{HeaderName, HeaderValue, Method, Request, header};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::InvocationError;
use crate::api::Caller;
use crate::domain::{Owner, TaskId, WakeUp};
use crate::wake::aws::WakeMessage;

/// What one invocation asks for, decided by shape.
#[derive(Debug)]
pub(crate) enum Invocation {
    /// API Gateway HTTP API (payload format 2.0).
    Http(Box<HttpApiRequest>),
    /// `{"kind":"wake",...}`: a schedule's `Input`.
    /// A wake-up, with the time its attempt is due when the sender knew it.
    Wake(WakeUp, Option<chrono::DateTime<chrono::Utc>>),
    /// `{"kind":"sweep"}`: the recurring schedule (rate 1 minute) that runs the sweeper.
    Sweep,
    /// SQS records whose bodies are wake-ups (the delay queue).
    Sqs(Vec<SqsRecord>),
    /// The original design's event, `{"source":"custom.scheduler","detail":{"taskId":..}}`:
    /// fires the task's current attempt.
    ExecutionEvent { task_id: TaskId },
}

fn malformed(shape: &'static str, e: impl std::fmt::Display) -> InvocationError {
    InvocationError::Malformed {
        shape,
        reason: e.to_string(),
    }
}

/// A short description of an unknown payload for the log: its type, top-level keys and
/// `eventSource`/`source` when present (never the values: they may be private).
fn describe(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&str> = m.keys().map(String::as_str).take(12).collect();
            keys.sort_unstable();
            let source = m
                .get("Records")
                .and_then(|r| r.get(0))
                .and_then(|r| r.get("eventSource").or_else(|| r.get("EventSource")))
                .or_else(|| m.get("source"))
                .and_then(Value::as_str)
                .map(|s| format!(", source {s}"))
                .unwrap_or_default();
            format!("object with keys [{}]{source}", keys.join(", "))
        }
        Value::Array(_) => "array".into(),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "boolean".into(),
        Value::Null => "null".into(),
    }
}

impl Invocation {
    /// Classifies a payload, in this order: HTTP API v2 (`requestContext.http`), wake-up
    /// (`kind == "wake"`), sweep (`kind == "sweep"`), SQS (`Records[].eventSource == "aws:sqs"`), execution event
    /// (`source == "custom.scheduler"`); anything else is `UnknownShape`.
    pub(crate) fn from_json(v: &Value) -> Result<Self, InvocationError> {
        if v.pointer("/requestContext/http").is_some() {
            let req: HttpApiRequest = serde_json::from_value(v.clone())
                .map_err(|e| malformed("API Gateway HTTP API v2 request", e))?;
            return Ok(Self::Http(Box::new(req)));
        }
        if v.get("kind").and_then(Value::as_str) == Some("wake") {
            let m: WakeMessage =
                serde_json::from_value(v.clone()).map_err(|e| malformed("wake-up", e))?;
            return Ok(Self::Wake(m.into(), m.due));
        }
        if v.get("kind").and_then(Value::as_str) == Some("sweep") {
            return Ok(Self::Sweep);
        }
        if let Some(records) = v.get("Records").and_then(Value::as_array) {
            let from_sqs =
                |r: &Value| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs");
            if !records.is_empty() && records.iter().all(from_sqs) {
                let event: SqsEvent =
                    serde_json::from_value(v.clone()).map_err(|e| malformed("SQS batch", e))?;
                return Ok(Self::Sqs(event.records));
            }
        }
        if v.get("source").and_then(Value::as_str) == Some("custom.scheduler") {
            let id = v
                .pointer("/detail/taskId")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("custom.scheduler event", "detail.taskId is missing"))?;
            let task_id = TaskId::parse(id).map_err(|e| malformed("custom.scheduler event", e))?;
            return Ok(Self::ExecutionEvent { task_id });
        }
        Err(InvocationError::UnknownShape(describe(v)))
    }
}

#[derive(Debug, Deserialize)]
struct SqsEvent {
    #[serde(rename = "Records")]
    records: Vec<SqsRecord>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SqsRecord {
    pub(crate) message_id: String,
    #[serde(default)]
    pub(crate) body: String,
}

impl SqsRecord {
    pub(crate) fn wake(
        &self,
    ) -> Result<(WakeUp, Option<chrono::DateTime<chrono::Utc>>), InvocationError> {
        serde_json::from_str::<WakeMessage>(&self.body)
            .map(|m| (WakeUp::from(m), m.due))
            .map_err(|e| malformed("wake-up message", e))
    }
}

/// The fields of an HTTP API v2 request we use.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpApiRequest {
    #[serde(default)]
    pub(crate) raw_path: Option<String>,
    #[serde(default)]
    pub(crate) raw_query_string: Option<String>,
    #[serde(default)]
    pub(crate) headers: Option<HashMap<String, String>>,
    #[serde(default)]
    pub(crate) cookies: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) body: Option<String>,
    #[serde(default)]
    pub(crate) is_base64_encoded: bool,
    pub(crate) request_context: RequestContext,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestContext {
    pub(crate) http: HttpDescription,
    #[serde(default)]
    pub(crate) authorizer: Option<Authorizer>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct HttpDescription {
    pub(crate) method: String,
    #[serde(default)]
    pub(crate) path: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Authorizer {
    #[serde(default)]
    pub(crate) iam: Option<IamAuthorizer>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IamAuthorizer {
    #[serde(default)]
    pub(crate) user_arn: Option<String>,
}

/// Why an API Gateway request cannot become an `http::Request` (answered with a 400).
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvalidRequest {
    #[error("invalid HTTP method")]
    Method,
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("invalid value for header {0}")]
    HeaderValue(HeaderName),
    #[error("invalid cookie")]
    Cookie,
    #[error("body is not valid base64")]
    Base64Body,
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
}

/// The owner of a verified IAM principal ARN. An assumed-role session
/// (`arn:P:sts::A:assumed-role/R/S`) is owned by its role, `arn:P:iam::A:role/R`, so a
/// service keeps its tasks and idempotency keys across sessions and replicas. The session
/// ARN does not carry the role's path, so the owner has none either (a role's name is unique
/// in its account whatever its path). Every other principal (IAM user, root, federated user)
/// is its own ARN. A malformed assumed-role ARN is no owner at all: guessing one could hand
/// a caller someone else's tasks.
pub(crate) fn owner_of_principal(arn: &str) -> Option<Owner> {
    let Some(rest) = arn.strip_prefix("arn:") else {
        return Owner::parse(arn).ok();
    };
    let mut parts = rest.splitn(5, ':');
    let (Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Owner::parse(arn).ok();
    };
    let Some(session) = resource.strip_prefix("assumed-role/") else {
        return Owner::parse(arn).ok();
    };
    let well_formed = service == "sts"
        && region.is_empty()
        && !partition.is_empty()
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit());
    match session.split('/').collect::<Vec<_>>()[..] {
        [role, session] if well_formed && !role.is_empty() && !session.is_empty() => {
            Owner::parse(&format!("arn:{partition}:iam::{account}:role/{role}")).ok()
        }
        _ => None,
    }
}

impl HttpApiRequest {
    /// The IAM principal API Gateway verified, if any. Only ever from the authorizer
    /// context: headers and body are the caller's to forge.
    pub(crate) fn caller(&self) -> Option<Owner> {
        self.request_context
            .authorizer
            .as_ref()?
            .iam
            .as_ref()?
            .user_arn
            .as_deref()
            .and_then(owner_of_principal)
    }

    /// The `http::Request` the router sees, with the [`Caller`] extension when IAM-signed
    /// (without it the router answers 401).
    pub(crate) fn into_http(self) -> Result<Request<Body>, InvalidRequest> {
        let caller = self.caller();
        let method = Method::from_bytes(self.request_context.http.method.as_bytes())
            .map_err(|_| InvalidRequest::Method)?;
        let path = self
            .raw_path
            .or(self.request_context.http.path)
            .filter(|p| p.starts_with('/'))
            .unwrap_or_else(|| "/".to_owned());
        let uri = match self.raw_query_string.as_deref() {
            Some(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path,
        };
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in self.headers.unwrap_or_default() {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| InvalidRequest::HeaderName(name))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| InvalidRequest::HeaderValue(name.clone()))?;
            builder = builder.header(name, value);
        }
        // Payload format 2.0 moves cookies out of the headers.
        if let Some(cookies) = self.cookies.filter(|c| !c.is_empty()) {
            builder = builder.header(
                header::COOKIE,
                HeaderValue::from_str(&cookies.join("; ")).map_err(|_| InvalidRequest::Cookie)?,
            );
        }
        let body = match self.body {
            None => Vec::new(),
            Some(b) if self.is_base64_encoded => STANDARD
                .decode(b.as_bytes())
                .map_err(|_| InvalidRequest::Base64Body)?,
            Some(b) => b.into_bytes(),
        };
        let mut request = builder
            .body(Body::from(body))
            .map_err(InvalidRequest::Request)?;
        if let Some(owner) = caller {
            request.extensions_mut().insert(Caller(owner));
        }
        Ok(request)
    }
}

/// The router's response as API Gateway v2 expects it. Text bodies stay text; anything
/// that is not UTF-8 is base64-encoded.
pub(super) async fn to_api_gateway_response(response: http::Response<Body>) -> Value {
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error_response(500, "internal", "internal error"),
    };
    let mut headers = serde_json::Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let Ok(value) = value.to_str() else { continue };
        if name == header::SET_COOKIE {
            cookies.push(Value::from(value));
            continue;
        }
        match headers.get_mut(name.as_str()) {
            // Repeated headers are joined, as API Gateway does.
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::from(value));
            }
        }
    }
    let (body, base64) = match std::str::from_utf8(&bytes) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (STANDARD.encode(&bytes), true),
    };
    let mut out = json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": body,
        "isBase64Encoded": base64,
    });
    if !cookies.is_empty() {
        out["cookies"] = Value::Array(cookies);
    }
    out
}

/// An API error response built outside the router (the request could not be converted).
pub(super) fn error_response(status: u16, code: &str, message: &str) -> Value {
    json!({
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json!({"error": {"code": code, "message": message}}).to_string(),
        "isBase64Encoded": false,
    })
}
