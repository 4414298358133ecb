use super::*;
use testkit::sdk_config;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn wake(attempt: u32) -> WakeUp {
    WakeUp {
        task_id: TaskId::generate(),
        attempt,
    }
}

#[test]
fn near_wake_ups_go_to_the_delay_queue_rounded_down() {
    let now = t("2026-05-17T15:00:00Z");
    let w = wake(1);
    let q = |at: DateTime<Utc>| plan(w, at, now);
    assert_eq!(
        q(now - TimeDelta::hours(1)),
        Plan::Queue { delay_seconds: 0 }
    );
    assert_eq!(q(now), Plan::Queue { delay_seconds: 0 });
    // Whole seconds, rounded down: the message arrives up to a second early and
    // `Scheduler::fire_due` waits out the fraction (rounding up would make it late).
    assert_eq!(
        q(now + TimeDelta::milliseconds(1)),
        Plan::Queue { delay_seconds: 0 }
    );
    assert_eq!(
        q(now + TimeDelta::milliseconds(10_999)),
        Plan::Queue { delay_seconds: 10 }
    );
    assert_eq!(
        q(now + TimeDelta::milliseconds(899_999)),
        Plan::Queue { delay_seconds: 899 }
    );
    assert_eq!(
        q(now + TimeDelta::seconds(900)),
        Plan::Queue { delay_seconds: 900 }
    );
}

#[test]
fn later_wake_ups_get_a_schedule_two_minutes_early_to_the_minute() {
    let now = t("2026-05-17T15:00:00Z");
    let w = wake(3);
    let Plan::Schedule { name, expression } = plan(w, t("2026-05-17T17:00:42.5Z"), now) else {
        panic!("expected a schedule");
    };
    assert_eq!(name.as_str(), format!("{}-3", w.task_id));
    assert_eq!(expression.to_expression(), "at(2026-05-17T16:58:00)");
    // Just past the queue's reach.
    let Plan::Schedule { expression, .. } = plan(w, now + TimeDelta::seconds(901), now) else {
        panic!("expected a schedule");
    };
    assert_eq!(expression.to_expression(), "at(2026-05-17T15:13:00)");
    assert!(expression.at > now);
}

