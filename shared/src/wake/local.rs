//! The local timer, after mini-redis's expiry task: the earliest deadlines sit in a
//! `BTreeSet` ordered by time; one loop sleeps until the first of them (or until `Notify`
//! says an earlier one arrived) and hands due wake-ups to `fire`, at most
//! `max_concurrency` at once.
//!
//! Memory stays bounded however many tasks are pending: the set holds at most `capacity`
//! entries and a *horizon* — every pending wake-up at or before it is in memory; those after
//! it are on disk only and are paged in (in wake-up order, through [`DueSource`]) when the
//! set runs dry. A million pending tasks cost disk, not memory.
//!
//! That only holds if a wake-up's key in memory is its key on disk:
//! - times are keyed by [`wake_key`] (rounded up to the millisecond), as the store indexes
//!   them, so a due time with sub-millisecond digits sorts the same on both sides;
//! - a wake-up armed again *while it is being fired* (a fire that failed, looking again
//!   later) may still have its old, earlier key on disk, before the horizon, where paging
//!   will never find it. Such wake-ups are kept apart, in memory until they fire, and never
//!   evicted; there are at most as many as fires that failed in the last minute or so.

use std::{
    collections::{BTreeSet, HashMap},
    panic::AssertUnwindSafe,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{FutureExt, future::BoxFuture};
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::domain::{TaskId, WakeUp};
use crate::ports::{Clock, PortError, Waker};
use crate::store::sqlite::{DueEntry, SqliteStore, wake_key};

/// Where pending wake-ups come from when the in-memory set runs dry.
#[async_trait]
pub(crate) trait DueSource: Send + Sync + 'static {
    /// Up to `limit` wake-ups strictly after `after`, in `(time, task id)` order.
    async fn due_after(
        &self,
        after: Option<(DateTime<Utc>, TaskId)>,
        limit: usize,
    ) -> Result<Vec<DueEntry>, PortError>;
}

#[async_trait]
impl DueSource for SqliteStore {
    async fn due_after(
        &self,
        after: Option<(DateTime<Utc>, TaskId)>,
        limit: usize,
    ) -> Result<Vec<DueEntry>, PortError> {
        SqliteStore::due_after(self, after, limit).await
    }
}

pub(crate) type FireFn = Arc<dyn Fn(WakeUp) -> BoxFuture<'static, ()> + Send + Sync>;

type Key = (DateTime<Utc>, TaskId, u32);

/// How much of the pending wake-ups the set is known to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Horizon {
    /// Nothing loaded yet.
    Unloaded,
    /// Every pending wake-up at or before this point is in the set.
    UpTo(DateTime<Utc>, TaskId),
    /// Every pending wake-up is in the set.
    All,
}

impl Horizon {
    fn covers(self, at: DateTime<Utc>, id: TaskId) -> bool {
        match self {
            Self::Unloaded => false,
            Self::UpTo(t, i) => (at, id) <= (t, i),
            Self::All => true,
        }
    }
}

struct State {
    /// Wake-ups whose key is their key on disk, bounded by `capacity`, and the horizon.
    set: BTreeSet<Key>,
    horizon: Horizon,
    /// Wake-ups armed while they were being fired: their row may keep an earlier key, so
    /// they are never left to paging.
    rearmed: BTreeSet<Key>,
    /// Wake-ups being fired, and how many times at once.
    firing: HashMap<WakeUp, usize>,
}

impl State {
    fn first(&self) -> Option<Key> {
        match (self.set.first(), self.rearmed.first()) {
            (Some(a), Some(b)) => Some(*a.min(b)),
            (a, b) => a.or(b).copied(),
        }
    }
}

pub(crate) struct LocalWaker {
    // A tokio mutex because a refill holds it across the page query: an `arm` racing the
    // refill must see the new horizon, or a wake-up committed just after the query would
    // be neither in memory nor after the horizon, and would never fire.
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
    page: usize,
}

