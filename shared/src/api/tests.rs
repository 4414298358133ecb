//! Every route's success and every error case of docs/api.md, through the real Router with
//! `oneshot` (no socket), over a real SQLite store.

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use chrono::{TimeDelta, Utc};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{ApiToken, Auth};
use crate::domain::RetryHint;
use crate::fakes::{Rig, ScriptedWebhook};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-9876543210xx";

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<Body>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(body.unwrap_or_else(Body::empty)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"))
    };
    Resp {
        status,
        headers,
        body,
    }
}

async fn post_json(app: &Router, uri: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
    post_raw(app, uri, body.to_string(), extra).await
}

/// Posts these exact bytes as JSON.
async fn post_raw(app: &Router, uri: &str, body: String, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(extra);
    send(app, Method::POST, uri, Some(Body::from(body)), &headers).await
}

async fn get(app: &Router, uri: &str) -> Resp {
    send(app, Method::GET, uri, None, &[]).await
}

fn valid() -> Value {
    json!({
        "action": "webhook",
        "payload": {"url": "https://example.com/hook", "method": "PUT", "headers": {"X-Tenant": "acme"}, "data": {"message": "Task executed!"}},
        "run_at": (Utc::now() + TimeDelta::hours(1)).to_rfc3339(),
        "retry": {"max_attempts": 5, "initial_backoff_seconds": 10, "max_backoff_seconds": 3600},
        "timeout_seconds": 10
    })
}

fn open_rig() -> (Rig, Router) {
    let rig = Rig::new(ScriptedWebhook::default());
    let app = rig.router(Auth::Open);
    (rig, app)
}

fn assert_error(r: &Resp, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
    match field {
        Some(f) => assert_eq!(r.body["error"]["field"], f, "{}", r.body),
        None => assert!(r.body["error"].get("field").is_none(), "{}", r.body),
    }
}

