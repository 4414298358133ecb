//! The events Lambda's sources send (API Gateway HTTP API v2, SQS batches) and the API's
//! answer inside an API Gateway response; the at() time of a Scheduler expression.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::unique;

/// An SQS batch event as the Lambda event source mapping builds it.
pub fn sqs_event(queue_url: &str, msgs: &[aws_sdk_sqs::types::Message]) -> Value {
    let queue = queue_url.rsplit('/').next().unwrap_or("delay");
    let records: Vec<Value> = msgs
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue}"),
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({"Records": records})
}

/// An API Gateway HTTP API v2 event as API Gateway sends it for an IAM-signed request
/// (`owner` = the caller's ARN; `None` = no authorizer context).
pub fn api_event(
    method: &str,
    path_and_query: &str,
    body: Option<&Value>,
    owner: Option<&str>,
    headers: &[(&str, &str)],
) -> Value {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut h = serde_json::Map::new();
    h.insert("content-type".into(), json!("application/json"));
    h.insert(
        "host".into(),
        json!("abcdef1234.execute-api.us-east-1.amazonaws.com"),
    );
    for (k, v) in headers {
        h.insert((*k).into(), json!(v));
    }
    let mut ctx = json!({
        "accountId": "123456789012",
        "apiId": "abcdef1234",
        "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "rehearsal"},
        "requestId": unique("req"),
        "routeKey": "$default",
        "stage": "$default",
        "timeEpoch": Utc::now().timestamp_millis(),
    });
    if let Some(arn) = owner {
        ctx["authorizer"] = json!({"iam": {"accountId": "123456789012", "userArn": arn, "callerId": "AIDAEXAMPLE"}});
    }
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": h,
        "requestContext": ctx,
        "body": body.map(Value::to_string),
        "isBase64Encoded": false,
    })
}

/// The API's JSON answer inside an API Gateway v2 response: `(status, body)`.
pub fn api_response(resp: &Value) -> (u16, Value) {
    let status = resp["statusCode"].as_u64().unwrap_or(0) as u16;
    let raw = resp["body"].as_str().unwrap_or("");
    let text = if resp["isBase64Encoded"] == json!(true) {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap_or_default(),
        )
        .unwrap_or_default()
    } else {
        raw.to_owned()
    };
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The at() time of a schedule expression.
pub fn at_time(expression: &str) -> DateTime<Utc> {
    let inner = expression
        .strip_prefix("at(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not an at() expression: {expression}"));
    chrono::NaiveDateTime::parse_from_str(inner, "%Y-%m-%dT%H:%M:%S")
        .expect("at() time")
        .and_utc()
}
