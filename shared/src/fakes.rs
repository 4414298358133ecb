//! Fakes behind the ports, for unit tests only. The store in these tests is the real
//! SQLite one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::api::{self, Auth};
use crate::app::{CreateCommand, Created, Ports, Scheduler};
use crate::domain::{
    Action, AttemptOutcome, Delivery, HttpMethod, NewTask, Owner, RetryHint, RetryPolicy, Task,
    TimeoutSeconds, WakeUp, WebhookAction, WebhookHeaders, WebhookUrl,
};
use crate::ports::{
    AllowAllTargets, Clock, DeadLetters, NoMetrics, PortError, TargetPolicy, TargetRefused, Waker,
    WebhookClient,
};
use crate::store::SqliteStore;

/// A clock that follows tokio's time, so tests with `tokio::time::pause()` move wall time
/// and timers together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokioClock {
    base_wall: DateTime<Utc>,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub(crate) fn starting_at(base_wall: DateTime<Utc>) -> Self {
        Self {
            base_wall,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.base;
        self.base_wall + chrono::TimeDelta::from_std(elapsed).unwrap_or_default()
    }
}

/// Records what was armed and disarmed; refuses to arm while `refuse` is set.
#[derive(Default)]
pub(crate) struct RecordingWaker {
    pub(crate) armed: Mutex<Vec<(WakeUp, DateTime<Utc>)>>,
    pub(crate) disarmed: Mutex<Vec<WakeUp>>,
    pub(crate) refuse: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Waker for RecordingWaker {
    async fn arm(&self, wake: WakeUp, at: DateTime<Utc>) -> Result<(), PortError> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PortError::Unavailable("waker refused (test)".into()));
        }
        self.armed.lock().unwrap().push((wake, at));
        Ok(())
    }
    async fn disarm(&self, wake: WakeUp) -> Result<(), PortError> {
        self.disarmed.lock().unwrap().push(wake);
        Ok(())
    }
}

/// Answers deliveries from a script (then with success), counting calls.
#[derive(Default)]
pub(crate) struct ScriptedWebhook {
    pub(crate) script: Mutex<Vec<RetryHint>>,
    pub(crate) calls: Mutex<Vec<(WakeUp, DateTime<Utc>)>>,
    /// Holds each delivery this long (to overlap concurrent wake-ups).
    pub(crate) hold: Mutex<Duration>,
    /// The scheduler's clock (set by [`Rig`]), so a delivery's time is the scheduler's.
    clock: Option<Arc<dyn Clock>>,
}

impl ScriptedWebhook {
    pub(crate) fn answering(hints: &[RetryHint]) -> Self {
        let s = Self::default();
        *s.script.lock().unwrap() = hints.iter().rev().copied().collect();
        s
    }

    /// Stamps deliveries with `clock`'s time (a [`Rig`] sets its own).
    pub(crate) fn on_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self {
            clock: Some(clock),
            ..self
        }
    }

    pub(crate) fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait]
impl WebhookClient for ScriptedWebhook {
    async fn deliver(&self, task: &Task, attempt: u32) -> Delivery {
        let started_at = self.clock.as_ref().map_or_else(Utc::now, |c| c.now());
        self.calls.lock().unwrap().push((
            WakeUp {
                task_id: task.id,
                attempt,
            },
            started_at,
        ));
        let hold = *self.hold.lock().unwrap();
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        let hint = self
            .script
            .lock()
            .unwrap()
            .pop()
            .unwrap_or(RetryHint::Success);
        let (outcome, code) = match hint {
            RetryHint::Success => (AttemptOutcome::Succeeded, 200),
            RetryHint::Retryable { .. } => (AttemptOutcome::Failed, 503),
            RetryHint::Permanent => (AttemptOutcome::Failed, 400),
        };
        Delivery {
            started_at,
            duration: Duration::from_millis(3),
            outcome,
            status_code: Some(code),
            error: (code != 200).then(|| format!("HTTP {code}")),
            hint,
        }
    }
}

#[derive(Default)]
pub(crate) struct RecordingDeadLetters(pub Mutex<Vec<Task>>);