#[tokio::test]
async fn create_returns_201_with_location_and_the_task() {
    let (rig, app) = open_rig();
    let r = post_json(&app, "/tasks", &valid(), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["task_id"].as_str().unwrap();
    assert_eq!(r.headers[header::LOCATION], format!("/tasks/{id}"));
    assert_eq!(r.body["status"], "scheduled");
    assert_eq!(r.body["action"], "webhook");
    assert_eq!(r.body["payload"]["method"], "PUT");
    assert_eq!(r.body["payload"]["headers"]["X-Tenant"], "acme");
    assert_eq!(r.body["payload"]["data"]["message"], "Task executed!");
    assert_eq!(r.body["retry"]["max_attempts"], 5);
    assert_eq!(r.body["attempts"], json!([]));
    assert_eq!(r.body["next_attempt_at"], r.body["run_at"]);
    assert_eq!(rig.store.count(None).await.unwrap(), 1);
    assert_eq!(rig.waker.armed.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_original_example_works_on_schedule_task_with_defaults() {
    let (_rig, app) = open_rig();
    let body = json!({"action": "webhook", "payload": {"url": "https://webhook.site/your-webhook-id", "data": {"message": "Task executed!"}}, "run_at": "2025-05-17T15:00:00Z"});
    let r = post_json(&app, "/schedule-task", &body, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["run_at"], "2025-05-17T15:00:00Z");
    assert_eq!(r.body["payload"]["method"], "POST");
    assert_eq!(
        r.body["retry"],
        json!({"max_attempts": 3, "initial_backoff_seconds": 10, "max_backoff_seconds": 3600})
    );
    assert_eq!(r.body["timeout_seconds"], 10);
}

#[tokio::test]
async fn delay_seconds_is_an_alternative_to_run_at() {
    let (_rig, app) = open_rig();
    let mut body = valid();
    body.as_object_mut().unwrap().remove("run_at");
    body["delay_seconds"] = json!(60);
    let before = Utc::now();
    let r = post_json(&app, "/tasks", &body, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let run_at = chrono::DateTime::parse_from_rfc3339(r.body["run_at"].as_str().unwrap()).unwrap();
    let delta = run_at.to_utc() - before;
    assert!(
        delta >= TimeDelta::seconds(59) && delta <= TimeDelta::seconds(61),
        "{delta}"
    );
}

/// Each malformed create: the status, code and field, and nothing stored or armed.
#[tokio::test]
async fn every_bad_create_is_a_clear_4xx_and_changes_nothing() {
    let (rig, app) = open_rig();
    let with = |path: &[&str], v: Value| {
        let mut b = valid();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = v;
        b
    };
    let without = |path: &[&str]| {
        let mut b = valid();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur.as_object_mut().unwrap().remove(path[path.len() - 1]);
        b
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown action",
            with(&["action"], json!("email")),
            "action",
        ),
        ("action wrong type", with(&["action"], json!(1)), "action"),
        ("missing action", without(&["action"]), "action"),
        ("missing payload", without(&["payload"]), "payload"),
        ("missing url", without(&["payload", "url"]), "payload.url"),
        (
            "relative url",
            with(&["payload", "url"], json!("/hook")),
            "payload.url",
        ),
        (
            "ftp url",
            with(&["payload", "url"], json!("ftp://example.com/x")),
            "payload.url",
        ),
        (
            "url with credentials",
            with(&["payload", "url"], json!("https://u:p@example.com/")),
            "payload.url",
        ),
        (
            "url too long",
            with(
                &["payload", "url"],
                json!(format!("https://example.com/{}", "a".repeat(2100))),
            ),
            "payload.url",
        ),
        (
            "url wrong type",
            with(&["payload", "url"], json!(["x"])),
            "payload.url",
        ),
        (
            "bad method",
            with(&["payload", "method"], json!("TRACE")),
            "payload.method",
        ),
        (
            "refused header",
            with(&["payload", "headers"], json!({"Host": "evil"})),
            "payload.headers.Host",
        ),
        (
            "header value type",
            with(&["payload", "headers"], json!({"X-A": 1})),
            "payload.headers.X-A",
        ),
        (
            "unknown payload field",
            with(&["payload", "body"], json!("x")),
            "payload.body",
        ),
        (
            "unknown top-level field",
            with(&["runAt"], json!("x")),
            "runAt",
        ),
        ("bad time", with(&["run_at"], json!("tomorrow")), "run_at"),
        (
            "time without offset",
            with(&["run_at"], json!("2026-05-17T15:00:00")),
            "run_at",
        ),
        (
            "time wrong type",
            with(&["run_at"], json!(1_700_000_000)),
            "run_at",
        ),
        ("no time", without(&["run_at"]), "run_at"),
        (
            "both times",
            with(&["delay_seconds"], json!(5)),
            "delay_seconds",
        ),
        (
            "max_attempts 0",
            with(&["retry", "max_attempts"], json!(0)),
            "retry.max_attempts",
        ),
        (
            "max_attempts 26",
            with(&["retry", "max_attempts"], json!(26)),
            "retry.max_attempts",
        ),
        (
            "max_attempts float",
            with(&["retry", "max_attempts"], json!(2.5)),
            "retry.max_attempts",
        ),
        (
            "max_attempts string",
            with(&["retry", "max_attempts"], json!("3")),
            "retry.max_attempts",
        ),
        (
            "huge number",
            with(&["retry", "max_attempts"], json!(1e300)),
            "retry.max_attempts",
        ),
        (
            "backoff 0",
            with(&["retry", "initial_backoff_seconds"], json!(0)),
            "retry.initial_backoff_seconds",
        ),
        (
            "cap below initial",
            with(&["retry", "max_backoff_seconds"], json!(5)),
            "retry.max_backoff_seconds",
        ),
        (
            "unknown retry field",
            with(&["retry", "attempts"], json!(3)),
            "retry.attempts",
        ),
        (
            "timeout 31",
            with(&["timeout_seconds"], json!(31)),
            "timeout_seconds",
        ),
        (
            "timeout 0",
            with(&["timeout_seconds"], json!(0)),
            "timeout_seconds",
        ),
        (
            "timeout negative",
            with(&["timeout_seconds"], json!(-1)),
            "timeout_seconds",
        ),
    ];
    for (name, body, field) in cases {
        let r = post_json(&app, "/tasks", &body, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}: {}", r.body);
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request", Some(field));
    }
    let mut neg_delay = without(&["run_at"]);
    neg_delay["delay_seconds"] = json!(-1);
    assert_error(
        &post_json(&app, "/tasks", &neg_delay, &[]).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("delay_seconds"),
    );

    // Bodies that are not the right JSON at all.
    for raw in [
        "{",
        "not json",
        "",
        "[1,2]",
        "\"x\"",
        "null",
        "{\"action\": \"webhook\",}",
    ] {
        let r = send(
            &app,
            Method::POST,
            "/tasks",
            Some(Body::from(raw)),
            &[("content-type", "application/json")],
        )
        .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request", None);
    }
    // Nesting deeper than the parser's limit is a 400, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = send(&app, Method::POST, "/tasks", Some(Body::from(format!(r#"{{"action":"webhook","payload":{{"url":"https://e.com","data":{deep}}},"delay_seconds":1}}"#))), &[("content-type", "application/json")]).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request", None);

    // Content type and size.
    let body = valid().to_string();
    let r = send(
        &app,
        Method::POST,
        "/tasks",
        Some(Body::from(body.clone())),
        &[("content-type", "text/plain")],
    )
    .await;
    assert_error(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    );
    let r = send(&app, Method::POST, "/tasks", Some(Body::from(body)), &[]).await;
    assert_error(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    );
    let big = with(&["payload", "data"], json!("x".repeat(300 * 1024)));
    let r = post_json(&app, "/tasks", &big, &[]).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None);
    // Without a Content-Length (chunked), the limit still holds.
    let stream = futures::stream::iter(
        (0..300).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024]))),
    );
    let r = send(
        &app,
        Method::POST,
        "/tasks",
        Some(Body::from_stream(stream)),
        &[("content-type", "application/json")],
    )
    .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None);

    // Idempotency-Key format.
    let r = post_json(
        &app,
        "/tasks",
        &valid(),
        &[("idempotency-key", &"k".repeat(65))],
    )
    .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("Idempotency-Key"),
    );

    assert_eq!(
        rig.store.count(None).await.unwrap(),
        0,
        "a rejected request stores nothing"
    );
    assert!(
        rig.waker.armed.lock().unwrap().is_empty(),
        "a rejected request arms nothing"
    );
}

