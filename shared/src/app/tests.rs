use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};

use super::*;
use crate::domain::{
    Action, HttpMethod, RetryPolicy, TimeoutSeconds, WebhookAction, WebhookHeaders, WebhookUrl,
};
use crate::fakes::{BlockHost, Rig, ScriptedWebhook, TokioClock, wake};
use crate::ports::{AllowAllTargets, SystemClock};

fn owner(name: &str) -> Owner {
    Owner::parse(name).unwrap()
}

fn new_task(url: &str, run_at: DateTime<Utc>, max_attempts: i64) -> NewTask {
    NewTask {
        action: Action::Webhook(WebhookAction {
            url: WebhookUrl::parse(url).unwrap(),
            method: HttpMethod::Post,
            headers: WebhookHeaders::default(),
            data: Some(serde_json::json!({"n": 1})),
        }),
        run_at,
        retry: RetryPolicy::parse(Some(max_attempts), Some(1), Some(1)).unwrap(),
        timeout: TimeoutSeconds::default(),
        local: None,
    }
}

async fn create(rig: &Rig, run_at: DateTime<Utc>, max_attempts: i64) -> Task {
    let cmd = CreateCommand {
        owner: owner("alice"),
        task: new_task("https://example.com/h", run_at, max_attempts),
        idempotency: None,
    };
    match rig.scheduler.create(cmd).await.unwrap() {
        Created::New(t) => t,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn create_stores_and_arms_at_run_at() {
    let rig = Rig::new(ScriptedWebhook::default());
    let at = Utc::now() + TimeDelta::hours(1);
    let t = create(&rig, at, 3).await;
    assert_eq!(
        rig.last_armed(),
        Some((
            WakeUp {
                task_id: t.id,
                attempt: 1
            },
            t.run_at
        ))
    );
    assert_eq!(rig.scheduler.get(&owner("alice"), t.id).await.unwrap(), t);
    // Another owner cannot see it.
    assert!(matches!(
        rig.scheduler.get(&owner("bob"), t.id).await,
        Err(AppError::NotFound)
    ));
}

#[tokio::test]
async fn a_duplicate_wakeup_never_delivers_twice() {
    let rig = Rig::new(ScriptedWebhook::default());
    let t = create(&rig, Utc::now() - TimeDelta::seconds(1), 3).await;
    assert_eq!(
        rig.scheduler.fire(wake(&t)).await.unwrap(),
        Fired::Delivered(Next::Completed)
    );
    assert_eq!(rig.scheduler.fire(wake(&t)).await.unwrap(), Fired::Dropped);
    assert_eq!(rig.webhook.call_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_wakeups_of_one_attempt_deliver_once() {
    let (rig, clock) = paused_rig();
    // The winner holds its delivery while the others try to claim.
    *rig.webhook.hold.lock().unwrap() = Duration::from_millis(50);
    let t = create(&rig, clock.now() - TimeDelta::seconds(1), 3).await;
    let fires = (0..8).map(|_| rig.scheduler.fire(wake(&t)));
    let results = futures::future::join_all(fires).await;
    let delivered = results
        .iter()
        .filter(|r| matches!(r, Ok(Fired::Delivered(_))))
        .count();
    assert_eq!((delivered, rig.webhook.call_count()), (1, 1));
    let done = rig.scheduler.get(&owner("alice"), t.id).await.unwrap();
    assert_eq!((done.status, done.attempts.len()), (Status::Completed, 1));
}

#[tokio::test]
async fn an_early_wakeup_rearms_for_the_due_time() {
    let rig = Rig::new(ScriptedWebhook::default());
    let t = create(&rig, Utc::now() + TimeDelta::seconds(90), 3).await;
    assert_eq!(rig.scheduler.fire(wake(&t)).await.unwrap(), Fired::Rearmed);
    assert_eq!(rig.last_armed(), Some((wake(&t), t.run_at)));
    assert_eq!(rig.webhook.call_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_arm_the_next_attempt_then_dead_letter() {
    // The receiver asks for 30 s; the policy caps every wait at 1 s: the retry is due exactly
    // 1 s after the failure, neither sooner (a zero or past backoff) nor later.
    let retry = RetryHint::Retryable {
        after: Some(Duration::from_secs(30)),
    };
    let (rig, clock) = paused_rig_with(ScriptedWebhook::answering(&[retry, retry]));
    let t = create(&rig, clock.now(), 2).await;
    let failed_at = clock.now();
    assert!(matches!(
        rig.scheduler.fire(wake(&t)).await.unwrap(),
        Fired::Delivered(Next::Retry { .. })
    ));
    let (w, at) = rig.last_armed().unwrap();
    assert_eq!(
        w,
        WakeUp {
            task_id: t.id,
            attempt: 2
        }
    );
    assert_eq!(
        at,
        failed_at + TimeDelta::seconds(1),
        "backoff capped at 1 s"
    );
    // The stale wake-up for attempt 1 arriving again re-arms attempt 2 (lost-arm repair) but
    // delivers nothing.
    let before = rig.webhook.call_count();
    assert_eq!(
        rig.scheduler
            .fire(WakeUp {
                task_id: t.id,
                attempt: 1
            })
            .await
            .unwrap(),
        Fired::Rearmed
    );
    assert_eq!(rig.webhook.call_count(), before);
    // A millisecond before the backoff ends, attempt 2 is not due: it is re-armed, not sent.
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(rig.scheduler.fire(w).await.unwrap(), Fired::Rearmed);
    assert_eq!(rig.last_armed(), Some((w, at)));
    assert_eq!(rig.webhook.call_count(), before);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        rig.scheduler.fire(w).await.unwrap(),
        Fired::Delivered(Next::Failed)
    );
    let failed = rig.scheduler.get(&owner("alice"), t.id).await.unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(rig.dead_letters.0.lock().unwrap().len(), 1);
    // /retry re-arms it now with a fresh budget.
    let again = rig.scheduler.retry(&owner("alice"), t.id).await.unwrap();
    assert_eq!(
        (again.status, again.attempt_number()),
        (Status::Scheduled, 3)
    );
    assert_eq!(
        rig.last_armed().unwrap(),
        (
            WakeUp {
                task_id: t.id,
                attempt: 3
            },
            clock.now()
        )
    );
    assert!(matches!(
        rig.scheduler.retry(&owner("alice"), t.id).await,
        Err(AppError::Conflict(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_task_is_disarmed_and_never_delivered() {
    let (rig, clock) = paused_rig();
    let t = create(&rig, clock.now() + TimeDelta::milliseconds(10), 3).await;
    let c = rig.scheduler.cancel(&owner("alice"), t.id).await.unwrap();
    assert_eq!(c.status, Status::Cancelled);
    assert_eq!(rig.waker.disarmed.lock().unwrap().as_slice(), &[wake(&t)]);
    // Past run_at, a wake-up that still arrives finds the task cancelled.
    tokio::time::advance(Duration::from_millis(20)).await;
    assert_eq!(rig.scheduler.fire(wake(&t)).await.unwrap(), Fired::Dropped);
    assert_eq!(rig.webhook.call_count(), 0);
    assert!(matches!(
        rig.scheduler.cancel(&owner("alice"), t.id).await,
        Err(AppError::Conflict(_))
    ));
    assert!(matches!(
        rig.scheduler.cancel(&owner("bob"), t.id).await,
        Err(AppError::NotFound)
    ));
}

#[tokio::test]
async fn idempotent_create_returns_the_first_task_and_rearms_it() {
    let rig = Rig::new(ScriptedWebhook::default());
    let key = IdempotencyKey::parse("order-1").unwrap();
    let cmd = |hash: &str, who: &str| CreateCommand {
        owner: owner(who),
        task: new_task("https://example.com/h", Utc::now() + TimeDelta::hours(1), 3),
        idempotency: Some((key.clone(), hash.to_owned())),
    };
    let Created::New(first) = rig.scheduler.create(cmd("h1", "alice")).await.unwrap() else {
        panic!()
    };
    let arms = rig.waker.armed.lock().unwrap().len();
    let Created::Existing(again) = rig.scheduler.create(cmd("h1", "alice")).await.unwrap() else {
        panic!()
    };
    assert_eq!(again.id, first.id);
    assert_eq!(
        rig.waker.armed.lock().unwrap().len(),
        arms + 1,
        "the repeat re-arms (idempotent)"
    );
    assert!(matches!(
        rig.scheduler.create(cmd("h2", "alice")).await,
        Err(AppError::Conflict(_))
    ));
    // Keys are scoped per owner.
    assert!(
        matches!(rig.scheduler.create(cmd("h1", "bob")).await.unwrap(), Created::New(t) if t.id != first.id)
    );
}

#[tokio::test(start_paused = true)]
async fn a_claim_abandoned_by_a_crash_is_recovered_after_its_lease() {
    let (rig, clock) = paused_rig();
    let t = create(&rig, clock.now(), 3).await;
    // A process claims attempt 1 and dies before recording.
    let crate::ports::ClaimOutcome::Claimed(running) =
        rig.store.claim(t.id, 1, clock.now()).await.unwrap()
    else {
        panic!()
    };
    let lease_until = running.lease_until.unwrap();
    assert_eq!(
        lease_until,
        clock.now() + TimeDelta::seconds(10) + Task::LEASE_GRACE,
        "the webhook timeout plus the grace"
    );
    // While the lease holds, up to its last millisecond, the wake-up is a duplicate.
    assert_eq!(rig.scheduler.fire(wake(&t)).await.unwrap(), Fired::Dropped);
    let wait = (lease_until - clock.now()).to_std().unwrap();
    tokio::time::advance(wait - Duration::from_millis(1)).await;
    assert_eq!(rig.scheduler.fire(wake(&t)).await.unwrap(), Fired::Dropped);
    assert_eq!(rig.webhook.call_count(), 0);
    // Once the clock reaches the lease's end, the attempt is re-claimed and delivered.
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(clock.now(), lease_until);
    assert_eq!(
        rig.scheduler.fire(wake(&t)).await.unwrap(),
        Fired::Delivered(Next::Completed)
    );
    assert_eq!(rig.webhook.call_count(), 1);
    let done = rig.scheduler.get(&owner("alice"), t.id).await.unwrap();
    assert_eq!((done.status, done.attempts.len()), (Status::Completed, 1));
}

#[tokio::test]
async fn target_policy_is_checked_at_creation() {
    let rig = Rig::with(
        ScriptedWebhook::default(),
        Arc::new(BlockHost),
        Arc::new(SystemClock),
    );
    let cmd = CreateCommand {
        owner: owner("alice"),
        task: new_task("https://blocked.example/x", Utc::now(), 3),
        idempotency: None,
    };
    match rig.scheduler.create(cmd).await {
        Err(AppError::Invalid(e)) => assert_eq!(e.field, "payload.url"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.store.count(None).await.unwrap(), 0, "nothing stored");
    assert!(rig.waker.armed.lock().unwrap().is_empty(), "nothing armed");
}

#[tokio::test]
async fn target_policy_is_checked_again_at_delivery() {
    // Accepted under one policy, delivered under a stricter one (e.g. after a config change).
    let rig = Rig::with(
        ScriptedWebhook::default(),
        Arc::new(AllowAllTargets),
        Arc::new(SystemClock),
    );
    let cmd = CreateCommand {
        owner: owner("alice"),
        task: new_task("https://blocked.example/x", Utc::now(), 3),
        idempotency: None,
    };
    let Created::New(t) = rig.scheduler.create(cmd).await.unwrap() else {
        panic!()
    };
    let strict = Rig::with(
        ScriptedWebhook::default(),
        Arc::new(BlockHost),
        Arc::new(SystemClock),
    );
    strict.store.create(&t).await.unwrap();
    assert_eq!(
        strict.scheduler.fire(wake(&t)).await.unwrap(),
        Fired::Delivered(Next::Failed)
    );
    assert_eq!(
        strict.webhook.call_count(),
        0,
        "no request to a refused target"
    );
    let failed = strict.scheduler.get(&owner("alice"), t.id).await.unwrap();
    assert!(
        failed.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("target refused")
    );
}

#[tokio::test]
async fn an_early_wakeup_that_knows_its_due_time_rearms_without_the_store() {
    let rig = Rig::new(ScriptedWebhook::default());
    // No such task in the store: had the store been asked, the wake-up would be dropped.
    let wake = WakeUp {
        task_id: TaskId::generate(),
        attempt: 1,
    };
    let due = Utc::now() + TimeDelta::seconds(75);
    assert_eq!(
        rig.scheduler.fire_due(wake, Some(due)).await.unwrap(),
        Fired::Rearmed
    );
    assert_eq!(rig.last_armed(), Some((wake, due)));
    // Once due (or without a due time) it is an ordinary wake-up.
    assert_eq!(
        rig.scheduler
            .fire_due(wake, Some(Utc::now()))
            .await
            .unwrap(),
        Fired::Dropped
    );
    assert_eq!(
        rig.scheduler.fire_due(wake, None).await.unwrap(),
        Fired::Dropped
    );
}

/// A rig on Tokio's clock, for the tests that run with it paused. The clock starts on a
/// whole second, so times it gives survive the store's millisecond precision unchanged.
fn paused_rig() -> (Rig, Arc<TokioClock>) {
    paused_rig_with(ScriptedWebhook::default())
}

fn paused_rig_with(webhook: ScriptedWebhook) -> (Rig, Arc<TokioClock>) {
    let start = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let clock = Arc::new(TokioClock::starting_at(start));
    let rig = Rig::with(webhook, Arc::new(AllowAllTargets), clock.clone());
    (rig, clock)
}

#[tokio::test(start_paused = true)]
async fn a_wakeup_less_than_a_second_early_waits_and_fires_on_time() {
    let (rig, clock) = paused_rig();
    let started = tokio::time::Instant::now();
    let t = create(&rig, clock.now() + TimeDelta::seconds(10), 3).await;
    // A delay-queue message (whole seconds, rounded down) arrives 0.6 s before run_at.
    tokio::time::advance(Duration::from_millis(9_400)).await;
    assert!(matches!(
        rig.scheduler
            .fire_due(wake(&t), Some(t.run_at))
            .await
            .unwrap(),
        Fired::Delivered(Next::Completed)
    ));
    // Delivered on time: neither before run_at nor after it.
    assert_eq!(
        rig.webhook.calls.lock().unwrap().as_slice(),
        &[(wake(&t), t.run_at)]
    );
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    // Nothing was re-armed: the first arm was the create's.
    assert_eq!(rig.waker.armed.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_wakeup_more_than_a_second_early_rearms_without_waiting() {
    let (rig, clock) = paused_rig();
    let t = create(&rig, clock.now() + TimeDelta::seconds(10), 3).await;
    tokio::time::advance(Duration::from_millis(8_900)).await;
    let before = tokio::time::Instant::now();
    assert_eq!(
        rig.scheduler
            .fire_due(wake(&t), Some(t.run_at))
            .await
            .unwrap(),
        Fired::Rearmed
    );
    assert_eq!(before.elapsed(), Duration::ZERO, "it did not wait");
    assert_eq!(rig.last_armed(), Some((wake(&t), t.run_at)));
    assert_eq!(rig.webhook.call_count(), 0);
}
