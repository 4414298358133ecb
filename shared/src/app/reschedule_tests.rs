//! `PATCH /tasks/{id}` and `/run` as use cases: the task moves, its wake-up is replaced, a
//! wake-up for the old time never delivers early or twice, and an arm that fails after the
//! write is left to the sweeper. Time is tokio's paused clock.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::TimeDelta;

use super::*;
use crate::domain::LocalRunAt;
use crate::fakes::{RecordingDeadLetters, ScriptedWebhook, TokioClock, create, wake};
use crate::ports::AllowAllTargets;
use crate::store::SqliteStore;

/// A waker whose arms and disarms fail while told to, recording what it was asked.
#[derive(Default)]
struct Waker3 {
    arm_down: AtomicBool,
    disarm_down: AtomicBool,
    armed: Mutex<Vec<(WakeUp, DateTime<Utc>)>>,
    disarmed: Mutex<Vec<WakeUp>>,
}

#[async_trait]
impl Waker for Waker3 {
    async fn arm(&self, wake: WakeUp, at: DateTime<Utc>) -> Result<(), PortError> {
        if self.arm_down.load(Ordering::SeqCst) {
            return Err(PortError::Unavailable("waker down".into()));
        }
        self.armed.lock().unwrap().push((wake, at));
        Ok(())
    }
    async fn disarm(&self, wake: WakeUp) -> Result<(), PortError> {
        if self.disarm_down.load(Ordering::SeqCst) {
            return Err(PortError::Unavailable("waker down".into()));
        }
        self.disarmed.lock().unwrap().push(wake);
        Ok(())
    }
}

#[derive(Default)]
struct Deferred(AtomicUsize);

impl Metrics for Deferred {
    fn wake_up_deferred(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    clock: TokioClock,
    waker: Arc<Waker3>,
    webhook: Arc<ScriptedWebhook>,
    deferred: Arc<Deferred>,
    scheduler: Scheduler,
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000).unwrap()
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let clock = TokioClock::starting_at(t0());
    let waker = Arc::new(Waker3::default());
    let webhook = Arc::new(ScriptedWebhook::default().on_clock(Arc::new(clock)));
    let deferred = Arc::new(Deferred::default());
    let scheduler = Scheduler::new(Ports {
        store: Arc::new(store.clone()),
        waker: waker.clone(),
        webhook: webhook.clone(),
        clock: Arc::new(clock),
        dead_letters: Arc::new(RecordingDeadLetters::default()),
        metrics: deferred.clone(),
        targets: Arc::new(AllowAllTargets),
    });
    Rig {
        _dir: dir,
        store,
        clock,
        waker,
        webhook,
        deferred,
        scheduler,
    }
}

fn alice() -> Owner {
    Owner::parse("alice").unwrap()
}

impl Rig {
    /// Moves the paused clock to `at`.
    async fn until(&self, at: DateTime<Utc>) {
        let wait = (at - self.clock.now()).to_std().unwrap();
        tokio::time::sleep(wait).await;
        assert_eq!(self.clock.now(), at);
    }

    fn last_armed(&self) -> Option<(WakeUp, DateTime<Utc>)> {
        self.waker.armed.lock().unwrap().last().copied()
    }

    fn calls(&self) -> Vec<DateTime<Utc>> {
        self.webhook
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, at)| *at)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn moved_earlier_it_is_delivered_once_at_the_new_time_and_the_old_wake_up_is_stale() {
    let rig = rig();
    let t = create(&rig.scheduler, t0() + TimeDelta::hours(1), 3).await;
    let new = t0() + TimeDelta::seconds(1);

    let moved = rig
        .scheduler
        .reschedule(&alice(), t.id, new, None)
        .await
        .unwrap();

    assert_eq!((moved.run_at, moved.next_attempt_at), (new, Some(new)));
    assert_eq!(moved.status, Status::Scheduled);
    assert_eq!(moved.version, t.version + 1);
    assert_eq!(rig.store.get(t.id).await.unwrap().unwrap(), moved);
    // The old wake-up was disarmed, then the same attempt armed for the new time.
    assert_eq!(*rig.waker.disarmed.lock().unwrap(), vec![wake(&t)]);
    assert_eq!(rig.last_armed(), Some((wake(&t), new)));

    rig.until(new).await;
    assert_eq!(
        rig.scheduler.fire(wake(&t)).await.unwrap(),
        Fired::Delivered(Next::Completed)
    );
    // The old wake-up, had it not been disarmed, arrives at the old time: stale.
    rig.until(t0() + TimeDelta::hours(1)).await;
    assert_eq!(rig.scheduler.fire(wake(&t)).await.unwrap(), Fired::Dropped);
    assert_eq!(rig.calls(), vec![new], "delivered once, at the new time");
}

