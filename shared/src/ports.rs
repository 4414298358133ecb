//! The seams between the use cases and the world. Each trait is one capability; adapters
//! live in `store`, `wake` and `webhook` (and fakes in tests).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Cursor, Delivery, Owner, Schedule, ScheduleId, Status, Task, TaskId, WakeUp};

/// How an adapter behind a port (store, waker, dead letters, task scan) fails. `Conflict`
/// is the one the use cases act on: a conditional write lost a race.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PortError {
    #[error("conditional write failed: the task changed concurrently")]
    Conflict,
    #[error("{0}")]
    Unavailable(String),
    /// A write was sent and may or may not have taken effect: its answer was lost and the
    /// store could not read back what happened. Never "nothing was changed".
    #[error("outcome unknown: {0}")]
    #[cfg_attr(
        not(feature = "aws"),
        allow(dead_code, reason = "the DynamoDB store's: SQLite always knows")
    )]
    OutcomeUnknown(String),
}

#[derive(Debug)]
pub(crate) enum CreateOutcome {
    Created,
    /// The owner already used this idempotency key; here is that task.
    Existing(Box<Task>),
}

#[derive(Debug)]
pub(crate) enum ClaimOutcome {
    /// The attempt is ours: the task is now `running` under a lease.
    Claimed(Task),
    /// The condition failed; the task as it is now, if it exists.
    Rejected(Option<Task>),
}

#[derive(Debug, Clone)]
pub(crate) struct ListQuery {
    pub(crate) owner: Owner,
    pub(crate) status: Option<Status>,
    /// Only the occurrences of this schedule (`GET /tasks?schedule_id=`).
    pub(crate) schedule_id: Option<ScheduleId>,
    pub(crate) limit: u32,
    pub(crate) after: Option<Cursor>,
}

#[cfg(test)]
impl ListQuery {
    /// The first 100 of `owner`'s tasks, only the occurrences of `schedule` when given.
    pub(crate) fn first_page(owner: &Owner, schedule: Option<ScheduleId>) -> Self {
        Self {
            owner: owner.clone(),
            status: None,
            schedule_id: schedule,
            limit: 100,
            after: None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) tasks: Vec<Task>,
    pub(crate) next: Option<Cursor>,
}

/// Where tasks live. Every state change is conditional, so concurrent wake-ups and
/// API calls cannot overwrite each other.
#[async_trait]
pub(crate) trait TaskStore: Send + Sync + 'static {
    /// Inserts a new task. When it carries an idempotency key already used by the same
    /// owner, nothing is written and the earlier task is returned.
    async fn create(&self, task: &Task) -> Result<CreateOutcome, PortError>;

    async fn get(&self, id: TaskId) -> Result<Option<Task>, PortError>;

    /// The owner's tasks ordered by `(run_at, task_id)`, after the cursor.
    async fn list(&self, query: &ListQuery) -> Result<Page, PortError>;

    /// Atomically applies [`Task::claim`] for `attempt` at `now`.
    async fn claim(
        &self,
        id: TaskId,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, PortError>;

    /// Replaces the task if the stored version is `task.version - 1`; `Conflict` otherwise.
    async fn update(&self, task: &Task) -> Result<(), PortError>;
}

#[derive(Debug)]
pub(crate) enum ScheduleCreateOutcome {
    Created,
    /// The owner already used this idempotency key for a schedule; here it is.
    Existing(Box<Schedule>),
}

/// One change to a schedule and its occurrence tasks, written all or nothing: the schedule
/// replaced (or deleted) if its stored version is `schedule.version - 1`, each task in
/// `update` replaced if its stored version is its `version - 1`, each task in `insert`
/// created. Any condition that fails is `Conflict`, and nothing is written.
#[derive(Debug, Clone)]
pub(crate) struct ScheduleWrite {
    pub(crate) schedule: Schedule,
    pub(crate) delete: bool,
    pub(crate) update: Vec<Task>,
    pub(crate) insert: Vec<Task>,
}

/// Where schedules live, beside the tasks (the same store, so that one write covers both).
/// A schedule's chain moves on inside [`TaskStore::claim`]: claiming its pending occurrence
/// writes the claim, the next occurrence and the schedule in one transaction
/// ([`Schedule::advance`]).
#[async_trait]
pub(crate) trait ScheduleStore: Send + Sync + 'static {
    /// Inserts the schedule and its first occurrence together. With an idempotency key the
    /// owner already used for a schedule, nothing is written and that schedule is returned.
    async fn create_schedule(
        &self,
        schedule: &Schedule,
        first: Option<&Task>,
    ) -> Result<ScheduleCreateOutcome, PortError>;

