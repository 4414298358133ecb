//! The cloud rehearsal: the real binary on the real Lambda Runtime API (cargo lambda), over
//! DynamoDB, SQS and EventBridge Scheduler on moto server, delivering to a webhook receiver
//! on loopback. moto never fires schedules nor feeds SQS to Lambda, so the test plays
//! EventBridge Scheduler (reads each schedule, checks every field, invokes the function with
//! its `Input` at a uniform random moment of its minute) and the SQS event source (receives
//! due delay-queue messages, invokes with a batch event, deletes what was not failed).
//!
//! Requests are API Gateway HTTP API v2 events with an IAM authorizer context, sent through
//! the Lambda Invoke API. cargo lambda's `/lambda-url/<fn>/...` emulation builds a v2 event
//! without any authorizer context (the router would answer 401), and in `--only-lambda-apis`
//! mode (a binary started by the test) cargo-lambda 1.9.2 does not route its responses back,
//! so it is not used; the unauthenticated case is an event without `authorizer` instead.
//!
//! Ignored by a plain `cargo test`: `make test-aws` runs it (`--ignored`) with moto up.

use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};
use integration_tests::{
    Receiver, Reply,
    aws::{AwsRig, Function, ROLE_ARN, Recorder, api_event, api_response, at_time, eventually},
    in_ms, parse_time, rfc3339,
};
use rand::Rng;
use serde_json::{Value, json};

const ALICE: &str = "arn:aws:iam::123456789012:user/alice";
const BOB: &str = "arn:aws:sts::123456789012:assumed-role/ops/bob";
/// The invoked function ARN cargo lambda's Runtime API puts in the invocation context.
const CONTEXT_ARN: &str = "function-arn";

async fn call(
    f: &Function,
    method: &str,
    path: &str,
    body: Option<&Value>,
    owner: Option<&str>,
) -> (u16, Value) {
    let resp = f
        .invoke(&api_event(method, path, body, owner, &[]))
        .await
        .expect("invoke with an API Gateway v2 event");
    api_response(&resp)
}

/// Creates a task as Alice through the function; it must be accepted (201). Its id.
async fn created(f: &Function, body: &Value) -> String {
    let (status, task) = call(f, "POST", "/tasks", Some(body), Some(ALICE)).await;
    assert_eq!(status, 201, "{task}");
    task["task_id"].as_str().unwrap().to_owned()
}

fn create_body(url: &str, run_at: chrono::DateTime<Utc>) -> Value {
    json!({
        "action": "webhook",
        "payload": {"url": url, "method": "POST", "data": {"message": "Task executed!"}},
        "run_at": rfc3339(run_at),
    })
}

/// Plays the SQS event source until `done` holds or `within` passes.
async fn pump_until(rig: &AwsRig, f: &Function, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "not done within {within:?}; function logs:\n{}",
            f.log_text()
        );
        rig.pump_delay_queue(f, Duration::from_millis(200)).await;
    }
}

