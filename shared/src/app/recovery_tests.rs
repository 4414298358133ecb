//! The use cases the hosts used to carry themselves: lease recovery at start-up, the re-arm
//! of a failed local wake-up, and firing the current attempt of a task by its id.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};

use super::*;
use crate::fakes::{RecordingDeadLetters, Rig, ScriptedWebhook, create, wake};
use crate::ports::{AllowAllTargets, NoMetrics};
use crate::store::SqliteStore;

/// Always the same instant, so re-arm times can be compared exactly.
struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// A waker whose next `arm` fails once when told to, recording the ones that succeed.
#[derive(Default)]
struct FlakyWaker {
    fail_next: AtomicBool,
    armed: Mutex<Vec<(WakeUp, DateTime<Utc>)>>,
}

#[async_trait]
impl Waker for FlakyWaker {
    async fn arm(&self, wake: WakeUp, at: DateTime<Utc>) -> Result<(), PortError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(PortError::Unavailable("waker down".into()));
        }
        self.armed.lock().unwrap().push((wake, at));
        Ok(())
    }
    async fn disarm(&self, _wake: WakeUp) -> Result<(), PortError> {
        Ok(())
    }
}

#[tokio::test]
async fn recover_leases_makes_a_dead_claim_reclaimable_at_once() {
    let rig = Rig::new(ScriptedWebhook::default());
    let now = Utc::now();
    let claimed = create(&rig.scheduler, now - TimeDelta::seconds(1), 3).await;
    let waiting = create(&rig.scheduler, now + TimeDelta::hours(1), 3).await;
    let ClaimOutcome::Claimed(running) = rig.store.claim(claimed.id, 1, now).await.unwrap() else {
        panic!("the first claim wins");
    };
    assert!(running.lease_until.unwrap() > Utc::now());
    // While the lease lives, a wake-up is turned away.
    assert_eq!(
        rig.scheduler.fire(wake(&running)).await.unwrap(),
        Fired::Dropped
    );

    assert_eq!(rig.scheduler.recover_leases(&rig.store).await.unwrap(), 1);

    let released = rig.store.get(claimed.id).await.unwrap().unwrap();
    let lease = released.lease_until.unwrap();
    assert!(lease <= Utc::now(), "the lease ends now: {lease}");
    assert_eq!(rig.last_armed(), Some((wake(&released), lease)));
    // The scheduled task is not touched.
    assert_eq!(rig.store.get(waiting.id).await.unwrap().unwrap(), waiting);
    // The attempt is delivered on the next wake-up, and only once.
    assert_eq!(
        rig.scheduler.fire(wake(&released)).await.unwrap(),
        Fired::Delivered(Next::Completed)
    );
    assert_eq!(rig.webhook.call_count(), 1);
    // Nothing is left to recover.
    assert_eq!(rig.scheduler.recover_leases(&rig.store).await.unwrap(), 0);
}

/// A scheduler over SQLite with a fixed clock and a waker that can be made to fail.
fn flaky_rig(
    webhook: ScriptedWebhook,
    now: DateTime<Utc>,
) -> (tempfile::TempDir, Scheduler, Arc<FlakyWaker>) {
    let dir = tempfile::tempdir().unwrap();
    let waker = Arc::new(FlakyWaker::default());
    let scheduler = Scheduler::new(Ports {
        store: Arc::new(SqliteStore::open(dir.path()).unwrap()),
        waker: waker.clone(),
        webhook: Arc::new(webhook),
        clock: Arc::new(FixedClock(now)),
        dead_letters: Arc::new(RecordingDeadLetters::default()),
        metrics: Arc::new(NoMetrics),
        targets: Arc::new(AllowAllTargets),
    });
    (dir, scheduler, waker)
}

#[tokio::test]
async fn a_failed_wake_up_is_armed_again_once_any_lease_has_expired() {
    let now = Utc::now();
    let webhook = ScriptedWebhook::answering(&[RetryHint::Retryable { after: None }]);
    let (_dir, scheduler, waker) = flaky_rig(webhook, now);
    let t = create(&scheduler, now - TimeDelta::seconds(1), 3).await;
    waker.armed.lock().unwrap().clear();
    // The attempt fails and arming its retry fails too: `fire` errs.
    waker.fail_next.store(true, Ordering::SeqCst);

    scheduler.fire_or_rearm(wake(&t)).await;

    assert_eq!(
        *waker.armed.lock().unwrap(),
        vec![(wake(&t), now + RETRY_FAILED_WAKE)]
    );
    assert!(RETRY_FAILED_WAKE > TimeDelta::seconds(30) + Task::LEASE_GRACE);
}

#[tokio::test]
async fn a_fired_wake_up_is_not_armed_again() {
    let now = Utc::now();
    let (_dir, scheduler, waker) = flaky_rig(ScriptedWebhook::default(), now);
    let t = create(&scheduler, now - TimeDelta::seconds(1), 3).await;
    waker.armed.lock().unwrap().clear();

    scheduler.fire_or_rearm(wake(&t)).await;

    assert!(waker.armed.lock().unwrap().is_empty());
    let done = scheduler.get(&t.owner, t.id).await.unwrap();
    assert_eq!(done.status, Status::Completed);
}

#[tokio::test]
async fn fire_task_fires_the_current_attempt() {
    // Retry-After fixes the backoff at the policy's one-second maximum.
    let webhook = ScriptedWebhook::answering(&[RetryHint::Retryable {
        after: Some(std::time::Duration::from_secs(1)),
    }]);
    let rig = Rig::new(webhook);
    let t = create(&rig.scheduler, Utc::now() - TimeDelta::seconds(1), 3).await;
    let (first, fired) = rig.scheduler.fire_task(t.id).await.unwrap();
    assert_eq!(first.attempt, 1);
    assert!(matches!(fired, Fired::Delivered(Next::Retry { .. })));
    // Now the second attempt is current; before it is due the event re-arms it.
    let (second, fired) = rig.scheduler.fire_task(t.id).await.unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(fired, Fired::Rearmed);
    assert_eq!(rig.webhook.call_count(), 1);
}

#[tokio::test]
async fn fire_task_of_an_unknown_task_is_not_found() {
    let rig = Rig::new(ScriptedWebhook::default());
    assert!(matches!(
        rig.scheduler.fire_task(TaskId::generate()).await,
        Err(AppError::NotFound)
    ));
    assert_eq!(rig.webhook.call_count(), 0);
}
