//! The paths that stalled or dropped a task (a failed arm after a create or a `/retry`, lost
//! wake-ups, unsent dead letters, sub-millisecond due times) and the sweeper that
//! recovers what any of them leaves behind. Each fault is injected on command by the fakes
//! below; the clock only moves when a test moves it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};

use super::*;
use crate::fakes::{ScriptedWebhook, command, create, wake};
use crate::ports::AllowAllTargets;
use crate::store::SqliteStore;

/// A clock that moves only when told to.
struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn advance(&self, by: TimeDelta) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A waker that fails while `down` is set, recording the arms that succeed.
#[derive(Default)]
struct Waker2 {
    down: AtomicBool,
    armed: Mutex<Vec<(WakeUp, DateTime<Utc>)>>,
}

#[async_trait]
impl Waker for Waker2 {
    async fn arm(&self, wake: WakeUp, at: DateTime<Utc>) -> Result<(), PortError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::Unavailable("waker down".into()));
        }
        self.armed.lock().unwrap().push((wake, at));
        Ok(())
    }
    async fn disarm(&self, _wake: WakeUp) -> Result<(), PortError> {
        Ok(())
    }
}

/// Dead letters that fail while `down` is set, recording the ones sent.
#[derive(Default)]
struct DeadLetters2 {
    down: AtomicBool,
    sent: Mutex<Vec<TaskId>>,
}

#[async_trait]
impl DeadLetters for DeadLetters2 {
    async fn send(&self, task: &Task) -> Result<(), PortError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::Unavailable("dead-letter queue down".into()));
        }
        self.sent.lock().unwrap().push(task.id);
        Ok(())
    }
}

/// Counts the metrics the recovery paths emit.
#[derive(Default)]
struct Counted {
    recovered: AtomicUsize,
    deferred: AtomicUsize,
}

impl Metrics for Counted {
    fn task_recovered(&self) {
        self.recovered.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_up_deferred(&self) {
        self.deferred.fetch_add(1, Ordering::SeqCst);
    }
}

/// A store whose next claims are refused with the task as stored, whatever the domain says
/// (a store that rounds differently from the domain, as DynamoDB did with sub-millisecond
/// due times).
struct RefusingStore {
    inner: SqliteStore,
    refuse: AtomicUsize,
}

#[async_trait]
impl TaskStore for RefusingStore {
    async fn create(&self, task: &Task) -> Result<CreateOutcome, PortError> {
        self.inner.create(task).await
    }
    async fn get(&self, id: TaskId) -> Result<Option<Task>, PortError> {
        self.inner.get(id).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Page, PortError> {
        self.inner.list(query).await
    }
    async fn claim(
        &self,
        id: TaskId,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, PortError> {
        if self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Ok(ClaimOutcome::Rejected(self.inner.get(id).await?));
        }
        self.inner.claim(id, attempt, now).await
    }
    async fn update(&self, task: &Task) -> Result<(), PortError> {
        self.inner.update(task).await
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    refusing: Arc<RefusingStore>,
    clock: Arc<ManualClock>,
    waker: Arc<Waker2>,
    webhook: Arc<ScriptedWebhook>,
    dead_letters: Arc<DeadLetters2>,
    metrics: Arc<Counted>,
    scheduler: Scheduler,
}

/// An instant with sub-millisecond digits, as a system clock has.
fn start() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000).unwrap() + TimeDelta::nanoseconds(456_789)
}

fn rig(webhook: ScriptedWebhook) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let refusing = Arc::new(RefusingStore {
        inner: store.clone(),
        refuse: AtomicUsize::new(0),
    });
    let clock = Arc::new(ManualClock(Mutex::new(start())));
    let waker = Arc::new(Waker2::default());
    let webhook = Arc::new(webhook);
    let dead_letters = Arc::new(DeadLetters2::default());
    let metrics = Arc::new(Counted::default());
    let scheduler = Scheduler::new(Ports {
        store: refusing.clone(),
        waker: waker.clone(),
        webhook: webhook.clone(),
        clock: clock.clone(),
        dead_letters: dead_letters.clone(),
        metrics: metrics.clone(),
        targets: Arc::new(AllowAllTargets),
    });
    Rig {
        _dir: dir,
        store,
        refusing,
        clock,
        waker,
        webhook,
        dead_letters,
        metrics,
        scheduler,
    }
}

impl Rig {
    /// One sweep at the rig's clock.
    async fn sweep(&self) -> Recovered {
        self.scheduler
            .recover(&self.store, self.clock.now())
            .await
            .unwrap()
    }
}

