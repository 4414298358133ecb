//! The local timer, after mini-redis's expiry task: the earliest deadlines sit in a
//! `BTreeSet` ordered by time; one loop sleeps until the first of them (or until `Notify`
//! says an earlier one arrived) and hands due wake-ups to `fire`, at most
//! `max_concurrency` at once.
//!
//! Memory stays bounded however many tasks are pending: the set holds at most `capacity`
//! entries and a *horizon* — every pending wake-up at or before it is in memory; those after
//! it are on disk only and are paged in (in wake-up order, through [`DueSource`]) when the
//! set runs dry. A million pending tasks cost disk, not memory.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::domain::{TaskId, WakeUp};
use crate::ports::{Clock, StoreError, Waker};
use crate::store::sqlite::{DueEntry, SqliteStore};

/// Where pending wake-ups come from when the in-memory set runs dry.
#[async_trait]
pub trait DueSource: Send + Sync + 'static {
    /// Up to `limit` wake-ups strictly after `after`, in `(time, task id)` order.
    async fn due_after(
        &self,
        after: Option<(DateTime<Utc>, TaskId)>,
        limit: usize,
    ) -> Result<Vec<DueEntry>, StoreError>;
}

#[async_trait]
impl DueSource for SqliteStore {
    async fn due_after(
        &self,
        after: Option<(DateTime<Utc>, TaskId)>,
        limit: usize,
    ) -> Result<Vec<DueEntry>, StoreError> {
        SqliteStore::due_after(self, after, limit).await
    }
}

pub type FireFn = Arc<dyn Fn(WakeUp) -> BoxFuture<'static, ()> + Send + Sync>;

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
    set: BTreeSet<Key>,
    horizon: Horizon,
}

pub struct LocalWaker {
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
    pub fn new(capacity: usize, page: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                set: BTreeSet::new(),
                horizon: Horizon::Unloaded,
            }),
            notify: Notify::new(),
            capacity: capacity.max(2),
            page: page.max(1),
        })
    }

    /// Number of wake-ups held in memory.
    pub async fn in_memory(&self) -> usize {
        self.state.lock().await.set.len()
    }

    async fn refill(&self, state: &mut State, source: &dyn DueSource) -> Result<(), StoreError> {
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
    pub async fn run(
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
                state.set.first().copied()
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
            if self.state.lock().await.set.remove(&key) {
                let fire = fire.clone();
                let wake = WakeUp {
                    task_id: key.1,
                    attempt: key.2,
                };
                inflight.spawn(async move {
                    fire(wake).await;
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
    async fn arm(&self, wake: WakeUp, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        if state.horizon.covers(at, wake.task_id) {
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

    async fn disarm(&self, wake: WakeUp) -> Result<(), StoreError> {
        self.state
            .lock()
            .await
            .set
            .retain(|&(_, id, _)| id != wake.task_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::TokioClock;
    use chrono::TimeDelta;
    use std::sync::Mutex as StdMutex;
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
        ) -> Result<Vec<DueEntry>, StoreError> {
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
}