#[async_trait]
impl DeadLetters for RecordingDeadLetters {
    async fn send(&self, task: &Task) -> Result<(), PortError> {
        self.0.lock().unwrap().push(task.clone());
        Ok(())
    }
}

/// Refuses targets whose host is `blocked.example`.
pub(crate) struct BlockHost;

#[async_trait]
impl TargetPolicy for BlockHost {
    async fn check(&self, url: &url::Url) -> Result<(), TargetRefused> {
        if url.host_str() == Some("blocked.example") {
            Err(TargetRefused("blocked.example is not allowed".into()))
        } else {
            Ok(())
        }
    }
}

/// A scheduler over a real SQLite store in a temp dir, with recording fakes around it.
pub(crate) struct Rig {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) store: SqliteStore,
    pub(crate) waker: Arc<RecordingWaker>,
    pub(crate) webhook: Arc<ScriptedWebhook>,
    pub(crate) dead_letters: Arc<RecordingDeadLetters>,
    pub(crate) scheduler: Scheduler,
}

impl Rig {
    pub(crate) fn new(webhook: ScriptedWebhook) -> Self {
        Self::with(
            webhook,
            Arc::new(AllowAllTargets),
            Arc::new(crate::ports::SystemClock),
        )
    }

    /// A scheduler built without a schedule store (no host ships so).
    pub(crate) fn without_schedules(webhook: ScriptedWebhook) -> Self {
        let mut rig = Self::new(webhook);
        rig.scheduler = rig.scheduler.without_schedules();
        rig
    }

    pub(crate) fn with(
        webhook: ScriptedWebhook,
        targets: Arc<dyn TargetPolicy>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let waker = Arc::new(RecordingWaker::default());
        let webhook = Arc::new(ScriptedWebhook {
            clock: Some(clock.clone()),
            ..webhook
        });
        let dead_letters = Arc::new(RecordingDeadLetters::default());
        let scheduler = Scheduler::new(Ports {
            store: Arc::new(store.clone()),
            waker: waker.clone(),
            webhook: webhook.clone(),
            clock,
            dead_letters: dead_letters.clone(),
            metrics: Arc::new(NoMetrics),
            targets,
        })
        .with_schedules(Arc::new(store.clone()));
        Self {
            _dir: dir,
            store,
            waker,
            webhook,
            dead_letters,
            scheduler,
        }
    }

    pub(crate) fn router(&self, auth: Auth) -> axum::Router {
        api::router(self.scheduler.clone(), auth)
    }

    pub(crate) fn last_armed(&self) -> Option<(WakeUp, DateTime<Utc>)> {
        self.waker.armed.lock().unwrap().last().copied()
    }
}

/// Alice's create of a webhook to `https://example.com/h` at `run_at`, retried up to
/// `max_attempts` with one-second backoffs.
pub(crate) fn command(run_at: DateTime<Utc>, max_attempts: i64) -> CreateCommand {
    CreateCommand {
        owner: Owner::parse("alice").unwrap(),
        task: NewTask {
            action: Action::Webhook(WebhookAction {
                url: WebhookUrl::parse("https://example.com/h").unwrap(),
                method: HttpMethod::Post,
                headers: WebhookHeaders::default(),
                data: None,
            }),
            run_at,
            retry: RetryPolicy::parse(Some(max_attempts), Some(1), Some(1)).unwrap(),
            timeout: TimeoutSeconds::default(),
            local: None,
        },
        idempotency: None,
    }
}

/// Creates [`command`]'s task through the use case; it must be new.
pub(crate) async fn create(
    scheduler: &Scheduler,
    run_at: DateTime<Utc>,
    max_attempts: i64,
) -> Task {
    match scheduler
        .create(command(run_at, max_attempts))
        .await
        .unwrap()
    {
        Created::New(t) => t,
        other => panic!("{other:?}"),
    }
}

/// The wake-up of a task's current attempt.
pub(crate) fn wake(t: &Task) -> WakeUp {
    WakeUp {
        task_id: t.id,
        attempt: t.attempt_number(),
    }
}