fn alice() -> Owner {
    Owner::parse("alice").unwrap()
}

fn armed(rig: &Rig) -> Vec<(WakeUp, DateTime<Utc>)> {
    rig.waker.armed.lock().unwrap().clone()
}

/// Create: the task is written, then arming its wake-up fails. The client is told 201 (the
/// task exists and the sweeper will arm it), never "nothing was changed".
#[tokio::test]
async fn a_create_whose_arming_fails_is_created_and_left_to_the_sweeper() {
    let rig = rig(ScriptedWebhook::default());
    rig.waker.down.store(true, Ordering::SeqCst);
    let run_at = rig.clock.now() + TimeDelta::minutes(5);

    let created = rig.scheduler.create(command(run_at, 3)).await;

    let Ok(Created::New(t)) = created else {
        panic!("the task was written, so the create succeeded: {created:?}");
    };
    assert_eq!(rig.store.get(t.id).await.unwrap().as_ref(), Some(&t));
    assert_eq!(rig.metrics.deferred.load(Ordering::SeqCst), 1);
    assert!(armed(&rig).is_empty());
}

/// `/retry` writes the task `scheduled`, then arming fails: the retry succeeded.
#[tokio::test]
async fn a_retry_whose_arming_fails_succeeds_and_is_left_to_the_sweeper() {
    let rig = rig(ScriptedWebhook::answering(&[RetryHint::Permanent]));
    let t = create(&rig.scheduler, rig.clock.now(), 1).await;
    rig.clock.advance(TimeDelta::milliseconds(1));
    assert_eq!(
        rig.scheduler.fire(wake(&t)).await.unwrap(),
        Fired::Delivered(Next::Failed)
    );
    rig.waker.down.store(true, Ordering::SeqCst);

    let retried = rig.scheduler.retry(&alice(), t.id).await;

    let revived = retried.expect("the task was revived, so the retry succeeded");
    assert_eq!(revived.status, Status::Scheduled);
    assert_eq!(rig.store.get(t.id).await.unwrap().unwrap(), revived);
    assert_eq!(rig.metrics.deferred.load(Ordering::SeqCst), 1);
    // A second /retry is a conflict: the first one took effect.
    assert!(matches!(
        rig.scheduler.retry(&alice(), t.id).await,
        Err(AppError::Conflict(_))
    ));
}

/// Dead letters: the task is written `failed`, then sending its dead letter fails. The redelivered
/// wake-up sends it.
#[tokio::test]
async fn a_dead_letter_that_failed_to_send_is_sent_by_the_redelivered_wake_up() {
    let rig = rig(ScriptedWebhook::answering(&[RetryHint::Permanent]));
    let t = create(&rig.scheduler, rig.clock.now(), 1).await;
    rig.clock.advance(TimeDelta::milliseconds(1));
    rig.dead_letters.down.store(true, Ordering::SeqCst);
    assert!(rig.scheduler.fire(wake(&t)).await.is_err());
    assert!(rig.dead_letters.sent.lock().unwrap().is_empty());
    rig.dead_letters.down.store(false, Ordering::SeqCst);

    // The invocation failed, so the wake-up comes again (SQS, Lambda's retry).
    rig.scheduler.fire(wake(&t)).await.unwrap();

    assert_eq!(*rig.dead_letters.sent.lock().unwrap(), vec![t.id]);
    assert_eq!(rig.webhook.call_count(), 1, "delivered once");
    // Once sent, it is not sent again.
    rig.scheduler.fire(wake(&t)).await.unwrap();
    assert_eq!(rig.dead_letters.sent.lock().unwrap().len(), 1);
}

/// Sub-millisecond due times: `delay_seconds` and a clock with sub-millisecond digits made a due time the stores
/// round differently; the store refused a claim the domain allowed, and the wake-up was
/// dropped. Now it is armed again.
#[tokio::test]
async fn a_claim_the_store_refused_but_the_domain_allows_is_armed_again() {
    let rig = rig(ScriptedWebhook::default());
    let t = create(&rig.scheduler, rig.clock.now(), 3).await;
    rig.waker.armed.lock().unwrap().clear();
    rig.refusing.refuse.store(1, Ordering::SeqCst);

    let fired = rig.scheduler.fire(wake(&t)).await.unwrap();

    assert_eq!(fired, Fired::Rearmed);
    let again = armed(&rig);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].0, wake(&t));
    // Armed again shortly, neither at once (a loop) nor late.
    let wait = again[0].1 - rig.clock.now();
    assert!(
        wait > TimeDelta::zero() && wait <= TimeDelta::seconds(1),
        "{wait}"
    );
    assert_eq!(rig.webhook.call_count(), 0);
    // That wake-up delivers.
    rig.clock.advance(wait);
    assert_eq!(
        rig.scheduler.fire(wake(&t)).await.unwrap(),
        Fired::Delivered(Next::Completed)
    );
}