#[tokio::test(start_paused = true)]
async fn moved_later_the_old_wake_up_never_delivers_early() {
    let rig = rig();
    let t = create(&rig.scheduler, t0() + TimeDelta::seconds(10), 3).await;
    let new = t0() + TimeDelta::hours(2);
    rig.scheduler
        .reschedule(&alice(), t.id, new, None)
        .await
        .unwrap();

    // A carrier that cannot be recalled (an SQS message) arrives at the old time.
    rig.until(t0() + TimeDelta::seconds(10)).await;
    assert_eq!(rig.scheduler.fire(wake(&t)).await.unwrap(), Fired::Rearmed);
    assert!(rig.calls().is_empty(), "not delivered at the old time");
    assert_eq!(rig.last_armed(), Some((wake(&t), new)));
    // Both wake-ups for the new time arrive: one delivery.
    rig.until(new).await;
    let (a, b) = tokio::join!(rig.scheduler.fire(wake(&t)), rig.scheduler.fire(wake(&t)));
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|f| *f == Fired::Dropped);
    assert_eq!(
        outcomes,
        [Fired::Delivered(Next::Completed), Fired::Dropped]
    );
    assert_eq!(rig.calls(), vec![new]);
}

#[tokio::test(start_paused = true)]
async fn run_makes_it_due_now() {
    let rig = rig();
    let t = create(&rig.scheduler, t0() + TimeDelta::days(3), 3).await;
    rig.until(t0() + TimeDelta::milliseconds(1500)).await;
    let now = rig.clock.now();

    let due = rig.scheduler.run_now(&alice(), t.id).await.unwrap();

    assert_eq!((due.run_at, due.next_attempt_at), (now, Some(now)));
    assert_eq!(rig.last_armed(), Some((wake(&t), now)));
    assert_eq!(
        rig.scheduler.fire(wake(&t)).await.unwrap(),
        Fired::Delivered(Next::Completed)
    );
    assert_eq!(rig.calls(), vec![now]);
}

#[tokio::test(start_paused = true)]
async fn a_local_time_is_kept_and_replaced_by_the_next_move() {
    let rig = rig();
    let t = create(&rig.scheduler, t0() + TimeDelta::hours(1), 3).await;
    let (local, at) = LocalRunAt::parse("2027-03-28T02:30:00", "Europe/Paris").unwrap();
    let moved = rig
        .scheduler
        .reschedule(&alice(), t.id, at, Some(local.clone()))
        .await
        .unwrap();
    assert_eq!(moved.local.as_ref(), Some(&local));
    assert_eq!(
        rig.store.get(t.id).await.unwrap().unwrap().local,
        Some(local)
    );
    let again = rig
        .scheduler
        .reschedule(&alice(), t.id, t0() + TimeDelta::hours(2), None)
        .await
        .unwrap();
    assert_eq!(again.local, None, "run_at given: no local time to show");
    let now = rig.scheduler.run_now(&alice(), t.id).await.unwrap();
    assert_eq!(now.local, None);
}