impl LocalWaker {
    /// `capacity`: wake-ups kept in memory; `page`: how many to read per refill.
    pub(crate) fn new(capacity: usize, page: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                set: BTreeSet::new(),
                horizon: Horizon::Unloaded,
                rearmed: BTreeSet::new(),
                firing: HashMap::new(),
            }),
            notify: Notify::new(),
            capacity: capacity.max(2),
            page: page.max(1),
        })
    }

    /// Number of wake-ups held in memory.
    #[cfg(test)]
    pub(crate) async fn in_memory(&self) -> usize {
        let state = self.state.lock().await;
        state.set.len() + state.rearmed.len()
    }

    async fn refill(&self, state: &mut State, source: &dyn DueSource) -> Result<(), PortError> {
        let after = match state.horizon {
            Horizon::All => return Ok(()),
            Horizon::Unloaded => None,
            Horizon::UpTo(t, id) => Some((t, id)),
        };
        let page = source.due_after(after, self.page).await?;
        state.horizon = match page.last() {
            Some(last) if page.len() >= self.page => Horizon::UpTo(last.at, last.wake.task_id),
            _ => Horizon::All,
        };
        debug!(loaded = page.len(), "timer paged wake-ups in");
        state.set.extend(
            page.into_iter()
                .map(|e| (e.at, e.wake.task_id, e.wake.attempt)),
        );
        Ok(())
    }

    /// Runs the timer until `shutdown`, then waits up to `drain` for deliveries in flight.
    pub(crate) async fn run(
        self: Arc<Self>,
        source: Arc<dyn DueSource>,
        clock: Arc<dyn Clock>,
        fire: FireFn,
        max_concurrency: usize,
        shutdown: CancellationToken,
        drain: Duration,
    ) {
        let permits = Arc::new(Semaphore::new(max_concurrency.max(1)));
        let mut inflight = JoinSet::new();
        loop {
            while inflight.try_join_next().is_some() {}
            let first = {
                let mut state = self.state.lock().await;
                if state.set.is_empty()
                    && state.horizon != Horizon::All
                    && let Err(e) = self.refill(&mut state, source.as_ref()).await
                {
                    drop(state);
                    error!(error = %e, "timer could not page wake-ups in; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
                state.first()
            };
            let Some(key) = first else {
                tokio::select! {
                    _ = self.notify.notified() => continue,
                    _ = shutdown.cancelled() => break,
                }
            };
            let now = clock.now();
            if key.0 > now {
                let wait = (key.0 - now).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.notify.notified() => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            // Backpressure: at most `max_concurrency` deliveries at once.
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = shutdown.cancelled() => break,
            };
            // It may have been disarmed while we waited for a permit.
            let wake = WakeUp {
                task_id: key.1,
                attempt: key.2,
            };
            let taken = {
                let mut state = self.state.lock().await;
                let taken = state.set.remove(&key) || state.rearmed.remove(&key);
                if taken {
                    *state.firing.entry(wake).or_default() += 1;
                }
                taken
            };
            if taken {
                let fire = fire.clone();
                let this = self.clone();
                inflight.spawn(async move {
                    // A panic must not leave the wake-up marked as being fired for good.
                    if AssertUnwindSafe(fire(wake)).catch_unwind().await.is_err() {
                        error!(task_id = %wake.task_id, attempt = wake.attempt, "firing a wake-up panicked");
                    }
                    let mut state = this.state.lock().await;
                    if let Some(n) = state.firing.get_mut(&wake) {
                        *n -= 1;
                        if *n == 0 {
                            state.firing.remove(&wake);
                        }
                    }
                    drop(permit);
                });
            }
        }
        if tokio::time::timeout(drain, async {
            while inflight.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            // What is still running stays `running` in the store; its lease brings it back
            // on the next start (at-least-once).
            error!(
                abandoned = inflight.len(),
                "deliveries still in flight at shutdown"
            );
        }
    }
}

#[async_trait]
impl Waker for LocalWaker {
    async fn arm(&self, wake: WakeUp, at: DateTime<Utc>) -> Result<(), PortError> {
        let at = wake_key(at);
        let mut state = self.state.lock().await;
        if state.firing.contains_key(&wake) {
            state.rearmed.insert((at, wake.task_id, wake.attempt));
        } else if state.horizon.covers(at, wake.task_id) {
            state.set.insert((at, wake.task_id, wake.attempt));
            if state.set.len() > self.capacity {
                // Keep the earliest three quarters; the rest stays on disk past the horizon.
                while state.set.len() > self.capacity * 3 / 4 {
                    state.set.pop_last();
                }
                if let Some(&(t, id, _)) = state.set.last() {
                    state.horizon = Horizon::UpTo(t, id);
                }
            }
        }
        // Otherwise it lies beyond the horizon and will be paged in from the store.
        drop(state);
        self.notify.notify_one();
        Ok(())
    }

    async fn disarm(&self, wake: WakeUp) -> Result<(), PortError> {
        let mut state = self.state.lock().await;
        state.set.retain(|&(_, id, _)| id != wake.task_id);
        state.rearmed.retain(|&(_, id, _)| id != wake.task_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::TokioClock;
    use crate::ports::TaskStore;
    use crate::store::contract;
    use chrono::TimeDelta;
    use std::future::Future;
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::Ordering;
    use tokio::sync::mpsc;

    /// Pending wake-ups "on disk".
    #[derive(Default)]
    struct Disk(StdMutex<Vec<DueEntry>>);

    #[async_trait]
    impl DueSource for Disk {
        async fn due_after(
            &self,
            after: Option<(DateTime<Utc>, TaskId)>,
            limit: usize,
        ) -> Result<Vec<DueEntry>, PortError> {
            let mut all = self.0.lock().unwrap().clone();
            all.sort_by_key(|e| (e.at, e.wake.task_id));
            Ok(all
                .into_iter()
                .filter(|e| after.is_none_or(|a| (e.at, e.wake.task_id) > a))
                .take(limit)
                .collect())
        }
    }

    struct Harness {
        waker: Arc<LocalWaker>,
        disk: Arc<Disk>,
        clock: TokioClock,
        fired: mpsc::UnboundedReceiver<(WakeUp, DateTime<Utc>)>,
        shutdown: CancellationToken,
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn start(capacity: usize, page: usize, on_disk: Vec<DueEntry>) -> Harness {
        let waker = LocalWaker::new(capacity, page);
        let disk = Arc::new(Disk(StdMutex::new(on_disk)));
        let clock = TokioClock::starting_at(t0());
        let (tx, fired) = mpsc::unbounded_channel();
        let fire: FireFn = Arc::new(move |wake| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send((wake, clock.now()));
            })
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(waker.clone().run(
            disk.clone(),
            Arc::new(clock),
            fire,
            4,
            shutdown.clone(),
            Duration::from_secs(1),
        ));
        Harness {
            waker,
            disk,
            clock,
            fired,
            shutdown,
        }
    }

    fn entry(at: DateTime<Utc>) -> DueEntry {
        DueEntry {
            at,
            wake: WakeUp {
                task_id: TaskId::generate(),
                attempt: 1,
            },
        }
    }

    /// The next firing. On the paused clock a wake-up that never comes (a lost `notify`)
    /// fails the test at once instead of hanging it.
    async fn next_fired(h: &mut Harness) -> (WakeUp, DateTime<Utc>) {
        tokio::time::timeout(Duration::from_secs(7 * 86_400), h.fired.recv())
            .await
            .expect("nothing fired within a week")
            .expect("the timer stopped")
    }

    /// Arms like the use cases do: the store first, then the waker.
    async fn arm(h: &Harness, e: DueEntry) {
        h.disk.0.lock().unwrap().push(e);
        h.waker.arm(e.wake, e.at).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_due_in_an_hour_fires_when_the_clock_reaches_it() {
        let mut h = start(100, 10, vec![]);
        tokio::task::yield_now().await;
        let e = entry(t0() + TimeDelta::hours(1));
        arm(&h, e).await;
        let (wake, at) = next_fired(&mut h).await;
        assert_eq!(wake, e.wake);
        // Paused time jumps straight to the deadline: not a millisecond early, none late.
        assert_eq!(at, e.at);
        assert_eq!(h.clock.now(), e.at);
        h.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_task_inserted_later_fires_first() {
        let mut h = start(100, 10, vec![]);
        let late = entry(t0() + TimeDelta::hours(2));
        let early = entry(t0() + TimeDelta::minutes(5));
        arm(&h, late).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        arm(&h, early).await;
        assert_eq!(next_fired(&mut h).await, (early.wake, early.at));
        assert_eq!(next_fired(&mut h).await, (late.wake, late.at));
        h.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_task_never_fires() {
        let mut h = start(100, 10, vec![]);
        // Let the timer page in (nothing) so the arms below land in memory, where only
        // `disarm` can take them out again.
        tokio::task::yield_now().await;
        let cancelled = entry(t0() + TimeDelta::minutes(10));
        let kept = entry(t0() + TimeDelta::minutes(20));
        arm(&h, cancelled).await;
        arm(&h, kept).await;
        assert_eq!(h.waker.in_memory().await, 2, "both wake-ups are in memory");
        // The product's path only: the waker is disarmed. The entry stays on the fake disk,
        // so nothing but `disarm` can keep it from firing.
        h.waker.disarm(cancelled.wake).await.unwrap();
        assert_eq!(h.waker.in_memory().await, 1);
        // The timer runs past the cancelled one's time: the later sibling fires, on time.
        assert_eq!(next_fired(&mut h).await, (kept.wake, kept.at));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(h.fired.try_recv().is_err(), "the cancelled task fired");
        h.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn pending_wakeups_on_disk_fire_in_order_with_a_small_memory() {
        // 50 on disk, one second apart, at most 4 in memory, paged 3 at a time.
        const CAPACITY: usize = 4;
        let mut on_disk: Vec<DueEntry> = (0..50)
            .map(|i| entry(t0() + TimeDelta::seconds(50 - i)))
            .collect();
        on_disk.push(entry(t0() - TimeDelta::hours(1))); // fell due while we were down
        let mut h = start(CAPACITY, 3, on_disk.clone());
        // The timer starts and pages the first wake-ups in.
        tokio::task::yield_now().await;
        assert!(h.waker.in_memory().await > 0, "the first page is in memory");
        // While the disk is paged in, each firing arms two more wake-ups due before the
        // next one on disk: inside the horizon, so they go to memory, which would grow
        // past its bound unless the waker sheds the latest back to disk.
        let mut all = on_disk;
        let mut got = Vec::new();
        let mut most = 0;
        while got.len() < all.len() {
            let (wake, at) = next_fired(&mut h).await;
            got.push((wake, at));
            if all.len() < 51 + 40 {
                for ms in [100, 170] {
                    let e = entry(at + TimeDelta::milliseconds(ms));
                    arm(&h, e).await;
                    all.push(e);
                    let held = h.waker.in_memory().await;
                    assert!(held <= CAPACITY, "{held} wake-ups in memory");
                    most = most.max(held);
                }
            }
            let held = h.waker.in_memory().await;
            assert!(held <= CAPACITY, "{held} wake-ups in memory");
            most = most.max(held);
        }
        assert_eq!(most, CAPACITY, "the memory was used up to its bound");
        all.sort_by_key(|e| (e.at, e.wake.task_id));
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            all.iter().map(|e| e.wake).collect::<Vec<_>>()
        );
        // The overdue one fired at once; the others exactly on time.
        assert_eq!(got[0].1, t0());
        assert!(got[1..].iter().zip(&all[1..]).all(|(g, e)| g.1 == e.at));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(h.fired.try_recv().is_err(), "nothing fired twice");
        h.shutdown.cancel();
    }

    /// The local host's policy for a wake-up that failed on a store error.
    use crate::app::RETRY_FAILED_WAKE;

    /// Runs `f` (a write through the SQLite writer thread) on the blocking pool. Paused
    /// time does not advance while a blocking task runs, so the clock cannot jump ahead of
    /// a write still on its way to disk.
    async fn blocking<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || runtime.block_on(f))
            .await
            .unwrap()
    }

    /// Fires like the local host: a wake-up completes its task in the store, except the first
    /// fire of `failing`, which fails before touching the store and is re-armed later.
    fn completing(
        store: SqliteStore,
        waker: Arc<LocalWaker>,
        clock: TokioClock,
        failing: TaskId,
        fired: mpsc::UnboundedSender<(WakeUp, DateTime<Utc>)>,
    ) -> FireFn {
        let failed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
        Arc::new(move |wake| {
            let (store, waker, fired, failed_once) = (
                store.clone(),
                waker.clone(),
                fired.clone(),
                failed_once.clone(),
            );
            Box::pin(async move {
                // Reported once done, with the time it fired.
                let now = clock.now();
                if wake.task_id == failing && !failed_once.swap(true, Ordering::SeqCst) {
                    waker.arm(wake, now + RETRY_FAILED_WAKE).await.unwrap();
                    let _ = fired.send((wake, now));
                    return;
                }
                blocking(async move {
                    let crate::ports::ClaimOutcome::Claimed(running) =
                        store.claim(wake.task_id, wake.attempt, now).await.unwrap()
                    else {
                        panic!("{wake:?} fired at {now} but could not be claimed");
                    };
                    let delivery = contract::delivery(crate::domain::RetryHint::Success, now);
                    let (done, _) = running.record(wake.attempt, &delivery, now, 0.0).unwrap();
                    store.update(&done).await.unwrap();
                })
                .await;
                let _ = fired.send((wake, now));
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn every_pending_task_fires_with_a_small_memory_when_keys_could_disagree() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let owner = contract::owner();
        let at = |secs| t0() + TimeDelta::seconds(secs);
        let task = |run_at, id: Option<TaskId>| {
            let mut t = contract::task(&owner, run_at, None);
            t.id = id.unwrap_or(t.id);
            t
        };
        // `sub_ms` sorts before `third` within the same millisecond.
        let (sub_ms_id, third_id) = {
            let (a, b) = (TaskId::generate(), TaskId::generate());
            (a.min(b), a.max(b))
        };
        // Far more pending than the 4 wake-ups memory holds, paged 3 at a time: the first
        // page ends exactly on `third`.
        let mut pending = vec![
            task(at(1), None),
            task(at(2), None),
            task(at(3), Some(third_id)),
        ];
        let failing = task(at(5), None);
        pending.push(failing.clone());
        pending.extend((6..=20).chain(120..=126).map(|s| task(at(s), None)));
        for t in &pending {
            let (store, t) = (store.clone(), t.clone());
            blocking(async move { store.create(&t).await.unwrap() }).await;
        }

        let waker = LocalWaker::new(4, 3);
        let clock = TokioClock::starting_at(t0());
        let (tx, mut fired) = mpsc::unbounded_channel();
        let fire = completing(store.clone(), waker.clone(), clock, failing.id, tx);
        let shutdown = CancellationToken::new();
        tokio::spawn(waker.clone().run(
            Arc::new(store.clone()),
            Arc::new(clock),
            fire,
            4,
            shutdown.clone(),
            Duration::from_secs(1),
        ));
        while waker.in_memory().await < 3 {
            tokio::task::yield_now().await;
        }

        // Created (as `delay_seconds` does) once the first page is in memory, due 0.4 ms
        // into the millisecond the page ends on.
        let sub_ms = task(at(3) + TimeDelta::microseconds(400), Some(sub_ms_id));
        blocking({
            let (store, t) = (store.clone(), sub_ms.clone());
            async move { store.create(&t).await.unwrap() }
        })
        .await;
        waker
            .arm(sub_ms.wake().unwrap().1, sub_ms.run_at)
            .await
            .unwrap();
        pending.push(sub_ms.clone());

        // Every task fires once, and `failing` once more; a lost one times out.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut got: Vec<(WakeUp, DateTime<Utc>)> = Vec::new();
        while got.len() < pending.len() + 1 {
            match tokio::time::timeout_at(deadline, fired.recv()).await {
                Ok(Some(f)) => got.push(f),
                _ => break,
            }
        }
        let expected = |id: TaskId| if id == failing.id { 2 } else { 1 };
        let missed: Vec<String> = pending
            .iter()
            .map(|t| t.id)
            .filter(|&id| got.iter().filter(|(w, _)| w.task_id == id).count() < expected(id))
            .map(|id| id.to_string())
            .collect();
        assert!(
            missed.is_empty(),
            "never fired: {missed:?} (sub-millisecond: {}, re-armed after a failed fire: {})",
            sub_ms.id,
            failing.id
        );
        for t in &pending {
            let times: Vec<DateTime<Utc>> = got
                .iter()
                .filter(|(w, _)| w.task_id == t.id)
                .map(|&(_, at)| at)
                .collect();
            // Never early, at most the rounding to the next millisecond late.
            let on_time = |at: DateTime<Utc>, due: DateTime<Utc>| {
                at >= due && at < due + TimeDelta::milliseconds(1)
            };
            if t.id == failing.id {
                assert_eq!(times.len(), 2, "{times:?}");
                assert!(on_time(times[0], t.run_at), "{times:?}");
                assert!(on_time(times[1], times[0] + RETRY_FAILED_WAKE), "{times:?}");
            } else {
                assert_eq!(times.len(), 1, "{}: {times:?}", t.id);
                assert!(
                    on_time(times[0], t.run_at),
                    "{} due {}: {times:?}",
                    t.id,
                    t.run_at
                );
            }
        }
        assert_eq!(
            store
                .count(Some(crate::domain::Status::Completed))
                .await
                .unwrap(),
            pending.len() as u64
        );
        assert_eq!(store.pending().await.unwrap(), 0);
        shutdown.cancel();
    }
}