/// Sub-millisecond due times: due times are whole milliseconds wherever they come from.
#[tokio::test]
async fn due_times_are_whole_milliseconds() {
    let rig = rig(ScriptedWebhook::default());
    assert_ne!(rig.clock.now().timestamp_subsec_nanos() % 1_000_000, 0);
    let t = create(&rig.scheduler, rig.clock.now() + TimeDelta::seconds(60), 3).await;
    let stored = rig.store.get(t.id).await.unwrap().unwrap();
    for at in [stored.run_at, stored.next_attempt_at.unwrap()] {
        assert_eq!(at.timestamp_subsec_nanos() % 1_000_000, 0, "{at}");
    }
    assert_eq!(armed(&rig)[0].1, stored.run_at);
}

/// Lost wake-ups: a wake-up that is lost (a delay-queue message out of receives, a Scheduler
/// invocation given up on) leaves the task `scheduled` past its due time, or `running` past
/// its lease. The sweeper re-arms each once it is more than the grace late, not before, and
/// never delivers anything itself.
#[tokio::test]
async fn the_sweeper_rearms_lost_wake_ups_after_the_grace_and_never_delivers() {
    let rig = rig(ScriptedWebhook::default());
    let due = rig.clock.now() + TimeDelta::seconds(10);
    let lost = create(&rig.scheduler, due, 3).await;
    let claimed = create(&rig.scheduler, due, 3).await;
    let later = create(&rig.scheduler, due + TimeDelta::hours(1), 3).await;
    // `claimed` is claimed at its due time by a process that then dies.
    let ClaimOutcome::Claimed(running) = rig.store.claim(claimed.id, 1, due).await.unwrap() else {
        panic!("claimable at its due time")
    };
    let lease = running.lease_until.unwrap();
    rig.waker.armed.lock().unwrap().clear();

    // Within the grace of the due time: left to the wake-up on its way.
    rig.clock
        .advance(lost.run_at + SWEEP_GRACE - TimeDelta::milliseconds(1) - rig.clock.now());
    assert_eq!(rig.sweep().await, Recovered::default());
    assert!(armed(&rig).is_empty());
    // At the grace: the scheduled task is re-armed for its due time (the lease has not
    // expired yet).
    rig.clock.advance(TimeDelta::milliseconds(1));
    let swept = rig.sweep().await;
    assert_eq!(swept.rearmed, 1, "{swept:?}");
    assert_eq!(armed(&rig), vec![(wake(&lost), lost.run_at)]);
    // Past the lease and the grace: the running attempt is re-armed for its lease end, so
    // that it is re-claimed.
    rig.waker.armed.lock().unwrap().clear();
    rig.clock.advance(lease + SWEEP_GRACE - rig.clock.now());
    let swept = rig.sweep().await;
    let mut again = armed(&rig);
    again.sort();
    let mut expected = vec![(wake(&lost), lost.run_at), (wake(&running), lease)];
    expected.sort();
    assert_eq!((swept.rearmed, again), (2, expected));
    assert_eq!(rig.metrics.recovered.load(Ordering::SeqCst), 3);
    assert_eq!(rig.webhook.call_count(), 0, "the sweeper never delivers");
    // The re-armed wake-ups deliver each task once; then nothing is left to sweep.
    for t in [&lost, &running] {
        assert!(matches!(
            rig.scheduler.fire(wake(t)).await.unwrap(),
            Fired::Delivered(Next::Completed)
        ));
    }
    assert_eq!(rig.webhook.call_count(), 2);
    rig.waker.armed.lock().unwrap().clear();
    assert_eq!(rig.sweep().await, Recovered::default());
    assert!(armed(&rig).is_empty());
    assert_eq!(
        rig.store.get(later.id).await.unwrap().unwrap().status,
        Status::Scheduled
    );
}