#[tokio::test]
async fn idempotency_key_repeat_returns_the_original_and_conflicts_on_a_new_body() {
    let (rig, app) = open_rig();
    let body = valid();
    let first = post_json(&app, "/tasks", &body, &[("idempotency-key", "order-42")]).await;
    assert_eq!(first.status, StatusCode::CREATED);
    // The same body with keys in another order and other whitespace, byte for byte another
    // string, is the same request.
    let run_at = body["run_at"].as_str().unwrap();
    let reordered = format!(
        r#"{{ "timeout_seconds" : 10,
            "retry" : {{"max_backoff_seconds":3600, "initial_backoff_seconds":10, "max_attempts":5}},
            "run_at" : "{run_at}",
            "payload" : {{
                "data" : {{ "message" : "Task executed!" }},
                "headers" : {{ "X-Tenant" : "acme" }},
                "method" : "PUT",
                "url" : "https://example.com/hook"
            }},
            "action" : "webhook" }}"#
    );
    assert_ne!(reordered, body.to_string());
    assert_eq!(serde_json::from_str::<Value>(&reordered).unwrap(), body);
    let again = post_raw(
        &app,
        "/schedule-task",
        reordered,
        &[("idempotency-key", "order-42")],
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["task_id"], first.body["task_id"]);
    assert_eq!(again.body["idempotency_key"], "order-42");
    let mut other = body.clone();
    other["payload"]["data"] = json!({"message": "different"});
    let conflict = post_json(&app, "/tasks", &other, &[("idempotency-key", "order-42")]).await;
    assert_error(&conflict, StatusCode::CONFLICT, "conflict", None);
    assert_eq!(rig.store.count(None).await.unwrap(), 1);
}

#[tokio::test]
async fn get_returns_the_task_and_404s_unknown_ids() {
    let (_rig, app) = open_rig();
    let created = post_json(&app, "/tasks", &valid(), &[]).await;
    let id = created.body["task_id"].as_str().unwrap();
    let r = get(&app, &format!("/tasks/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, created.body);
    let r = get(&app, "/tasks/01JF3Q8R5V2Z6X4W9YH7K1M0NB").await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);
    let r = get(&app, "/tasks/not-an-id").await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("task_id"),
    );
}