#[tokio::test(start_paused = true)]
async fn only_a_scheduled_task_moves_and_only_for_its_owner() {
    let rig = rig();
    let t = create(&rig.scheduler, t0(), 3).await;
    let later = t0() + TimeDelta::hours(1);
    // Another owner's task, or none at all: not found.
    let bob = Owner::parse("bob").unwrap();
    assert!(matches!(
        rig.scheduler.reschedule(&bob, t.id, later, None).await,
        Err(AppError::NotFound)
    ));
    assert!(matches!(
        rig.scheduler.run_now(&bob, t.id).await,
        Err(AppError::NotFound)
    ));
    assert!(matches!(
        rig.scheduler.run_now(&alice(), TaskId::generate()).await,
        Err(AppError::NotFound)
    ));
    // Running: its wake-up claimed it and is delivering.
    let running = match rig.store.claim(t.id, 1, t0()).await.unwrap() {
        crate::ports::ClaimOutcome::Claimed(r) => r,
        other => panic!("{other:?}"),
    };
    match rig.scheduler.reschedule(&alice(), t.id, later, None).await {
        Err(AppError::Conflict(m)) => assert!(m.starts_with("task is running"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.store.get(t.id).await.unwrap().unwrap(), running);
    // The delivery finishes.
    let (done, _) = running
        .record(
            1,
            &crate::store::contract::delivery(RetryHint::Success, t0()),
            t0(),
            0.5,
        )
        .unwrap();
    rig.store.update(&done).await.unwrap();
    // Completed, then cancelled: 409 naming the status; nothing written.
    for (id, status) in [
        (t.id, "completed"),
        (
            {
                let c = create(&rig.scheduler, later, 3).await;
                rig.scheduler.cancel(&alice(), c.id).await.unwrap();
                c.id
            },
            "cancelled",
        ),
    ] {
        let before = rig.store.get(id).await.unwrap().unwrap();
        for result in [
            rig.scheduler.reschedule(&alice(), id, later, None).await,
            rig.scheduler.run_now(&alice(), id).await,
        ] {
            match result {
                Err(AppError::Conflict(m)) => {
                    assert!(m.starts_with(&format!("task is {status}")), "{m}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(rig.store.get(id).await.unwrap().unwrap(), before);
    }
}

/// The write took effect, then arming the new wake-up failed: the answer is the moved task
/// (it is stored so), the deferral is counted, and the sweeper arms it once it is overdue.
#[tokio::test(start_paused = true)]
async fn a_move_whose_arming_fails_succeeds_and_is_left_to_the_sweeper() {
    let rig = rig();
    let t = create(&rig.scheduler, t0() + TimeDelta::hours(1), 3).await;
    let new = t0() + TimeDelta::minutes(5);
    rig.waker.arm_down.store(true, Ordering::SeqCst);

    let moved = rig
        .scheduler
        .reschedule(&alice(), t.id, new, None)
        .await
        .expect("the task was moved, so the PATCH succeeded");

    assert_eq!(rig.store.get(t.id).await.unwrap().unwrap(), moved);
    assert_eq!(moved.next_attempt_at, Some(new));
    assert_eq!(rig.deferred.0.load(Ordering::SeqCst), 1);
    let armed_before = rig.waker.armed.lock().unwrap().len();
    rig.waker.arm_down.store(false, Ordering::SeqCst);
    // Before the grace has passed the sweeper leaves it alone; after, it arms it.
    rig.until(new + SWEEP_GRACE - TimeDelta::seconds(1)).await;
    let swept = rig
        .scheduler
        .recover(&rig.store, rig.clock.now())
        .await
        .unwrap();
    assert_eq!(swept.rearmed, 0);
    rig.until(new + SWEEP_GRACE).await;
    let swept = rig
        .scheduler
        .recover(&rig.store, rig.clock.now())
        .await
        .unwrap();
    assert_eq!(swept.rearmed, 1);
    assert_eq!(rig.waker.armed.lock().unwrap().len(), armed_before + 1);
    assert_eq!(rig.last_armed(), Some((wake(&t), new)));
    assert_eq!(
        rig.scheduler.fire(wake(&t)).await.unwrap(),
        Fired::Delivered(Next::Completed)
    );
}

/// `/run` whose arming fails: the same rule.
#[tokio::test(start_paused = true)]
async fn a_run_whose_arming_fails_succeeds_and_is_counted() {
    let rig = rig();
    let t = create(&rig.scheduler, t0() + TimeDelta::hours(1), 3).await;
    rig.waker.arm_down.store(true, Ordering::SeqCst);
    let due = rig.scheduler.run_now(&alice(), t.id).await.unwrap();
    assert_eq!(rig.store.get(t.id).await.unwrap().unwrap(), due);
    assert_eq!(rig.deferred.0.load(Ordering::SeqCst), 1);
}

/// Disarming the old wake-up fails: the move still succeeds and the new one is armed (the
/// old one, when it comes, finds the attempt not due or made).
#[tokio::test(start_paused = true)]
async fn a_move_whose_disarm_fails_still_arms_the_new_time() {
    let rig = rig();
    let t = create(&rig.scheduler, t0() + TimeDelta::hours(1), 3).await;
    rig.waker.disarm_down.store(true, Ordering::SeqCst);
    let new = t0() + TimeDelta::hours(3);
    rig.scheduler
        .reschedule(&alice(), t.id, new, None)
        .await
        .unwrap();
    assert_eq!(rig.last_armed(), Some((wake(&t), new)));
    assert_eq!(rig.deferred.0.load(Ordering::SeqCst), 0);
    rig.until(t0() + TimeDelta::hours(1)).await;
    assert_eq!(rig.scheduler.fire(wake(&t)).await.unwrap(), Fired::Rearmed);
    assert!(rig.calls().is_empty());
}

/// A task waiting for a retry moves too: its next attempt, with the budget it has left.
#[tokio::test(start_paused = true)]
async fn a_task_waiting_for_a_retry_moves_its_next_attempt() {
    let rig = rig();
    *rig.webhook.script.lock().unwrap() = vec![RetryHint::Retryable { after: None }];
    let t = create(&rig.scheduler, t0(), 3).await;
    assert!(matches!(
        rig.scheduler.fire(wake(&t)).await.unwrap(),
        Fired::Delivered(Next::Retry { .. })
    ));
    let waiting = rig.store.get(t.id).await.unwrap().unwrap();
    assert_eq!(waiting.attempt_number(), 2);
    let due = rig.scheduler.run_now(&alice(), t.id).await.unwrap();
    assert_eq!(rig.last_armed(), Some((wake(&waiting), rig.clock.now())));
    assert_eq!(due.attempt_number(), 2);
    assert_eq!(
        rig.scheduler.fire(wake(&due)).await.unwrap(),
        Fired::Delivered(Next::Completed)
    );
    // The first attempt's wake-up, late: stale.
    assert_eq!(rig.scheduler.fire(wake(&t)).await.unwrap(), Fired::Dropped);
    assert_eq!(rig.calls().len(), 2);
}