/// Dead letters, through the sweeper: a dead letter whose send failed, with no wake-up coming again,
/// is sent by the sweep after the grace, once.
#[tokio::test]
async fn the_sweeper_sends_a_dead_letter_whose_send_failed() {
    let rig = rig(ScriptedWebhook::answering(&[RetryHint::Permanent]));
    let t = create(&rig.scheduler, rig.clock.now(), 1).await;
    rig.clock.advance(TimeDelta::milliseconds(1));
    rig.dead_letters.down.store(true, Ordering::SeqCst);
    assert!(rig.scheduler.fire(wake(&t)).await.is_err());
    let failed_at = rig.clock.now();
    // Still down at the first sweep past the grace: counted as failed, kept for the next.
    rig.clock.advance(SWEEP_GRACE + TimeDelta::milliseconds(1));
    let swept = rig.sweep().await;
    assert_eq!(swept.failed, 1, "{swept:?}");
    rig.dead_letters.down.store(false, Ordering::SeqCst);
    let swept = rig.sweep().await;
    assert_eq!(swept.dead_letters, 1, "{swept:?}");
    assert_eq!(*rig.dead_letters.sent.lock().unwrap(), vec![t.id]);
    let stored = rig.store.get(t.id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Failed);
    assert!(stored.dead_letter.as_ref().unwrap().sent);
    assert!(stored.pending_at().is_none());
    assert!(rig.clock.now() - failed_at <= SWEEP_GRACE + TimeDelta::milliseconds(1));
    // Sent once: the next sweep finds nothing.
    assert_eq!(rig.sweep().await, Recovered::default());
    assert_eq!(rig.dead_letters.sent.lock().unwrap().len(), 1);
    assert_eq!(rig.webhook.call_count(), 1);
}

/// A task just written with a due time long past is its writer's, not the sweeper's: no
/// re-arm (and no `TasksRecovered`) for a create racing a sweep.
#[tokio::test]
async fn a_task_written_within_the_grace_is_left_to_its_writer() {
    let rig = rig(ScriptedWebhook::default());
    create(&rig.scheduler, rig.clock.now() - TimeDelta::hours(1), 3).await;
    rig.waker.armed.lock().unwrap().clear();
    rig.clock.advance(SWEEP_GRACE - TimeDelta::milliseconds(1));
    assert_eq!(rig.sweep().await, Recovered::default());
    rig.clock.advance(TimeDelta::milliseconds(1));
    assert_eq!(rig.sweep().await.rearmed, 1);
}

/// Create and `/retry` over HTTP: the answers are 201 and 200, never the 500 that says "nothing was
/// changed".
#[tokio::test]
async fn over_http_a_write_whose_arming_failed_is_answered_as_done() {
    use tower::ServiceExt;
    let rig = rig(ScriptedWebhook::answering(&[RetryHint::Permanent]));
    let app = crate::api::router(rig.scheduler.clone(), crate::api::Auth::Open);
    rig.waker.down.store(true, Ordering::SeqCst);
    let send = |method: &str, uri: String, body: String| {
        let app = app.clone();
        let request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        async move {
            let resp = app.oneshot(request).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            )
        }
    };
    let body = serde_json::json!({"action": "webhook",
        "payload": {"url": "https://example.com/h"}, "delay_seconds": 0});
    let (status, task) = send("POST", "/tasks".into(), body.to_string()).await;
    assert_eq!(status, 201, "{task}");
    let id = TaskId::parse(task["task_id"].as_str().unwrap()).unwrap();
    assert!(rig.store.get(id).await.unwrap().is_some());
    // Delivered by the sweeper's wake-up, it fails for good; /retry's arming fails too.
    rig.waker.down.store(false, Ordering::SeqCst);
    rig.clock.advance(SWEEP_GRACE + TimeDelta::seconds(1));
    let swept = rig.sweep().await;
    assert_eq!(swept.rearmed, 1);
    let (wake, _) = armed(&rig)[0];
    assert_eq!(
        rig.scheduler.fire(wake).await.unwrap(),
        Fired::Delivered(Next::Failed)
    );
    rig.waker.down.store(true, Ordering::SeqCst);
    let (status, task) = send("POST", format!("/tasks/{id}/retry"), String::new()).await;
    assert_eq!(
        (status, task["status"].as_str()),
        (200, Some("scheduled")),
        "{task}"
    );
    assert_eq!(rig.metrics.deferred.load(Ordering::SeqCst), 2);
}

