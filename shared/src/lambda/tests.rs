use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::*;
use crate::domain::{AttemptOutcome, Delivery, RetryHint, Task};
use crate::ports::{Clock, NoDeadLetters, NoMetrics, PortError, Waker, WebhookClient};

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
        "arn:aws:iam::123456789012:role/ops"
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
    host_with(Arc::new(SystemClock))
}

fn host_with(clock: Arc<dyn Clock>) -> (LambdaHost, Arc<CountingWebhook>, Arc<RecordingWaker>) {
    let dir = tempfile::tempdir().unwrap().keep();
    let webhook = Arc::new(CountingWebhook::default());
    let waker = Arc::new(RecordingWaker::default());
    let store = Arc::new(crate::store::SqliteStore::open(&dir).unwrap());
    let host = LambdaHost::new(
        Ports {
            store: store.clone(),
            waker: waker.clone(),
            webhook: webhook.clone(),
            clock,
            dead_letters: Arc::new(NoDeadLetters),
            metrics: Arc::new(NoMetrics),
            targets: Arc::new(crate::ports::AllowAllTargets),
        },
        store,
    );
    (host, webhook, waker)
}

/// A clock the test moves.
struct ManualClock(Mutex<DateTime<Utc>>);

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

#[test]
fn the_sweep_event_parses() {
    assert!(matches!(
        Invocation::from_json(&fixture("scheduler_sweep.json")).unwrap(),
        Invocation::Sweep
    ));
}