    async fn get_schedule(&self, id: ScheduleId) -> Result<Option<Schedule>, PortError>;

    /// The owner's schedules by id (creation order), after `after`; `limit` at most, and
    /// whether there are more.
    async fn list_schedules(
        &self,
        owner: &Owner,
        limit: u32,
        after: Option<ScheduleId>,
    ) -> Result<(Vec<Schedule>, bool), PortError>;

    async fn write_schedule(&self, write: &ScheduleWrite) -> Result<(), PortError>;
}

/// Finds stored tasks that should be moving and may not be, for the sweeper
/// ([`Scheduler::recover`](crate::app::Scheduler::recover)). It reads an index of pending
/// tasks ([`Task::pending_at`]), never the whole table.
#[async_trait]
pub(crate) trait TaskScan: Send + Sync + 'static {
    /// Up to `limit` tasks whose [`Task::pending_at`] is at or before `cutoff` (compared in
    /// whole milliseconds, rounded up), earliest first as far as the index orders them. The
    /// index may lag or run ahead: a task it names is read afresh, and callers check it again
    /// ([`Task::stalled`]). A running task is reported from its lease's end.
    async fn overdue(&self, cutoff: DateTime<Utc>, limit: usize) -> Result<Vec<Task>, PortError>;
}

/// The claims a dead process left `running`, for start-up lease recovery
/// ([`Scheduler::recover_leases`](crate::app::Scheduler::recover_leases)); only a host whose
/// process holds every claim (the local one) can know that none of them is live.
#[async_trait]
pub(crate) trait LeaseScan: TaskScan {
    /// Every task `running` under a lease, expired or not.
    async fn running(&self) -> Result<Vec<Task>, PortError>;
}

/// Arms wake-ups: "call `fire(wake)` at `at`". Delivery of a wake-up is at-least-once;
/// duplicates are harmless because claims are conditional.
#[async_trait]
pub(crate) trait Waker: Send + Sync + 'static {
    async fn arm(&self, wake: WakeUp, at: DateTime<Utc>) -> Result<(), PortError>;
    /// Best effort: a wake-up that still arrives finds the task cancelled and is dropped.
    async fn disarm(&self, wake: WakeUp) -> Result<(), PortError>;
}

/// Calls the webhook once. Never fails: every outcome is a [`Delivery`] to record.
#[async_trait]
pub(crate) trait WebhookClient: Send + Sync + 'static {
    async fn deliver(&self, task: &Task, attempt: u32) -> Delivery;
}

/// Receives tasks whose last attempt failed (AWS: the SQS dead-letter queue). Locally the
/// dead letter stays with the task and this is a no-op.
#[async_trait]
pub(crate) trait DeadLetters: Send + Sync + 'static {
    async fn send(&self, task: &Task) -> Result<(), PortError>;
}

pub(crate) trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// Counters for dashboards (AWS: CloudWatch embedded metric format). No-ops by default.
pub(crate) trait Metrics: Send + Sync + 'static {
    fn task_created(&self) {}
    fn task_delivered(&self, _lateness_ms: i64) {}
    fn task_failed(&self) {}
    fn task_retried(&self) {}
    fn task_cancelled(&self) {}
    /// The sweeper re-armed a task whose wake-up was lost (or sent a dead letter that was).
    fn task_recovered(&self) {}
    /// A task was written but its wake-up could not be armed; the sweeper will arm it.
    fn wake_up_deferred(&self) {}
}

/// Checks a webhook target before it is accepted and again before each call
/// (the SSRF guard plugs in here). The default allows every target.
#[async_trait]
pub(crate) trait TargetPolicy: Send + Sync + 'static {
    async fn check(&self, url: &url::Url) -> Result<(), TargetRefused>;
}

/// A target a [`TargetPolicy`] refused, with the policy's reason (shown to the API caller
/// and kept in the attempt's record).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct TargetRefused(pub Box<dyn std::error::Error + Send + Sync>);

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoMetrics;
impl Metrics for NoMetrics {}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoDeadLetters;

#[async_trait]
impl DeadLetters for NoDeadLetters {
    async fn send(&self, _task: &Task) -> Result<(), PortError> {
        Ok(())
    }
}

/// Tests only: the hosts always guard their targets.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AllowAllTargets;

#[cfg(test)]
#[async_trait]
impl TargetPolicy for AllowAllTargets {
    async fn check(&self, _url: &url::Url) -> Result<(), TargetRefused> {
        Ok(())
    }
}