/// The sweeper's backoff: a task whose wake-ups keep getting lost (queued behind a consumer
/// that cannot keep up, or dropped) is re-armed 30, 60, 120, 240, 480 s apart, not on every
/// sweep, which would add one more wake-up per stalled task to the backlog each time. An arm
/// that fails is not backed off. Once the task moves on, its new pending instant is swept
/// after the plain grace.
#[tokio::test]
async fn the_sweeper_backs_off_a_task_it_rearmed_until_the_task_moves() {
    let rig = rig(ScriptedWebhook::default());
    let t0 = rig.clock.now();
    let t = create(&rig.scheduler, t0 + TimeDelta::seconds(10), 3).await;
    let step = TimeDelta::seconds(5);
    // Sweeps every 5 s up to `t0 + until`; the offsets (s) of the sweeps that re-armed.
    let sweep_until = |until: i64| {
        let rig = &rig;
        async move {
            let mut at = Vec::new();
            while rig.clock.now() - t0 < TimeDelta::seconds(until) {
                rig.clock.advance(step);
                let swept = rig.sweep().await;
                assert_eq!(swept.failed, 0, "{swept:?}");
                if swept.rearmed > 0 {
                    at.push((rig.clock.now() - t0).num_seconds());
                }
            }
            at
        }
    };
    // Due at 10 s: re-armed at 10 + 30, then 30, 60, 120, 240, 480 s apart.
    assert_eq!(sweep_until(1000).await, vec![40, 70, 130, 250, 490, 970]);
    let noted = rig.store.get(t.id).await.unwrap().unwrap().rearmed.unwrap();
    assert_eq!((noted.count, noted.pending_at), (6, t.run_at));
    // The gap stops doubling at 15 minutes (+ the grace): next due at 970 + 930 s. The arm
    // fails then; the next sweep tries again.
    rig.clock
        .advance(t0 + TimeDelta::seconds(1900) - step - rig.clock.now());
    assert_eq!(rig.sweep().await, Recovered::default());
    rig.clock.advance(step);
    rig.waker.down.store(true, Ordering::SeqCst);
    assert_eq!(rig.sweep().await.failed, 1);
    rig.waker.down.store(false, Ordering::SeqCst);
    assert_eq!(sweep_until(1905).await, vec![1905]);
    assert_eq!(rig.webhook.call_count(), 0, "the sweeper never delivers");
    // The task moves on: claimed by a process that dies. Its lease end is swept after the
    // grace, with no backoff left from before.
    let ClaimOutcome::Claimed(running) = rig.store.claim(t.id, 1, rig.clock.now()).await.unwrap()
    else {
        panic!("claimable")
    };
    let first = running.lease_until.unwrap() + SWEEP_GRACE - t0;
    let first = (first.num_milliseconds() + 4_999) / 5_000 * 5;
    assert_eq!(sweep_until(first).await, vec![first]);
    assert_eq!(
        rig.store
            .get(t.id)
            .await
            .unwrap()
            .unwrap()
            .rearmed
            .unwrap()
            .count,
        1
    );
}

/// `/retry` racing an unsent dead letter: the task failed and sending its dead letter failed,
/// so the dead letter waits for the wake-up's redelivery or the sweeper. A `/retry` in that
/// window sends it first (reviving the task clears it); if that send fails too, the retry
/// changes nothing. Each failure keeps exactly one dead letter.
#[tokio::test]
async fn a_retry_sends_the_dead_letter_its_failure_has_not_sent_yet() {
    let rig = rig(ScriptedWebhook::answering(&[
        RetryHint::Permanent,
        RetryHint::Success,
    ]));
    let t = create(&rig.scheduler, rig.clock.now(), 1).await;
    rig.clock.advance(TimeDelta::milliseconds(1));
    rig.dead_letters.down.store(true, Ordering::SeqCst);
    assert!(rig.scheduler.fire(wake(&t)).await.is_err());
    let failed = rig.store.get(t.id).await.unwrap().unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert!(!failed.dead_letter.as_ref().unwrap().sent);
    // The queue is still down: the retry is refused and nothing changed.
    let refused = rig.scheduler.retry(&alice(), t.id).await;
    assert!(
        matches!(refused, Err(AppError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(rig.store.get(t.id).await.unwrap().unwrap(), failed);
    // Up again: the dead letter goes first, then the task is revived and delivered.
    rig.dead_letters.down.store(false, Ordering::SeqCst);
    let revived = rig.scheduler.retry(&alice(), t.id).await.unwrap();
    assert_eq!(revived.status, Status::Scheduled);
    assert_eq!(*rig.dead_letters.sent.lock().unwrap(), vec![t.id]);
    assert_eq!(
        rig.scheduler.fire(wake(&revived)).await.unwrap(),
        Fired::Delivered(Next::Completed)
    );
    rig.clock.advance(SWEEP_GRACE + TimeDelta::seconds(1));
    assert_eq!(rig.sweep().await, Recovered::default());
    assert_eq!(rig.dead_letters.sent.lock().unwrap().len(), 1);
}