#[tokio::test]
async fn list_filters_pages_and_validates_its_query() {
    let (rig, app) = open_rig();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut b = valid();
        b["run_at"] = json!((Utc::now() + TimeDelta::minutes(10 - i)).to_rfc3339());
        ids.push(
            post_json(&app, "/tasks", &b, &[]).await.body["task_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Cancel one so the status filter has something to tell apart.
    send(
        &app,
        Method::DELETE,
        &format!("/tasks/{}", ids[0]),
        None,
        &[],
    )
    .await;
    let mut seen = Vec::new();
    let mut uri = "/tasks?limit=2".to_owned();
    loop {
        let r = get(&app, &uri).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let page: Vec<String> = r.body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["task_id"].as_str().unwrap().to_owned())
            .collect();
        assert!(page.len() <= 2);
        seen.extend(page);
        match r.body["next_cursor"].as_str() {
            Some(c) => uri = format!("/tasks?limit=2&cursor={c}"),
            None => break,
        }
    }
    // Ordered by run_at ascending: the last created has the earliest run_at.
    let expected: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, expected);
    let r = get(&app, "/tasks?status=cancelled").await;
    assert_eq!(r.body["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["tasks"][0]["task_id"], ids[0].as_str());
    assert_eq!(
        get(&app, "/tasks?status=scheduled").await.body["tasks"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(get(&app, "/tasks").await.body["next_cursor"], Value::Null);

    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("status=done", "status"),
        ("cursor=zzz", "cursor"),
        ("sort=asc", "sort"),
        ("limit=1&limit=2", "limit"),
    ] {
        let r = get(&app, &format!("/tasks?{q}")).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request", Some(field));
    }
    assert_eq!(rig.store.count(None).await.unwrap(), 5);
}

#[tokio::test]
async fn cancel_then_conflict_and_unknown_is_404() {
    let (rig, app) = open_rig();
    let id = post_json(&app, "/tasks", &valid(), &[]).await.body["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = send(&app, Method::DELETE, &format!("/tasks/{id}"), None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(r.body["next_attempt_at"], Value::Null);
    assert_eq!(rig.waker.disarmed.lock().unwrap().len(), 1);
    let r = send(&app, Method::DELETE, &format!("/tasks/{id}"), None, &[]).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", None);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    let r = send(
        &app,
        Method::DELETE,
        "/tasks/01JF3Q8R5V2Z6X4W9YH7K1M0NB",
        None,
        &[],
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);
}

#[tokio::test]
async fn retry_rearms_a_failed_task_and_refuses_others() {
    let rig = Rig::new(ScriptedWebhook::answering(&[RetryHint::Permanent]));
    let app = rig.router(Auth::Open);
    let mut b = valid();
    b["run_at"] = json!("2020-01-01T00:00:00Z");
    let id = post_json(&app, "/tasks", &b, &[]).await.body["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = send(&app, Method::POST, &format!("/tasks/{id}/retry"), None, &[]).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", None);
    let (wake, _) = rig.last_armed().unwrap();
    rig.scheduler.fire(wake).await.unwrap();
    let failed = get(&app, &format!("/tasks/{id}")).await;
    assert_eq!(failed.body["status"], "failed");
    assert_eq!(failed.body["attempts"][0]["status_code"], 400);
    assert_eq!(failed.body["attempts"][0]["outcome"], "failed");
    assert_eq!(failed.body["dead_letter"]["attempts"], 1);
    let r = send(&app, Method::POST, &format!("/tasks/{id}/retry"), None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "scheduled");
    assert!(r.body.get("dead_letter").is_none());
    assert_eq!(rig.last_armed().unwrap().0.attempt, 2);
    let r = send(
        &app,
        Method::POST,
        "/tasks/01JF3Q8R5V2Z6X4W9YH7K1M0NB/retry",
        None,
        &[],
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);
}

#[tokio::test]
async fn health_openapi_unknown_routes_and_methods() {
    let (_rig, app) = open_rig();
    let r = get(&app, "/health").await;
    assert_eq!(
        (r.status, r.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let r = get(&app, "/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, method) in [
        ("/tasks", "post"),
        ("/tasks", "get"),
        ("/schedule-task", "post"),
        ("/tasks/{task_id}", "get"),
        ("/tasks/{task_id}", "delete"),
        ("/tasks/{task_id}/retry", "post"),
        ("/health", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            r.body["paths"][path][method].is_object(),
            "{method} {path} missing from the document"
        );
    }
    for schema in ["CreateTaskRequest", "TaskView", "TaskList", "ErrorBody"] {
        assert!(
            r.body["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
    let r = get(&app, "/nope").await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);
    let r = send(&app, Method::PUT, "/tasks", None, &[]).await;
    assert_error(
        &r,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
    );
}

#[tokio::test]
async fn bearer_tokens_authenticate_and_isolate_tenants() {
    let rig = Rig::new(ScriptedWebhook::default());
    let tokens = ApiToken::parse_list(&format!("alice:{ALICE},bob:{BOB}")).unwrap();
    let app = rig.router(Auth::Bearer(tokens));
    let alice = format!("Bearer {ALICE}");
    let bob = format!("Bearer {BOB}");

    assert_eq!(
        get(&app, "/health").await.status,
        StatusCode::OK,
        "health needs no token"
    );
    for (method, uri) in [
        (Method::GET, "/tasks"),
        (Method::POST, "/tasks"),
        (Method::POST, "/schedule-task"),
        (Method::GET, "/openapi.json"),
        (Method::GET, "/tasks/01JF3Q8R5V2Z6X4W9YH7K1M0NB"),
        (Method::DELETE, "/tasks/01JF3Q8R5V2Z6X4W9YH7K1M0NB"),
        (Method::POST, "/tasks/01JF3Q8R5V2Z6X4W9YH7K1M0NB/retry"),
    ] {
        let r = send(&app, method.clone(), uri, None, &[]).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", None);
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        let r = send(
            &app,
            method,
            uri,
            None,
            &[("authorization", "Bearer wrong-token-000000000")],
        )
        .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", None);
    }

    let created = post_json(&app, "/tasks", &valid(), &[("authorization", &alice)]).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body["task_id"].as_str().unwrap();
    let as_bob = |m: Method, uri: String| {
        let app = app.clone();
        let bob = bob.clone();
        async move { send(&app, m, &uri, None, &[("authorization", &bob)]).await }
    };
    assert_error(
        &as_bob(Method::GET, format!("/tasks/{id}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &as_bob(Method::DELETE, format!("/tasks/{id}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &as_bob(Method::POST, format!("/tasks/{id}/retry")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_eq!(
        as_bob(Method::GET, "/tasks".into()).await.body["tasks"],
        json!([])
    );
    let mine = send(
        &app,
        Method::GET,
        "/tasks",
        None,
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(mine.body["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(
        rig.store
            .count(Some(crate::domain::Status::Scheduled))
            .await
            .unwrap(),
        1,
        "bob's cancel changed nothing"
    );
}

#[tokio::test]
async fn host_auth_requires_the_caller_the_host_supplies() {
    let rig = Rig::new(ScriptedWebhook::default());
    let app = rig.router(Auth::Host);
    let r = post_json(&app, "/tasks", &valid(), &[]).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", None);
    let mut req = Request::builder()
        .method(Method::GET)
        .uri("/tasks")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut().insert(super::Caller(
        crate::domain::Owner::parse("arn:aws:iam::123456789012:user/alice").unwrap(),
    ));
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn each_owner_is_rate_limited_on_its_own() {
    let rig = Rig::new(ScriptedWebhook::default());
    let tokens = ApiToken::parse_list(&format!("alice:{ALICE},bob:{BOB}")).unwrap();
    let app = super::router_with(
        rig.scheduler.clone(),
        Auth::Bearer(tokens),
        super::RateLimit::per_second(1, 3),
    );
    let alice = format!("Bearer {ALICE}");
    for _ in 0..3 {
        assert_eq!(
            send(
                &app,
                Method::GET,
                "/tasks",
                None,
                &[("authorization", &alice)]
            )
            .await
            .status,
            StatusCode::OK
        );
    }
    let r = send(
        &app,
        Method::GET,
        "/tasks",
        None,
        &[("authorization", &alice)],
    )
    .await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
    // One request a second: the next one is allowed within the second, rounded up.
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    // Bob's budget is his own.
    assert_eq!(
        send(
            &app,
            Method::GET,
            "/tasks",
            None,
            &[("authorization", &format!("Bearer {BOB}"))]
        )
        .await
        .status,
        StatusCode::OK
    );
    // Unauthenticated requests are refused before they can spend anyone's budget.
    assert_eq!(get(&app, "/tasks").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn data_nesting_is_bounded() {
    let (rig, app) = open_rig();
    let nest = |n: usize| (0..n).fold(json!(1), |acc, _| json!([acc]));
    let mut ok = valid();
    ok["payload"]["data"] = nest(32);
    assert_eq!(
        post_json(&app, "/tasks", &ok, &[]).await.status,
        StatusCode::CREATED
    );
    let mut deep = valid();
    deep["payload"]["data"] = nest(33);
    assert_error(
        &post_json(&app, "/tasks", &deep, &[]).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("payload.data"),
    );
    assert_eq!(rig.store.count(None).await.unwrap(), 1);
}

/// Lambda answers at most 6 MB: the API Gateway response, with the body inside it as one
/// JSON string (so every `"` and `\` of the body counts twice). A page of 100 tasks of about
/// 256 KiB each would be 25 to 50 MB. Every page stays under the limit, and paging still
/// returns every task exactly once, in order.
#[tokio::test]
async fn list_pages_stay_under_lambdas_response_limit() {
    const LAMBDA_RESPONSE_LIMIT: usize = 6 * 1024 * 1024;
    let (_rig, app) = open_rig();
    let base = Utc::now() + TimeDelta::hours(1);
    let mut ids = Vec::new();
    for i in 0..100 {
        let mut b = valid();
        // Just under the 256 KiB body limit; every other task's data is all quotes, the
        // worst case for the Lambda response's escaping.
        b["payload"]["data"] = if i % 2 == 0 {
            json!("x".repeat(255 * 1024))
        } else {
            json!("\"".repeat(127 * 1024))
        };
        b["run_at"] = json!((base + TimeDelta::seconds(i)).to_rfc3339());
        let r = post_json(&app, "/tasks", &b, &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        ids.push(r.body["task_id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut uri = "/tasks?limit=100".to_owned();
    let mut pages = 0;
    loop {
        let resp = app
            .clone()
            .oneshot(Request::get(&uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        // The body as it travels in the Lambda response (and a margin for the headers).
        let in_lambda = serde_json::to_string(text).unwrap().len();
        assert!(
            in_lambda + 64 * 1024 < LAMBDA_RESPONSE_LIMIT,
            "page {pages}: {in_lambda} bytes in the Lambda response"
        );
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let page = body["tasks"].as_array().unwrap();
        assert!(!page.is_empty(), "a page with a next cursor is never empty");
        seen.extend(
            page.iter()
                .map(|t| t["task_id"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        assert!(pages <= 100, "paging does not end");
        match body["next_cursor"].as_str() {
            Some(c) => uri = format!("/tasks?limit=100&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every task exactly once, in run_at order");
    assert!(pages > 1);
}

/// The page budget the code applies is the one docs/api.md and the OpenAPI document state.
#[tokio::test]
async fn the_list_page_budget_is_documented_as_applied() {
    let stated = "5,000,000 bytes";
    assert_eq!(
        super::LIST_PAGE_BUDGET,
        stated
            .replace([',', ' '], "")
            .trim_end_matches("bytes")
            .parse::<usize>()
            .unwrap()
    );
    let api_md = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"));
    assert!(api_md.contains(&format!("at most {stated}")), "docs/api.md");
    let (_rig, app) = open_rig();
    let doc = get(&app, "/openapi.json").await.body;
    let list = &doc["paths"]["/tasks"]["get"];
    for text in [
        &list["description"],
        &list["responses"]["200"]["description"],
        &doc["components"]["schemas"]["TaskList"]["properties"]["next_cursor"]["description"],
    ] {
        assert!(
            text.as_str().is_some_and(|t| t.contains(stated)),
            "the OpenAPI document: {text}"
        );
    }
}

mod reschedule;