#[test]
fn names_and_expressions_are_checked_before_sending() {
    assert!(ScheduleName::parse("01JF3Q8R5V2Z6X4W9YH7K1M0NB-1").is_ok());
    assert!(ScheduleName::parse("a.b_c-d").is_ok());
    for bad in ["", "has space", "slash/no", "x#1", &"a".repeat(65)] {
        assert!(ScheduleName::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(
        AtExpression::parse("at(2026-05-17T16:58:00)").unwrap().at,
        t("2026-05-17T16:58:00Z")
    );
    for bad in [
        "at(2026-05-17T16:58)",
        "at(2026-05-17 16:58:00)",
        "at(2026-02-30T16:58:00)",
        "rate(5 minutes)",
        "at(2026-05-17T16:58:00Z)",
        "at(2026-05-17T16:58:00",
    ] {
        assert!(AtExpression::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn wake_message_shape() {
    let w = wake(2);
    let json: serde_json::Value = serde_json::from_str(&WakeMessage::from(w).to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "wake", "task_id": w.task_id.to_string(), "attempt": 2})
    );
}

struct Fixed(DateTime<Utc>);
impl Clock for Fixed {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

struct Rig {
    waker: AwsWaker,
    sqs: aws_sdk_sqs::Client,
    scheduler: aws_sdk_scheduler::Client,
    queue_url: String,
    group: String,
}

const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:task-scheduler";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/scheduler-invoke";
const DLQ_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:task-scheduler-dlq";

async fn rig(now: DateTime<Utc>) -> Rig {
    let config = sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let scheduler = aws_sdk_scheduler::Client::new(&config);
    let queue_url = testkit::create_queue(&sqs, "delay").await;
    let group = testkit::create_schedule_group(&scheduler, "wakeups").await;
    let waker = AwsWaker::new(
        sqs.clone(),
        scheduler.clone(),
        Arc::new(Fixed(now)),
        AwsWakerConfig {
            delay_queue_url: queue_url.clone(),
            schedule_group: group.clone(),
            scheduler_role_arn: ROLE_ARN.into(),
            dlq_arn: DLQ_ARN.into(),
        },
    );
    waker.set_target_arn(FUNCTION_ARN);
    Rig {
        waker,
        sqs,
        scheduler,
        queue_url,
        group,
    }
}

#[tokio::test]
#[ignore = "needs moto: make test-aws"]
async fn a_later_wake_up_creates_exactly_this_schedule_and_cancel_deletes_it() {
    let now = Utc::now();
    let r = rig(now).await;
    let w = wake(1);
    let at = now + TimeDelta::hours(2);
    r.waker.arm(w, at).await.unwrap();
    // Arming again (a repeat create, a retried invocation) is not an error.
    r.waker.arm(w, at).await.unwrap();
    let name = format!("{}-1", w.task_id);
    let s = r
        .scheduler
        .get_schedule()
        .name(&name)
        .group_name(&r.group)
        .send()
        .await
        .unwrap();
    let expected_at = (at - TimeDelta::minutes(2))
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap();
    assert_eq!(
        s.schedule_expression(),
        Some(format!("at({})", expected_at.format("%Y-%m-%dT%H:%M:%S")).as_str())
    );
    assert_eq!(s.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        s.flexible_time_window().map(|w| w.mode().clone()),
        Some(FlexibleTimeWindowMode::Off)
    );
    assert_eq!(
        s.action_after_completion(),
        Some(&ActionAfterCompletion::Delete)
    );
    assert_eq!(s.group_name(), Some(r.group.as_str()));
    let target = s.target().unwrap();
    assert_eq!(target.arn(), FUNCTION_ARN);
    assert_eq!(target.role_arn(), ROLE_ARN);
    let input: serde_json::Value = serde_json::from_str(target.input().unwrap()).unwrap();
    // The due time rides along so the early firing re-arms without reading the table.
    assert_eq!(
        input,
        serde_json::json!({"kind": "wake", "task_id": w.task_id.to_string(), "attempt": 1, "due": at})
    );
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
        Some(DLQ_ARN)
    );
    // Nothing went to the queue.
    let msgs = r
        .sqs
        .receive_message()
        .queue_url(&r.queue_url)
        .send()
        .await
        .unwrap();
    assert!(msgs.messages().is_empty());

    r.waker.disarm(w).await.unwrap();
    let gone = r
        .scheduler
        .get_schedule()
        .name(&name)
        .group_name(&r.group)
        .send()
        .await;
    assert!(gone.is_err(), "the schedule is deleted");
    // Disarming again, or an attempt that never had a schedule, is fine.
    r.waker.disarm(w).await.unwrap();
    r.waker.disarm(wake(1)).await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto: make test-aws"]
async fn a_near_wake_up_is_a_delayed_queue_message() {
    let now = Utc::now();
    let r = rig(now).await;
    let w = wake(2);
    let due = now + TimeDelta::milliseconds(1_400);
    let armed = std::time::Instant::now();
    r.waker.arm(w, due).await.unwrap();
    let receive = || async {
        r.sqs
            .receive_message()
            .queue_url(&r.queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default()
    };
    assert!(receive().await.is_empty(), "delayed: not visible yet");
    // Poll until it shows, within a deadline. DelaySeconds is 1 (1.4 s rounded down): the
    // message shows after one second, and before two.
    let deadline = std::time::Duration::from_secs(5);
    let msgs = loop {
        let msgs = receive().await;
        if !msgs.is_empty() {
            break msgs;
        }
        assert!(armed.elapsed() < deadline, "not visible after {deadline:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let visible_after = armed.elapsed();
    assert!(
        (std::time::Duration::from_secs(1)..std::time::Duration::from_secs(2))
            .contains(&visible_after),
        "visible after {visible_after:?}"
    );
    assert_eq!(msgs.len(), 1);
    let body: WakeMessage = serde_json::from_str(msgs[0].body().unwrap()).unwrap();
    // The message knows its due time: it became visible after 1 s (DelaySeconds rounds
    // down), and the function waits out the remaining 0.4 s.
    assert_eq!(body, WakeMessage::due_at(w, due));
    // No schedule was created for it.
    let listed = r
        .scheduler
        .list_schedules()
        .group_name(&r.group)
        .send()
        .await
        .unwrap();
    assert!(listed.schedules().is_empty());
}

#[tokio::test]
async fn a_schedule_needs_the_target_arn() {
    let now = Utc::now();
    // Refused before any request: no emulator needed (port 9 on loopback, were one sent).
    let config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let waker = AwsWaker::new(
        aws_sdk_sqs::Client::new(&config),
        aws_sdk_scheduler::Client::new(&config),
        Arc::new(Fixed(now)),
        AwsWakerConfig {
            delay_queue_url: "unused".into(),
            schedule_group: "unused".into(),
            scheduler_role_arn: ROLE_ARN.into(),
            dlq_arn: DLQ_ARN.into(),
        },
    );
    let e = waker
        .arm(wake(1), now + TimeDelta::hours(1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ARN"), "{e}");
}

#[test]
fn the_schedule_target_is_the_unqualified_function_arn() {
    use super::unqualified;
    let f = "arn:aws:lambda:us-east-1:123456789012:function:task-scheduler";
    assert_eq!(unqualified(f), f);
    assert_eq!(unqualified(&format!("{f}:live")), f);
    assert_eq!(unqualified(&format!("{f}:42")), f);
    assert_eq!(unqualified("function-arn"), "function-arn");
}

#[test]
fn the_idempotency_token_is_the_attempt_and_its_due_time() {
    let w = WakeUp {
        task_id: TaskId::parse("7ZZZZZZZZZZZZZZZZZZZZZZZZZ").unwrap(),
        attempt: u32::MAX,
    };
    let name = ScheduleName::of(w);
    let due = t("9999-12-31T23:59:59.999Z");
    let token = client_token(&name, due);
    // The longest one: within Scheduler's 64 printable characters.
    assert_eq!(token, format!("{}.253402300799999", name.as_str()));
    assert!(token.len() <= 64 && token.chars().all(|c| (' '..='~').contains(&c)));
    // The same attempt armed again for the same time: the same request. Moved: another.
    assert_eq!(client_token(&name, due), token);
    assert_ne!(client_token(&name, due - TimeDelta::hours(1)), token);
}
