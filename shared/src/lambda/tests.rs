use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::*;
use crate::domain::{AttemptOutcome, Delivery, RetryHint, Task};
use crate::ports::{NoDeadLetters, NoMetrics, PortError, Waker, WebhookClient};

fn fixture(name: &str) -> Value {
    let path = format!("{}/src/lambda/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn every_fixture_parses_to_its_shape() {
    let create = Invocation::from_json(&fixture("apigw_v2_iam_create.json")).unwrap();
    let Invocation::Http(req) = create else {
        panic!("{create:?}")
    };
    assert_eq!(
        req.caller().unwrap().as_str(),
        "arn:aws:iam::123456789012:user/alice"
    );
    let Invocation::Http(list) =
        Invocation::from_json(&fixture("apigw_v2_iam_list_base64.json")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        list.caller().unwrap().as_str(),
        "arn:aws:sts::123456789012:assumed-role/ops/bob"
    );
    let Invocation::Http(anon) =
        Invocation::from_json(&fixture("apigw_v2_no_authorizer.json")).unwrap()
    else {
        panic!()
    };
    assert!(anon.caller().is_none(), "a header never makes a caller");

    let Invocation::Wake(w, _) = Invocation::from_json(&fixture("scheduler_wake.json")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (w.task_id.to_string().as_str(), w.attempt),
        ("01JF3Q8R5V2Z6X4W9YH7K1M0NB", 2)
    );
    let Invocation::Sqs(records) = Invocation::from_json(&fixture("sqs_batch.json")).unwrap()
    else {
        panic!()
    };
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0].message_id,
        "059f36b4-87a3-44ab-83d2-661975830a7d"
    );
    assert_eq!(records[1].wake().unwrap().0.attempt, 3);
    let Invocation::ExecutionEvent { task_id } =
        Invocation::from_json(&fixture("task_execution_event.json")).unwrap()
    else {
        panic!()
    };
    assert_eq!(task_id.to_string(), "01JF3Q8R5V2Z6X4W9YH7K1M0NB");

    let e = Invocation::from_json(&fixture("unknown_s3_put.json")).unwrap_err();
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("source aws:s3"), "{e}");
}

#[test]
fn odd_payloads_are_named_not_panicked_on() {
    for (v, expect) in [
        (json!(null), "null"),
        (json!([1, 2]), "array"),
        (json!("wake"), "string"),
        (json!({}), "keys []"),
        (json!({"Records": []}), "keys [Records]"),
        (
            json!({"source": "aws.events", "detail": {}}),
            "source aws.events",
        ),
    ] {
        let e = Invocation::from_json(&v).unwrap_err();
        assert!(matches!(e, InvocationError::UnknownShape(_)), "{v}");
        assert!(e.to_string().contains(expect), "{e}");
    }
    for bad in [
        json!({"kind": "wake", "task_id": "nope", "attempt": 1}),
        json!({"kind": "wake", "task_id": "01JF3Q8R5V2Z6X4W9YH7K1M0NB"}),
        json!({"source": "custom.scheduler", "detail": {}}),
        json!({"source": "custom.scheduler", "detail": {"taskId": "x"}}),
        json!({"requestContext": {"http": {}}}),
    ] {
        let e = Invocation::from_json(&bad).unwrap_err();
        assert!(matches!(e, InvocationError::Malformed { .. }), "{bad}: {e}");
        assert!(!e.is_retryable());
    }
}

#[tokio::test]
async fn api_gateway_request_becomes_the_routers_request() {
    let Invocation::Http(req) =
        Invocation::from_json(&fixture("apigw_v2_iam_create.json")).unwrap()
    else {
        panic!()
    };
    let r = req.into_http().unwrap();
    assert_eq!(r.method(), http::Method::POST);
    assert_eq!(r.uri(), "/tasks");
    assert_eq!(r.headers()["idempotency-key"], "order-42");
    assert_eq!(r.headers()["cookie"], "session=abc; theme=dark");
    assert_eq!(
        r.extensions()
            .get::<crate::api::Caller>()
            .unwrap()
            .0
            .as_str(),
        "arn:aws:iam::123456789012:user/alice"
    );
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{\"action\":\"webhook\""));

    let mut v = fixture("apigw_v2_iam_list_base64.json");
    v["body"] = json!("aGVsbG8=");
    let Invocation::Http(req) = Invocation::from_json(&v).unwrap() else {
        panic!()
    };
    let r = req.into_http().unwrap();
    assert_eq!(r.uri(), "/tasks?status=scheduled&limit=2");
    assert_eq!(
        r.into_body().collect().await.unwrap().to_bytes().as_ref(),
        b"hello"
    );
}

use http_body_util::BodyExt;

#[derive(Default)]
struct RecordingWaker(Mutex<Vec<(WakeUp, DateTime<Utc>)>>);

#[async_trait]
impl Waker for RecordingWaker {
    async fn arm(&self, wake: WakeUp, at: DateTime<Utc>) -> Result<(), PortError> {
        self.0.lock().unwrap().push((wake, at));
        Ok(())
    }
    async fn disarm(&self, _wake: WakeUp) -> Result<(), PortError> {
        Ok(())
    }
}

#[derive(Default)]
struct CountingWebhook(Mutex<u32>);