/// Starts a fresh function process (a cold start) whose wall clock is moved forward (by
/// libfaketime, from outside the binary), then waits until that clock reads `at`: the test
/// plays a moment hours ahead, to the millisecond.
async fn start_clocked_at(rig: &AwsRig, at: chrono::DateTime<Utc>) -> Function {
    const STARTUP: TimeDelta = TimeDelta::seconds(4);
    let offset = at - Utc::now() - STARTUP;
    let f = Function::start(&rig.function_env(), Some(offset))
        .await
        .unwrap();
    let wait = at - (Utc::now() + offset);
    assert!(
        wait > TimeDelta::zero(),
        "the function took longer than {STARTUP} to start"
    );
    tokio::time::sleep(wait.to_std().unwrap()).await;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: make test-aws"]
async fn a_task_due_in_ten_seconds_is_delivered_once_within_a_second() {
    let rig = AwsRig::create().await;
    let recorder = Recorder::start(&rig.endpoint).await;
    let receiver = Receiver::start().await;
    receiver.script("/hook", [], Reply::ok());
    let f = Function::start(&rig.function_env(), None).await.unwrap();

    let run_at = in_ms(10_000);
    let id = created(&f, &create_body(&receiver.url("/hook"), run_at)).await;
    // Without the IAM authorizer context there is no caller: 401, nothing stored.
    let (status, err) = call(&f, "GET", &format!("/tasks/{id}"), None, None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert!(
        rig.schedule_names().await.is_empty(),
        "due within 15 min: the delay queue, no schedule"
    );
    let (_, delayed) = rig.delay_queue_depth().await;
    assert_eq!(delayed, 1, "one delayed wake-up");

    pump_until(&rig, &f, Duration::from_secs(25), || {
        !receiver.arrivals_at("/hook").is_empty()
    })
    .await;
    let arrival = receiver.arrivals_at("/hook").remove(0);
    let lateness = arrival.wall - run_at;
    println!(
        "10 s task: delivered {} ms after run_at",
        lateness.num_milliseconds()
    );
    assert!(
        (0..=1_000).contains(&lateness.num_milliseconds()),
        "delivered {lateness} after run_at"
    );
    assert_eq!(arrival.json()["message"], "Task executed!");
    assert_eq!(arrival.header("webhook-id"), Some(id.as_str()));
    // Signed with the secret from Secrets Manager, verified by the Standard Webhooks library.
    let verifier = standardwebhooks::Webhook::new(&rig.signing_secret).unwrap();
    verifier
        .verify(&arrival.body, &arrival.headers)
        .expect("the delivery verifies with the signing secret");

    // Calls made for this task on its happy path (before the duplicates below).
    let calls = eventually(Duration::from_secs(5), || async {
        let c = recorder.function_calls_for(&id).await;
        (c.len() >= 4).then_some(c)
    })
    .await
    .unwrap_or_default();
    println!(
        "AWS calls, task due within 15 min: {} {calls:?}",
        calls.len()
    );
    assert_eq!(calls, ["PutItem", "SendMessage", "UpdateItem", "PutItem"]);

    // Duplicate wake-ups (SQS at-least-once, a replayed message) deliver nothing new.
    let wake = json!({"kind": "wake", "task_id": id, "attempt": 1});
    assert_eq!(f.invoke(&wake).await.unwrap()["result"], "dropped");
    let batch = json!({"Records": [{"messageId": "dup-1", "body": wake.to_string(), "eventSource": "aws:sqs"}]});
    assert_eq!(
        f.invoke(&batch).await.unwrap(),
        json!({"batchItemFailures": []})
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.arrivals_at("/hook").len(),
        1,
        "delivered exactly once"
    );

    // Status and attempts through GET /tasks/{id}; another principal gets 404.
    let (status, got) = call(&f, "GET", &format!("/tasks/{id}"), None, Some(ALICE)).await;
    assert_eq!(status, 200);
    assert_eq!(got["status"], "completed");
    assert_eq!(got["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(got["attempts"][0]["status_code"], 200);
    assert_eq!(
        call(&f, "GET", &format!("/tasks/{id}"), None, Some(BOB))
            .await
            .0,
        404
    );

    // EMF metrics in the function's output; no EventBridge rule anywhere.
    assert_eq!(f.metric_values("TasksCreated"), [1.0]);
    assert_eq!(f.metric_values("TasksDelivered"), [1.0]);
    let lateness_metric = f.metric_values("DeliveryLatenessMs");
    assert!(
        lateness_metric.len() == 1 && lateness_metric[0] <= 1_000.0,
        "{lateness_metric:?}"
    );
    assert!(rig.eventbridge_rules().await.is_empty());
    // JSON logs carry the task id and attempt.
    assert!(
        f.output
            .lines()
            .iter()
            .any(|l| l.contains("attempt recorded")
                && l.contains(&id)
                && l.contains("\"attempt\":1")),
        "no JSON log line with task id and attempt:\n{}",
        f.log_text()
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: make test-aws"]
async fn a_task_two_hours_ahead_gets_a_schedule_whose_firing_rearms_on_the_delay_queue() {
    let rig = AwsRig::create().await;
    let recorder = Recorder::start(&rig.endpoint).await;
    let receiver = Receiver::start().await;
    receiver.script("/later", [], Reply::ok());
    let f = Function::start(&rig.function_env(), None).await.unwrap();

    let run_at = in_ms(2 * 3_600_000);
    let id = created(&f, &create_body(&receiver.url("/later"), run_at)).await;

    // Exactly one schedule, named <task>-<attempt>, with every field as designed.
    let name = format!("{id}-1");
    assert_eq!(rig.schedule_names().await, std::slice::from_ref(&name));
    let s = rig.get_schedule(&name).await.unwrap();
    let expected_at = (run_at - TimeDelta::minutes(2))
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap();
    let expression = s.schedule_expression().unwrap();
    assert_eq!(
        expression,
        format!("at({})", expected_at.format("%Y-%m-%dT%H:%M:%S"))
    );
    assert_eq!(s.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(s.flexible_time_window().unwrap().mode().as_str(), "OFF");
    assert_eq!(
        s.action_after_completion().map(|a| a.as_str()),
        Some("DELETE")
    );
    assert_eq!(s.group_name(), Some(rig.group.as_str()));
    let target = s.target().unwrap();
    assert_eq!(
        target.arn(),
        CONTEXT_ARN,
        "the function's ARN from its invocation context"
    );
    assert_eq!(target.role_arn(), ROLE_ARN);
    let retry = target.retry_policy().unwrap();
    assert_eq!(
        (
            retry.maximum_event_age_in_seconds(),
            retry.maximum_retry_attempts()
        ),
        (Some(86_400), Some(185))
    );
    assert_eq!(
        target.dead_letter_config().and_then(|d| d.arn()),
        Some(rig.dlq_arn.as_str())
    );
    let input: Value = serde_json::from_str(target.input().unwrap()).unwrap();
    // The Input carries the due time, so the early firing re-arms without reading the table.
    let due = input["due"].as_str().expect("due in the Input");
    assert_eq!(chrono::DateTime::parse_from_rfc3339(due).unwrap(), run_at);
    let mut plain = input.clone();
    plain.as_object_mut().unwrap().remove("due");
    assert_eq!(plain, json!({"kind": "wake", "task_id": id, "attempt": 1}));
    assert_eq!(
        rig.delay_queue_depth().await,
        (0, 0),
        "nothing on the queue yet"
    );

    // Play Scheduler: it fires at a uniform random moment of the at() minute. The function
    // is a fresh process (cold start) whose clock stands at that moment.
    let fire_at =
        at_time(expression) + TimeDelta::milliseconds(rand::rng().random_range(0..60_000));
    f.stop().await;
    let f = start_clocked_at(&rig, fire_at).await;
    // The function's clock reads `fire_at` now and moves on in real time: it computes the
    // delay at some instant of this call.
    let fired = std::time::Instant::now();
    let out = rig.fire_schedule(&f, &name).await;
    let call_ms = i64::try_from(fired.elapsed().as_millis()).unwrap();
    assert_eq!(out["result"], "rearmed", "{out}");
    // Early: re-armed on the delay queue for the remaining seconds, not as a new schedule.
    assert!(rig.schedule_names().await.is_empty());
    assert_eq!(rig.delay_queue_depth().await, (0, 1));
    let remaining = (run_at - fire_at).num_milliseconds();
    let queued = f
        .output
        .logs_with_message("wake-up queued")
        .into_iter()
        .next()
        .expect("a queued wake-up in the logs");
    let delay = queued["fields"]["delay_seconds"].as_i64().unwrap();
    println!(
        "2 h task: schedule fired {} s early, re-armed with DelaySeconds={delay}",
        remaining / 1000
    );
    // The remaining time in whole seconds, rounded down, at the function's now: somewhere
    // between `fire_at` and the end of the call.
    let (latest, earliest) = (remaining / 1000, (remaining - call_ms) / 1000);
    assert!(
        (earliest..=latest).contains(&delay) && (59..=180).contains(&delay),
        "DelaySeconds {delay}, expected {earliest}..={latest} (the remaining time in whole \
         seconds, rounded down, during a {call_ms} ms call)"
    );
    assert_eq!(
        queued["fields"]["due"].as_str().map(parse_time),
        Some(run_at),
        "{queued}"
    );
    assert!(receiver.arrivals().is_empty());

    // Play SQS when that message becomes visible, `delay` whole seconds after the firing: up
    // to a second before run_at. A fresh process whose clock stands there gets the queued
    // body (the schedule's Input: it carries `due`) and waits out the fraction (moto would
    // only show the message after `delay` real seconds).
    f.stop().await;
    let visible_at = fire_at + TimeDelta::seconds(delay);
    assert!(visible_at <= run_at && run_at - visible_at < TimeDelta::seconds(1));
    let f = start_clocked_at(&rig, visible_at).await;
    let batch = json!({"Records": [{"messageId": "m-1", "body": input.to_string(), "eventSource": "aws:sqs"}]});
    assert_eq!(
        f.invoke(&batch).await.unwrap(),
        json!({"batchItemFailures": []})
    );
    assert_eq!(receiver.arrivals_at("/later").len(), 1);
    let lateness = f.metric_values("DeliveryLatenessMs");
    println!("2 h task: delivered {lateness:?} ms after run_at");
    assert!(
        lateness.len() == 1 && (0.0..1_000.0).contains(&lateness[0]),
        "{lateness:?}"
    );

    let calls = eventually(Duration::from_secs(5), || async {
        let c = recorder.function_calls_for(&id).await;
        (c.len() >= 5).then_some(c)
    })
    .await
    .unwrap_or_default();
    println!("AWS calls, task due in 2 h: {} {calls:?}", calls.len());
    assert_eq!(
        calls,
        [
            "PutItem",
            "CreateSchedule",
            "SendMessage",
            "UpdateItem",
            "PutItem"
        ]
    );
    assert!(rig.eventbridge_rules().await.is_empty());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: make test-aws"]
async fn cancel_deletes_the_pending_schedule_and_a_late_wake_up_delivers_nothing() {
    let rig = AwsRig::create().await;
    let receiver = Receiver::start().await;
    let f = Function::start(&rig.function_env(), None).await.unwrap();
    let run_at = in_ms(3 * 3_600_000);
    let id = created(&f, &create_body(&receiver.url("/never"), run_at)).await;
    let name = format!("{id}-1");
    assert!(rig.get_schedule(&name).await.is_some());

    assert_eq!(
        call(&f, "DELETE", &format!("/tasks/{id}"), None, Some(BOB))
            .await
            .0,
        404
    );
    let (status, cancelled) = call(&f, "DELETE", &format!("/tasks/{id}"), None, Some(ALICE)).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert!(
        rig.get_schedule(&name).await.is_none(),
        "the schedule is deleted"
    );
    assert!(rig.schedule_names().await.is_empty());
    assert_eq!(
        call(&f, "DELETE", &format!("/tasks/{id}"), None, Some(ALICE))
            .await
            .0,
        409
    );

    // A wake-up already in flight (or duplicated) finds the task cancelled.
    let wake = json!({"kind": "wake", "task_id": id, "attempt": 1});
    assert_eq!(f.invoke(&wake).await.unwrap()["result"], "dropped");
    // The original design's execution event is accepted too, and also drops.
    let legacy = json!({"source": "custom.scheduler", "detail-type": "Scheduled Task Execution", "detail": {"taskId": id}});
    assert_eq!(f.invoke(&legacy).await.unwrap()["result"], "dropped");
    // An unknown shape is acknowledged with an error, never a crash.
    let odd = f.invoke(&json!({"hello": "world"})).await.unwrap();
    assert_eq!(odd["retryable"], false);
    assert!(receiver.arrivals().is_empty());

    let (status, list) = call(&f, "GET", "/tasks?status=cancelled", None, Some(ALICE)).await;
    assert_eq!(status, 200);
    assert_eq!(list["tasks"][0]["task_id"], id.as_str());
    assert_eq!(f.metric_values("TasksCancelled"), [1.0]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: make test-aws"]
async fn retries_back_off_then_the_last_failure_goes_to_the_failed_tasks_queue() {
    let rig = AwsRig::create().await;
    let recorder = Recorder::start(&rig.endpoint).await;
    let receiver = Receiver::start().await;
    // Retry-After: 2 on every failure. Without it the wait would be at most 1 s (full jitter
    // of the initial 1 s), so the gaps below tell a backoff from none and the header from the
    // policy.
    let busy = || Reply::status(500).header("retry-after", "2");
    receiver.script("/flaky", [busy()], Reply::ok());
    receiver.script("/down", [], busy());
    let f = Function::start(&rig.function_env(), None).await.unwrap();
    let retry = json!({"max_attempts": 3, "initial_backoff_seconds": 1, "max_backoff_seconds": 2});
    let mut ids = Vec::new();
    for path in ["/flaky", "/down"] {
        let mut body = create_body(&receiver.url(path), in_ms(500));
        body["retry"] = retry.clone();
        ids.push(created(&f, &body).await);
    }
    pump_until(&rig, &f, Duration::from_secs(30), || {
        receiver.arrivals_at("/flaky").len() >= 2 && receiver.arrivals_at("/down").len() >= 3
    })
    .await;
    let status_of = |id: String| {
        let f = &f;
        async move {
            let (_, t) = call(f, "GET", &format!("/tasks/{id}"), None, Some(ALICE)).await;
            t
        }
    };
    let flaky = eventually(Duration::from_secs(5), || async {
        let t = status_of(ids[0].clone()).await;
        (t["status"] == "completed").then_some(t)
    })
    .await
    .expect("the flaky task completes");
    assert_eq!(flaky["attempts"].as_array().unwrap().len(), 2);
    let down = eventually(Duration::from_secs(5), || async {
        let t = status_of(ids[1].clone()).await;
        (t["status"] == "failed").then_some(t)
    })
    .await
    .expect("the down task fails");
    assert_eq!(down["attempts"].as_array().unwrap().len(), 3);
    // Backoff: each retry comes Retry-After (2 s) after the previous attempt, not sooner, and
    // not much later (the delay queue's whole seconds, the test's polling of it).
    for path in ["/flaky", "/down"] {
        let arrivals = receiver.arrivals_at(path);
        for w in arrivals.windows(2) {
            let gap = w[1].at - w[0].at;
            println!("{path}: Retry-After: 2 -> next attempt after {gap:?}");
            assert!(
                (Duration::from_millis(1_950)..=Duration::from_millis(3_500)).contains(&gap),
                "{path}: gap {gap:?} between attempts"
            );
        }
    }
    let letters = rig.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let dl = &letters[0];
    assert_eq!(dl["task_id"], ids[1].as_str());
    assert_eq!(dl["attempts"], 3);
    assert_eq!(dl["owner"], ALICE);
    assert_eq!(dl["url"], receiver.url("/down"));
    assert!(dl["last_error"].as_str().unwrap().contains("500"), "{dl}");
    // A customer's failed task is not an infrastructure fault: nothing on the DLQ that pages.
    let infra = rig
        .sqs
        .receive_message()
        .queue_url(&rig.dlq_url)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert!(infra.is_empty(), "{infra:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.arrivals_at("/flaky").len(), 2);
    assert_eq!(receiver.arrivals_at("/down").len(), 3);
    assert_eq!(f.metric_values("TasksRetried").len(), 3);
    assert_eq!(f.metric_values("TasksFailed"), [1.0]);

    let calls = recorder.function_calls_for(&ids[0]).await;
    let calls: Vec<&String> = calls.iter().filter(|c| *c != "GetItem").collect();
    println!("AWS calls, task with one retry: {} {calls:?}", calls.len());
    assert_eq!(
        calls,
        [
            "PutItem",
            "SendMessage",
            "UpdateItem",
            "PutItem",
            "SendMessage",
            "UpdateItem",
            "PutItem"
        ]
    );
    assert!(rig.eventbridge_rules().await.is_empty());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: make test-aws"]
async fn the_aws_host_refuses_private_targets_unless_allowed() {
    let rig = AwsRig::create().await;
    let env: Vec<(String, String)> = rig
        .function_env()
        .into_iter()
        .filter(|(k, _)| k != "SCHEDULER_ALLOWED_TARGETS")
        .collect();
    let f = Function::start(&env, None).await.unwrap();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://10.0.0.8/",
        "http://localhost./",
    ] {
        let (status, err) = call(
            &f,
            "POST",
            "/tasks",
            Some(&create_body(url, in_ms(60_000))),
            Some(ALICE),
        )
        .await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (400, Some("payload.url")),
            "{url}: {err}"
        );
    }
    let (_, list) = call(&f, "GET", "/tasks", None, Some(ALICE)).await;
    assert_eq!(list["tasks"], json!([]), "nothing stored");
    f.stop().await;
}

/// A lost wake-up on the real function: a delay-queue message that is lost (here deleted, as
/// SQS moves one to its DLQ after its receives) leaves the task `scheduled` for good, until
/// the recurring `{"kind":"sweep"}` invocation finds it in the `pending` index and re-arms
/// it. Not within the grace, and never by delivering itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: make test-aws"]
async fn a_lost_wake_up_is_rearmed_by_the_sweep_and_delivered_once() {
    let rig = AwsRig::create().await;
    let receiver = Receiver::start().await;
    receiver.script("/hook", [], Reply::ok());
    let f = Function::start(&rig.function_env(), None).await.unwrap();
    let run_at = in_ms(500);
    let id = created(&f, &create_body(&receiver.url("/hook"), run_at)).await;
    // The wake-up is lost.
    let msgs = rig.receive(Duration::from_secs(5)).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    rig.sqs
        .delete_message()
        .queue_url(&rig.delay_queue_url)
        .receipt_handle(msgs[0].receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
    let sweep = json!({"kind": "sweep"});
    // Within the grace: nothing to do yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = f.invoke(&sweep).await.unwrap();
    assert_eq!(out["rearmed"], 0, "{out}");
    f.stop().await;

    // The next minute's sweep, on a function whose clock reads 95 s after run_at.
    let f = start_clocked_at(&rig, run_at + TimeDelta::seconds(95)).await;
    let out = f.invoke(&sweep).await.unwrap();
    assert_eq!(
        out,
        json!({"result": "swept", "rearmed": 1, "dead_letters": 0, "failed": 0}),
        "{}",
        f.log_text()
    );
    assert!(
        receiver.arrivals_at("/hook").is_empty(),
        "the sweep delivers nothing"
    );
    assert_eq!(f.metric_values("TasksRecovered"), [1.0]);
    pump_until(&rig, &f, Duration::from_secs(10), || {
        !receiver.arrivals_at("/hook").is_empty()
    })
    .await;
    let (_, t) = call(&f, "GET", &format!("/tasks/{id}"), None, Some(ALICE)).await;
    assert_eq!(t["status"], "completed", "{t}");
    // Delivered, it leaves the index: the next sweep finds nothing.
    let out = f.invoke(&sweep).await.unwrap();
    assert_eq!(out["rearmed"], 0, "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.arrivals_at("/hook").len(), 1);
    f.stop().await;
}

/// `PATCH /tasks/{id}` on the real function: a task three hours ahead (a schedule) moved to
/// seconds ahead loses its schedule, rides the delay queue and is delivered once at its new
/// time; the old schedule's wake-up, had it still come, arrives at the old time and delivers
/// nothing. Then `/run` on another task: due now, delivered now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: make test-aws"]
async fn a_moved_task_is_delivered_at_its_new_time_and_its_old_wake_up_is_stale() {
    let rig = AwsRig::create().await;
    let recorder = Recorder::start(&rig.endpoint).await;
    let receiver = Receiver::start().await;
    receiver.script("/moved", [], Reply::ok());
    receiver.script("/run", [], Reply::ok());
    let f = Function::start(&rig.function_env(), None).await.unwrap();

    let old = in_ms(3 * 3_600_000);
    let id = created(&f, &create_body(&receiver.url("/moved"), old)).await;
    let name = format!("{id}-1");
    let schedule = rig.get_schedule(&name).await.expect("a schedule");
    let old_input: Value =
        serde_json::from_str(schedule.target().unwrap().input().unwrap()).unwrap();

    let new = in_ms(6_000);
    let path = format!("/tasks/{id}");
    let body = json!({"run_at": rfc3339(new)});
    assert_eq!(
        call(&f, "PATCH", &path, Some(&body), Some(BOB)).await.0,
        404
    );
    let bad = json!({"run_at_local": "2027-03-28T02:30:00"});
    let (status, err) = call(&f, "PATCH", &path, Some(&bad), Some(ALICE)).await;
    assert_eq!((status, &err["error"]["field"]), (400, &json!("timezone")));
    let (status, moved) = call(&f, "PATCH", &path, Some(&body), Some(ALICE)).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(parse_time(moved["run_at"].as_str().unwrap()), new);
    assert_eq!(moved["status"], "scheduled");
    // The old schedule is gone; the new time is within 15 minutes: the delay queue.
    assert!(
        rig.get_schedule(&name).await.is_none(),
        "the old schedule is deleted"
    );
    assert!(rig.schedule_names().await.is_empty());
    assert_eq!(rig.delay_queue_depth().await, (0, 1));

    pump_until(&rig, &f, Duration::from_secs(25), || {
        !receiver.arrivals_at("/moved").is_empty()
    })
    .await;
    let lateness = receiver.arrivals_at("/moved")[0].wall - new;
    println!(
        "moved task: delivered {} ms after its new run_at",
        lateness.num_milliseconds()
    );
    assert!(
        (0..=1_000).contains(&lateness.num_milliseconds()),
        "delivered {lateness} after the new run_at"
    );
    let calls = eventually(Duration::from_secs(5), || async {
        let c = recorder.function_calls_for(&id).await;
        (c.len() >= 9).then_some(c)
    })
    .await
    .unwrap_or_default();
    println!("AWS calls, task moved: {} {calls:?}", calls.len());
    assert_eq!(
        calls,
        [
            "PutItem",
            "CreateSchedule",
            // Bob's PATCH: read, not his, 404.
            "GetItem",
            // Alice's: read, write, the old schedule removed, the new time armed.
            "GetItem",
            "PutItem",
            "DeleteSchedule",
            "SendMessage",
            "UpdateItem",
            "PutItem"
        ]
    );

    // The old schedule's wake-up, had its deletion failed: it would hop onto the delay queue
    // and arrive at the old time. A cold start whose clock reads the old time gets it.
    f.stop().await;
    let f = start_clocked_at(&rig, old).await;
    let batch = json!({"Records": [{"messageId": "stale-1", "body": old_input.to_string(), "eventSource": "aws:sqs"}]});
    assert_eq!(
        f.invoke(&batch).await.unwrap(),
        json!({"batchItemFailures": []})
    );
    let mut plain = old_input.clone();
    plain.as_object_mut().unwrap().remove("due");
    assert_eq!(f.invoke(&plain).await.unwrap()["result"], "dropped");
    assert_eq!(receiver.arrivals_at("/moved").len(), 1, "delivered once");
    let (_, got) = call(&f, "GET", &path, None, Some(ALICE)).await;
    assert_eq!(got["status"], "completed");
    assert_eq!(got["attempts"].as_array().unwrap().len(), 1);
    f.stop().await;

    // /run: an hour ahead, due now.
    let f = Function::start(&rig.function_env(), None).await.unwrap();
    let other = created(&f, &create_body(&receiver.url("/run"), in_ms(3_600_000))).await;
    let (status, due) = call(
        &f,
        "POST",
        &format!("/tasks/{other}/run"),
        None,
        Some(ALICE),
    )
    .await;
    assert_eq!(status, 200, "{due}");
    let due_at = parse_time(due["run_at"].as_str().unwrap());
    assert!(rig.get_schedule(&format!("{other}-1")).await.is_none());
    pump_until(&rig, &f, Duration::from_secs(15), || {
        !receiver.arrivals_at("/run").is_empty()
    })
    .await;
    let lateness = receiver.arrivals_at("/run")[0].wall - due_at;
    println!(
        "run now: delivered {} ms after",
        lateness.num_milliseconds()
    );
    assert!(
        (0..=1_500).contains(&lateness.num_milliseconds()),
        "{lateness}"
    );
    let (status, _) = call(
        &f,
        "POST",
        &format!("/tasks/{other}/run"),
        None,
        Some(ALICE),
    )
    .await;
    assert_eq!(status, 409, "completed: no longer scheduled");
    f.stop().await;
}

/// An `every` schedule on the AWS host: each occurrence's claim writes the next one in the
/// same DynamoDB transaction and arms it (the delay queue) before the webhook is called, so
/// occurrences arrive one after another through the same carriers as tasks, each after its
/// instant, none twice. Counts the AWS calls per occurrence and reports lateness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: make test-aws"]
async fn an_every_schedule_delivers_each_occurrence_once_after_its_instant() {
    const OCCURRENCES: usize = 4;
    let rig = AwsRig::create().await;
    let recorder = Recorder::start(&rig.endpoint).await;
    let receiver = Receiver::start().await;
    receiver.script("/tick", [], Reply::ok());
    let f = Function::start(&rig.function_env(), None).await.unwrap();

    let body = json!({
        "every": "3s",
        "task": {"action": "webhook", "payload": {"url": receiver.url("/tick"), "method": "POST"}},
    });
    let (status, schedule) = call(&f, "POST", "/schedules", Some(&body), Some(ALICE)).await;
    assert_eq!(status, 201, "{schedule}");
    let sid = schedule["schedule_id"].as_str().unwrap().to_owned();
    pump_until(&rig, &f, Duration::from_secs(60), || {
        receiver.arrivals_at("/tick").len() >= OCCURRENCES
    })
    .await;
    let arrivals = receiver.arrivals_at("/tick");
    let delivered: Vec<String> = arrivals
        .iter()
        .map(|a| a.header("webhook-id").unwrap().to_owned())
        .collect();
    let n = delivered.len();
    let (status, listed) = call(
        &f,
        "GET",
        &format!("/tasks?schedule_id={sid}&limit=100"),
        None,
        Some(ALICE),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let tasks = listed["tasks"].as_array().unwrap();
    // Every call the function made for the schedule and its occurrences, up to the listing
    // (the last one, a Query): the create (one transaction, one SendMessage), then per
    // occurrence its claim (the plain claim refused, the schedule read, one transaction), the
    // next occurrence's SendMessage, and the record: five, the bound, asserted call
    // by call.
    let mut ids: Vec<&str> = vec![sid.as_str()];
    ids.extend(tasks.iter().map(|t| t["task_id"].as_str().unwrap()));
    let mut calls = recorder.function_calls_mentioning(&ids).await;
    assert_eq!(calls.pop().as_deref(), Some("Query"), "{calls:?}");
    let mut expected = vec!["TransactWriteItems", "SendMessage"];
    for _ in 0..n {
        expected.extend([
            "UpdateItem",
            "GetItem",
            "TransactWriteItems",
            "SendMessage",
            "PutItem",
        ]);
    }
    assert_eq!(calls, expected);
    assert_eq!(
        call(&f, "GET", &format!("/schedules/{sid}"), None, Some(BOB))
            .await
            .0,
        404,
        "another principal's schedule is not found"
    );
    let mut lateness_ms = Vec::new();
    for (i, id) in delivered.iter().enumerate() {
        let task = tasks
            .iter()
            .find(|t| t["task_id"] == id.as_str())
            .unwrap_or_else(|| panic!("occurrence {id} listed: {listed}"));
        assert_eq!(task["occurrence"]["schedule_id"], sid.as_str());
        let at = parse_time(task["run_at"].as_str().unwrap());
        let late = (arrivals[i].wall - at).num_milliseconds();
        assert!(
            late >= 0,
            "occurrence {i} arrived {late} ms before its instant"
        );
        lateness_ms.push(late);
    }
    let mut unique = delivered.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        n,
        "no occurrence delivered twice: {delivered:?}"
    );
    // The chain: each claimed occurrence wrote the next, one period later.
    let planned: Vec<_> = tasks
        .iter()
        .map(|t| parse_time(t["run_at"].as_str().unwrap()))
        .collect();
    for w in planned.windows(2) {
        assert_eq!(w[1] - w[0], TimeDelta::seconds(3), "{planned:?}");
    }
    assert_eq!(tasks.len(), n + 1, "the next occurrence is pending");
    let per_occurrence = (calls.len() - 2) as f64 / n as f64;
    lateness_ms.sort_unstable();
    let p99 = lateness_ms[(lateness_ms.len() * 99).div_ceil(100) - 1];
    println!(
        "every 3s schedule: {n} occurrences, lateness {lateness_ms:?} ms (p99 {p99} ms), \
         {} AWS calls, {per_occurrence} per occurrence: {calls:?}",
        calls.len()
    );
    assert!(p99 <= 1_000, "lateness p99 {p99} ms");
    // Deleted: its pending occurrence is cancelled, nothing more arrives.
    let (status, _) = call(
        &f,
        "DELETE",
        &format!("/schedules/{sid}"),
        None,
        Some(ALICE),
    )
    .await;
    assert_eq!(status, 200);
    let before = receiver.arrivals_at("/tick").len();
    rig.pump_delay_queue(&f, Duration::from_secs(4)).await;
    assert_eq!(
        receiver.arrivals_at("/tick").len(),
        before,
        "nothing after the delete"
    );
    f.stop().await;
}