/// `{"kind":"sweep"}` (the recurring schedule) re-arms a task whose wake-up was lost, once it
/// is more than the grace late, and delivers nothing itself.
#[tokio::test]
async fn the_sweep_event_rearms_a_lost_wake_up() {
    let start = Utc::now();
    let clock = Arc::new(ManualClock(Mutex::new(start)));
    let (host, webhook, waker) = host_with(clock.clone());
    let mut create = fixture("apigw_v2_iam_create.json");
    let when = crate::domain::format_time(&(start + chrono::TimeDelta::seconds(5)));
    create["body"] = json!(
        json!({"action": "webhook", "payload": {"url": "https://example.com/hook"}, "run_at": when})
            .to_string()
    );
    let resp = host.handle(&create).await.unwrap();
    assert_eq!(resp["statusCode"], 201, "{resp}");
    let task_id = body(&resp)["task_id"].as_str().unwrap().to_owned();
    // The wake-up is lost (the delay queue dead-lettered it).
    let (lost, run_at) = waker.0.lock().unwrap().pop().unwrap();
    let sweep = fixture("scheduler_sweep.json");
    // 30 s after the due time: still the wake-up's to deliver.
    *clock.0.lock().unwrap() =
        run_at + crate::app::SWEEP_GRACE - chrono::TimeDelta::milliseconds(1);
    let out = host.handle(&sweep).await.unwrap();
    assert_eq!(out["rearmed"], 0, "{out}");
    assert!(waker.0.lock().unwrap().is_empty());
    // Past that: re-armed, for its due time.
    *clock.0.lock().unwrap() = run_at + crate::app::SWEEP_GRACE;
    let out = host.invoke(&sweep).await.unwrap();
    assert_eq!(
        out,
        json!({"result": "swept", "rearmed": 1, "dead_letters": 0, "failed": 0})
    );
    assert_eq!(*waker.0.lock().unwrap(), vec![(lost, run_at)]);
    assert_eq!(lost.task_id.to_string(), task_id);
    assert_eq!(*webhook.0.lock().unwrap(), 0, "the sweep delivers nothing");
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

/// The owner API Gateway's IAM authorizer context yields for a principal ARN (`None`: no
/// caller, so the router answers 401).
fn owner_for(user_arn: &str) -> Option<String> {
    let mut v = fixture("apigw_v2_iam_create.json");
    v["requestContext"]["authorizer"]["iam"]["userArn"] = json!(user_arn);
    let Invocation::Http(req) = Invocation::from_json(&v).unwrap() else {
        panic!()
    };
    req.caller().map(|o| o.as_str().to_owned())
}

#[test]
fn an_assumed_role_session_is_owned_by_its_role() {
    // Assumed roles, in every partition: the role, without the session (and without a path,
    // which the session ARN does not carry).
    for (session, role) in [
        (
            "arn:aws:sts::123456789012:assumed-role/order-worker/i-0a1b2c3d4e5f67890",
            "arn:aws:iam::123456789012:role/order-worker",
        ),
        (
            "arn:aws:sts::123456789012:assumed-role/ops/bob@example.com",
            "arn:aws:iam::123456789012:role/ops",
        ),
        (
            "arn:aws-cn:sts::123456789012:assumed-role/ops/session-1",
            "arn:aws-cn:iam::123456789012:role/ops",
        ),
        (
            "arn:aws-us-gov:sts::123456789012:assumed-role/ops/session-1",
            "arn:aws-us-gov:iam::123456789012:role/ops",
        ),
        (
            "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0123456789abcdef/jane",
            "arn:aws:iam::123456789012:role/AWSReservedSSO_Admin_0123456789abcdef",
        ),
    ] {
        assert_eq!(owner_for(session).as_deref(), Some(role), "{session}");
    }
    // Two sessions of one role are one owner.
    assert_eq!(
        owner_for("arn:aws:sts::123456789012:assumed-role/ops/a"),
        owner_for("arn:aws:sts::123456789012:assumed-role/ops/b")
    );
    // The same role name in another account or partition is another owner.
    assert_ne!(
        owner_for("arn:aws:sts::123456789012:assumed-role/ops/a"),
        owner_for("arn:aws:sts::210987654321:assumed-role/ops/a")
    );
    assert_ne!(
        owner_for("arn:aws:sts::123456789012:assumed-role/ops/a"),
        owner_for("arn:aws-cn:sts::123456789012:assumed-role/ops/a")
    );
}

#[test]
fn other_principals_keep_their_arn() {
    for arn in [
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:iam::123456789012:user/team/alice",
        "arn:aws:iam::123456789012:root",
        "arn:aws:sts::123456789012:federated-user/carol",
        "arn:aws-cn:iam::123456789012:user/alice",
    ] {
        assert_eq!(owner_for(arn).as_deref(), Some(arn));
    }
}

#[test]
fn a_malformed_assumed_role_arn_is_no_caller() {
    // API Gateway never sends these; if one came, guessing an owner from it could hand a
    // caller someone else's tasks, so there is no caller and the router answers 401.
    for arn in [
        "arn:aws:sts::123456789012:assumed-role/ops",
        "arn:aws:sts::123456789012:assumed-role/ops/",
        "arn:aws:sts::123456789012:assumed-role//session",
        "arn:aws:sts::123456789012:assumed-role/ops/s/extra",
        "arn:aws:sts::12345:assumed-role/ops/session",
        "arn:aws:sts::1234567890ab:assumed-role/ops/session",
        "arn::sts::123456789012:assumed-role/ops/session",
        "arn:aws:sts:us-east-1:123456789012:assumed-role/ops/session",
    ] {
        assert_eq!(owner_for(arn), None, "{arn}");
    }
}

#[tokio::test]
async fn a_role_keeps_its_tasks_and_idempotency_keys_across_sessions() {
    let (host, _webhook, _waker) = host();
    let session = |name: &str| {
        let mut v = fixture("apigw_v2_assumed_role_create.json");
        v["requestContext"]["authorizer"]["iam"]["userArn"] = json!(format!(
            "arn:aws:sts::123456789012:assumed-role/order-worker/{name}"
        ));
        v
    };
    // Session 1 (one replica) creates the task with an idempotency key.
    let mut create = session("i-0a1b2c3d4e5f67890");
    let when = crate::domain::format_time(&(Utc::now() + chrono::TimeDelta::hours(1)));
    create["body"] = json!(
        json!({"action": "webhook", "payload": {"url": "https://example.com/hook"}, "run_at": when})
            .to_string()
    );
    let resp = host.handle(&create).await.unwrap();
    assert_eq!(resp["statusCode"], 201, "{resp}");
    let task_id = body(&resp)["task_id"].as_str().unwrap().to_owned();

    // Session 2 (another replica, or the same one an hour later) repeats the create: the key
    // is the role's, so it is the same task, not a second one.
    let mut again = create.clone();
    again["requestContext"]["authorizer"] =
        session("i-0fedcba9876543210")["requestContext"]["authorizer"].clone();
    let resp = host.handle(&again).await.unwrap();
    assert_eq!(resp["statusCode"], 200, "{resp}");
    assert_eq!(body(&resp)["task_id"], task_id.as_str());

    // Session 2 sees it in its list and by id, and can cancel it.
    let mut list = session("i-0fedcba9876543210");
    list["requestContext"]["http"]["method"] = json!("GET");
    list["body"] = Value::Null;
    let resp = host.handle(&list).await.unwrap();
    assert_eq!(resp["statusCode"], 200, "{resp}");
    let tasks = body(&resp)["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 1, "{resp}");
    assert_eq!(tasks[0]["task_id"], task_id.as_str());
    let mut cancel = list.clone();
    cancel["requestContext"]["http"]["method"] = json!("DELETE");
    cancel["rawPath"] = json!(format!("/tasks/{task_id}"));
    let resp = host.handle(&cancel).await.unwrap();
    assert_eq!(resp["statusCode"], 200, "{resp}");
    assert_eq!(body(&resp)["status"], "cancelled");

    // Another role in the same account still sees nothing of it.
    let mut other = list.clone();
    other["requestContext"]["authorizer"]["iam"]["userArn"] =
        json!("arn:aws:sts::123456789012:assumed-role/billing/i-0a1b2c3d4e5f67890");
    other["rawPath"] = json!(format!("/tasks/{task_id}"));
    let resp = host.handle(&other).await.unwrap();
    assert_eq!(resp["statusCode"], 404, "{resp}");
}