#[async_trait]
impl WebhookClient for CountingWebhook {
    async fn deliver(&self, _task: &Task, _attempt: u32) -> Delivery {
        *self.0.lock().unwrap() += 1;
        Delivery {
            started_at: Utc::now(),
            duration: std::time::Duration::from_millis(1),
            outcome: AttemptOutcome::Succeeded,
            status_code: Some(200),
            error: None,
            hint: RetryHint::Success,
        }
    }
}

fn host() -> (LambdaHost, Arc<CountingWebhook>, Arc<RecordingWaker>) {
    let dir = tempfile::tempdir().unwrap().keep();
    let webhook = Arc::new(CountingWebhook::default());
    let waker = Arc::new(RecordingWaker::default());
    let host = LambdaHost::new(Ports {
        store: Arc::new(crate::store::SqliteStore::open(&dir).unwrap()),
        waker: waker.clone(),
        webhook: webhook.clone(),
        clock: Arc::new(SystemClock),
        dead_letters: Arc::new(NoDeadLetters),
        metrics: Arc::new(NoMetrics),
        targets: Arc::new(crate::ports::AllowAllTargets),
    });
    (host, webhook, waker)
}

fn body(resp: &Value) -> Value {
    serde_json::from_str(resp["body"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn http_wake_sqs_and_execution_event_through_one_host() {
    let (host, webhook, waker) = host();
    // Create as alice, due now.
    let mut create = fixture("apigw_v2_iam_create.json");
    let when = crate::domain::format_time(&Utc::now());
    create["body"] = json!(
        json!({"action": "webhook", "payload": {"url": "https://example.com/hook"}, "run_at": when})
            .to_string()
    );
    let resp = host.handle(&create).await.unwrap();
    assert_eq!(resp["statusCode"], 201, "{resp}");
    assert_eq!(resp["isBase64Encoded"], false);
    assert!(
        resp["headers"]["location"]
            .as_str()
            .unwrap()
            .starts_with("/tasks/")
    );
    let task_id = body(&resp)["task_id"].as_str().unwrap().to_owned();
    assert_eq!(waker.0.lock().unwrap().len(), 1);
    // The idempotent repeat answers 200 with the same task.
    let again = host.handle(&create).await.unwrap();
    assert_eq!(again["statusCode"], 200);
    assert_eq!(body(&again)["task_id"], task_id.as_str());

    // No IAM context: 401 from the router, even with a forged header.
    let mut anon = fixture("apigw_v2_no_authorizer.json");
    anon["rawPath"] = json!(format!("/tasks/{task_id}"));
    let resp = host.handle(&anon).await.unwrap();
    assert_eq!(resp["statusCode"], 401, "{resp}");
    assert_eq!(body(&resp)["error"]["code"], "unauthorized");
    // Another principal does not see it.
    let mut bob = fixture("apigw_v2_iam_list_base64.json");
    bob["isBase64Encoded"] = json!(false);
    let resp = host.handle(&bob).await.unwrap();
    assert_eq!(resp["statusCode"], 200, "{resp}");
    assert_eq!(body(&resp)["tasks"], json!([]));

    // A wake-up for attempt 1 delivers; the duplicate (SQS) delivers nothing.
    let wake = json!({"kind": "wake", "task_id": task_id, "attempt": 1});
    let out = host.handle(&wake).await.unwrap();
    assert_eq!(out["result"], "completed", "{out}");
    let mut batch = fixture("sqs_batch.json");
    batch["Records"][0]["body"] = json!(wake.to_string());
    batch["Records"][1]["body"] = json!("not json");
    let out = host.handle(&batch).await.unwrap();
    assert_eq!(
        out,
        json!({"batchItemFailures": []}),
        "nothing retryable failed"
    );
    assert_eq!(*webhook.0.lock().unwrap(), 1, "delivered once");

    // The original design's execution event fires the current attempt (already done: dropped).
    let mut exec = fixture("task_execution_event.json");
    exec["detail"]["taskId"] = json!(task_id);
    assert_eq!(host.handle(&exec).await.unwrap()["result"], "dropped");
    let mut missing = fixture("task_execution_event.json");
    missing["detail"]["taskId"] = json!(crate::domain::TaskId::generate().to_string());
    let e = host.handle(&missing).await.unwrap_err();
    assert!(matches!(e, InvocationError::UnknownTask(_)) && !e.is_retryable());

    // Status and attempts through GET, as alice.
    let mut get = fixture("apigw_v2_iam_create.json");
    get["requestContext"]["http"]["method"] = json!("GET");
    get["rawPath"] = json!(format!("/tasks/{task_id}"));
    get["body"] = Value::Null;
    let resp = host.handle(&get).await.unwrap();
    assert_eq!(resp["statusCode"], 200, "{resp}");
    let task = body(&resp);
    assert_eq!(task["status"], "completed");
    assert_eq!(task["attempts"].as_array().unwrap().len(), 1);

    // Unknown shapes are acknowledged by `invoke`, not retried.
    let out = host.invoke(&fixture("unknown_s3_put.json")).await.unwrap();
    assert_eq!(out["retryable"], false);
}

#[test]
fn retryability_at_the_boundary() {
    assert!(InvocationError::from(AppError::Unavailable("dynamodb".into())).is_retryable());
    assert!(!InvocationError::from(AppError::NotFound).is_retryable());
    assert!(!InvocationError::UnknownShape("x".into()).is_retryable());
}
