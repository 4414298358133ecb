//! The JSON body extractor: content type, size limit, syntax and shape errors, each as the
//! API's JSON error naming the field, instead of axum's plain-text rejections.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{StatusCode, header},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// Request bodies above this are refused with 413.
pub(crate) const BODY_LIMIT: usize = 256 * 1024;

/// A parsed body plus its canonical JSON form (keys sorted), for idempotency hashing.
pub(crate) struct JsonBody<T> {
    pub(crate) value: T,
    pub(crate) canonical: String,
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Serializes with object keys sorted at every depth, whatever map order serde_json uses.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Turns a serde error at `path` into a field name. The path of an unknown field already
/// ends in it; a missing field is reported at its parent, so its name is appended.
fn field_of(path: &str, message: &str) -> String {
    let base = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(name) = rest.split('`').next()
    {
        return if base.is_empty() {
            name.to_owned()
        } else {
            format!("{base}.{name}")
        };
    }
    base.to_owned()
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<JsonBody<T>, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("", format!("body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("", "body must be a JSON object"));
    }
    let canonical = canonical(&value);
    let parsed = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        ApiError::invalid(field_of(&path, &message), message)
    })?;
    Ok(JsonBody {
        value: parsed,
        canonical,
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON: send Content-Type: application/json",
            ));
        }
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body exceeds {} KiB", BODY_LIMIT / 1024),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| too_large())?;
        let _: &S = state;
        parse_bytes(bytes)
    }
}

fn parse_bytes<T: DeserializeOwned>(bytes: Bytes) -> Result<JsonBody<T>, ApiError> {
    parse_json(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
        assert!(!is_json("application/jsonx"));
    }

    #[test]
    fn canonical_form_ignores_key_order_and_whitespace() {
        // Two byte strings that really differ: keys in another order at every depth, and
        // other whitespace.
        let a = br#"{"b": 1, "a": {"y": [1, {"q": 2, "p": 1}], "x": null}}"#;
        let b = b"{ \"a\" :{\"x\":null,\n\t\"y\":[ 1,{\"p\":1,\"q\":2} ]},\"b\":1 }";
        assert_ne!(&a[..], &b[..]);
        let canonical_of = |bytes: &[u8]| parse_json::<Value>(bytes).unwrap().canonical;
        assert_eq!(
            canonical_of(a),
            r#"{"a":{"x":null,"y":[1,{"p":1,"q":2}]},"b":1}"#
        );
        assert_eq!(canonical_of(b), canonical_of(a));
        // What differs in content still differs: array order, a value.
        assert_ne!(
            canonical_of(br#"{"a":{"x":null,"y":[{"p":1,"q":2},1]},"b":1}"#),
            canonical_of(a)
        );
        assert_ne!(
            canonical_of(br#"{"a":{"x":null,"y":[1,{"p":1,"q":2}]},"b":2}"#),
            canonical_of(a)
        );
    }

    #[test]
    fn field_names_from_serde_errors() {
        assert_eq!(field_of(".", "missing field `action`"), "action");
        assert_eq!(field_of("payload", "missing field `url`"), "payload.url");
        assert_eq!(
            field_of(
                "retry.attempts",
                "unknown field `attempts`, expected one of ..."
            ),
            "retry.attempts"
        );
        assert_eq!(
            field_of(
                "retry.max_attempts",
                "invalid type: string \"x\", expected i64"
            ),
            "retry.max_attempts"
        );
    }
}
