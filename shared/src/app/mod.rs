//! Use cases: create, get, list, cancel, retry, fire. They speak only to the ports, so the
//! same code runs locally (SQLite + in-process timer) and on AWS (DynamoDB + Scheduler/SQS).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{Instrument, error, info, info_span, warn};

use crate::domain::{
    ClaimRejection, Delivery, IdempotencyKey, NewTask, Next, Owner, RetryHint, Status, Task,
    TaskId, ValidationError, WakeUp,
};
use crate::ports::{
    ClaimOutcome, Clock, CreateOutcome, DeadLetters, LeaseScan, ListQuery, Metrics, Page,
    PortError, ScheduleStore, TargetPolicy, TaskScan, TaskStore, Waker, WebhookClient,
};

#[cfg(test)]
mod recovery_tests;
mod reschedule;
#[cfg(test)]
mod reschedule_tests;
mod schedules;
pub(crate) use schedules::{CreateScheduleCommand, CreatedSchedule, ScheduleView};
#[cfg(test)]
mod sweep_tests;
#[cfg(test)]
mod tests;

/// How early a wake-up that knows its due time may arrive and still be fired by waiting:
/// the delay queue's granularity (`DelaySeconds` counts whole seconds, rounded down).
#[cfg_attr(not(feature = "aws"), allow(dead_code, reason = "used by fire_due"))]
pub(crate) const EARLY_WAKE_WAIT: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// When a wake-up whose firing failed (the store or the waker was unavailable) is tried
/// again by [`Scheduler::fire_or_rearm`]: past the longest lease (the 30 s maximum webhook
/// timeout plus [`Task::LEASE_GRACE`], and a second), so an attempt the failure left
/// `running` can be re-claimed by then.
pub(crate) const RETRY_FAILED_WAKE: chrono::TimeDelta = chrono::TimeDelta::seconds(61);

/// What to do instead of cancelling a schedule's pending occurrence on its own.
const PENDING_OCCURRENCE_CANCEL: Before =
    Before::RefusePendingOccurrence("pause or delete the schedule instead");

/// How long past the moment a task should have moved ([`Task::pending_at`]) the sweeper
/// leaves it to the wake-up already on its way, before re-arming it. Normal wake-ups arrive
/// within about a second of their due time (the delay queue counts whole seconds, a cold
/// start adds a few), so 30 s separates a late wake-up from a lost one without re-arming
/// healthy tasks (each re-arm counts `TasksRecovered`, which pages an operator). Together
/// with a sweep every minute it keeps the recovery bound under two minutes: a stalled task
/// is re-armed at most `SWEEP_GRACE` + one sweep period after it should have moved (its due
/// time, or its lease's end: both stores index a running task at its lease end exactly):
/// 30 + 60 = 90 s.
pub(crate) const SWEEP_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// The most tasks one sweep reads: a bounded invocation (about 1,000 reads and arms, 16 at a
/// time, a few seconds), and far more than a healthy minute ever loses. A larger backlog is
/// worked off over the following sweeps, oldest first.
pub(crate) const SWEEP_LIMIT: usize = 1024;

/// How many tasks a sweep recovers at once.
const SWEEP_CONCURRENCY: usize = 16;

/// When a claim the store refused, though the task's own rule allows it, is tried again: the
/// store and the domain disagreed (rounding, or a change in between), so look again soon
/// rather than drop the wake-up, and not at once, which could loop.
pub(crate) const RECLAIM_AFTER_REFUSAL: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// What [`Scheduler::transition`] checks or does on the task as read, before deciding.
#[derive(Debug, Clone, Copy)]
enum Before {
    /// A schedule's pending occurrence is refused (`409` saying what to do instead); the
    /// schedule is read only for a task that is an occurrence.
    RefusePendingOccurrence(&'static str),
    /// A failure whose dead letter is not sent yet (its send failed; the wake-up's redelivery
    /// or the sweeper would send it) keeps it: reviving clears it, so it is sent first, and
    /// if that fails nothing changed. (A second send of the same failure is dropped by the
    /// failed-tasks queue's deduplication id.)
    SendUnsentDeadLetter,
}

/// What a sweep did ([`Scheduler::recover`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Stalled tasks whose wake-up was armed again.
    pub(crate) rearmed: usize,
    /// Failed tasks whose dead letter was sent (again).
    pub(crate) dead_letters: usize,
    /// Stalled tasks that could not be recovered this time (the next sweep tries again).
    pub(crate) failed: usize,
}

/// Errors of the use cases, mapped to HTTP once in `api` and to retryable/permanent once
/// at the Lambda boundary.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("task not found")]
    NotFound,
    #[error("schedule not found")]
    ScheduleNotFound,
    /// A feature this host does not have (schedules, on a scheduler built without their store).
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// A write may have taken effect; the store could not tell (see
    /// [`PortError::OutcomeUnknown`]).
    #[error("{0}")]
    OutcomeUnknown(String),
}

impl From<PortError> for AppError {
    fn from(e: PortError) -> Self {
        match e {
            PortError::OutcomeUnknown(_) => Self::OutcomeUnknown(e.to_string()),
            _ => Self::Unavailable(e.to_string()),
        }
    }
}

/// Everything the use cases need from the outside world.
#[derive(Clone)]
pub(crate) struct Ports {
    pub(crate) store: Arc<dyn TaskStore>,
    pub(crate) waker: Arc<dyn Waker>,
    pub(crate) webhook: Arc<dyn WebhookClient>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) dead_letters: Arc<dyn DeadLetters>,
    pub(crate) metrics: Arc<dyn Metrics>,
    pub(crate) targets: Arc<dyn TargetPolicy>,
}

/// A create request after parsing: who asks, what, and the idempotency key with the hash
/// of the request it came with.
#[derive(Debug, Clone)]
pub(crate) struct CreateCommand {
    pub(crate) owner: Owner,
    pub(crate) task: NewTask,
    pub(crate) idempotency: Option<(IdempotencyKey, String)>,
}

#[derive(Debug)]
pub(crate) enum Created {
    New(Task),
    /// An idempotent repeat: the task created by the first request.
    Existing(Task),
}

/// What a wake-up led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fired {
    Delivered(Next),
    /// Woke before the attempt was due (or found a lost wake-up): armed again.
    Rearmed,
    /// Found the task failed with its dead letter unsent, and sent it.
    DeadLetterSent,
    /// Duplicate, stale, or for a task that is gone or finished.
    Dropped,
}

#[derive(Clone)]
pub(crate) struct Scheduler {
    ports: Ports,
    /// Where schedules live; `None` on a host without them (`501` at the API).
    schedules: Option<Arc<dyn ScheduleStore>>,
}

impl Scheduler {
    pub(crate) fn new(ports: Ports) -> Self {
        Self {
            ports,
            schedules: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn without_schedules(self) -> Self {
        Self {
            schedules: None,
            ..self
        }
    }

    /// The same scheduler with schedules, kept in `store` (the task store's own database,
    /// so that a claim and the next occurrence are one transaction).
    pub(crate) fn with_schedules(self, store: Arc<dyn ScheduleStore>) -> Self {
        Self {
            schedules: Some(store),
            ..self
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.ports.clock.now()
    }

    pub(crate) async fn create(&self, cmd: CreateCommand) -> Result<Created, AppError> {
        let p = &self.ports;
        let url = cmd.task.action.webhook().url.as_url().clone();
        p.targets
            .check(&url)
            .await
            .map_err(|refused| ValidationError::new("payload.url", refused.to_string()))?;
        let (key, hash) = cmd
            .idempotency
            .map_or((None, None), |(k, h)| (Some(k), Some(h)));
        let task = Task::new(
            TaskId::generate(),
            cmd.owner,
            cmd.task,
            p.clock.now(),
            key,
            hash,
        );
        match p.store.create(&task).await? {
            CreateOutcome::Created => {
                // The task exists from here on: whatever happens to its wake-up, the answer
                // is 201 (the sweeper arms what was not armed).
                self.arm_or_defer(&task).await;
                p.metrics.task_created();
                info!(task_id = %task.id, run_at = %task.run_at, "task created");
                Ok(Created::New(task))
            }
            CreateOutcome::Existing(existing) => {
                if existing.request_hash != task.request_hash {
                    return Err(AppError::Conflict(
                        "Idempotency-Key was already used with a different request".into(),
                    ));
                }
                // The first request may have died between its write and its wake-up;
                // arming again is idempotent, so a repeat also repairs that.
                self.arm_or_defer(&existing).await;
                Ok(Created::Existing(*existing))
            }
        }
    }

    pub(crate) async fn get(&self, owner: &Owner, id: TaskId) -> Result<Task, AppError> {
        match self.ports.store.get(id).await? {
            // Another owner's task is indistinguishable from a missing one.
            Some(t) if &t.owner == owner => Ok(t),
            _ => Err(AppError::NotFound),
        }
    }

    pub(crate) async fn list(&self, query: &ListQuery) -> Result<Page, AppError> {
        if query.schedule_id.is_some() {
            self.schedules()?;
        }
        Ok(self.ports.store.list(query).await?)
    }

    pub(crate) async fn cancel(&self, owner: &Owner, id: TaskId) -> Result<Task, AppError> {
        let task = self
            .transition(owner, id, PENDING_OCCURRENCE_CANCEL, |t, now| t.cancel(now))
            .await?;
        self.disarm_or_warn(&task).await;
        self.ports.metrics.task_cancelled();
        info!(task_id = %id, "task cancelled");
        Ok(task)
    }

    pub(crate) async fn retry(&self, owner: &Owner, id: TaskId) -> Result<Task, AppError> {
        let task = self
            .transition(owner, id, Before::SendUnsentDeadLetter, |t, now| {
                t.retry_failed(now)
            })
            .await?;
        // Revived and written: the retry took effect whether or not its wake-up is armed.
        self.arm_or_defer(&task).await;
        info!(task_id = %id, attempt = task.attempt_number(), "failed task re-armed");
        Ok(task)
    }

    /// Read, do what `before` says, apply a pure transition, write conditionally; a lost
    /// race is re-read and re-decided, so a 409 always reflects the status that won.
    async fn transition(
        &self,
        owner: &Owner,
        id: TaskId,
        before: Before,
        f: impl Fn(&Task, DateTime<Utc>) -> Result<Task, crate::domain::TransitionError>,
    ) -> Result<Task, AppError> {
        for _ in 0..5 {
            let current = self.get(owner, id).await?;
            match before {
                Before::RefusePendingOccurrence(instead) => {
                    self.refuse_pending_occurrence(&current, instead).await?;
                }
                Before::SendUnsentDeadLetter => {
                    if current.unsent_dead_letter().is_some() {
                        self.ports.dead_letters.send(&current).await?;
                    }
                }
            }
            let next = f(&current, self.now()).map_err(|e| AppError::Conflict(e.to_string()))?;
            match self.ports.store.update(&next).await {
                Ok(()) => return Ok(next),
                Err(PortError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Unavailable(
            "task is changing too fast; try again".into(),
        ))
    }

    async fn arm_current(&self, task: &Task) -> Result<(), AppError> {
        if let Some((at, wake)) = task.wake() {
            self.ports.waker.arm(wake, at).await?;
        }
        Ok(())
    }

    /// Removes the wake-up of a task just written cancelled. Not fatal when it fails: a
    /// wake-up that still arrives finds the task cancelled.
    async fn disarm_or_warn(&self, task: &Task) {
        let wake = WakeUp {
            task_id: task.id,
            attempt: task.attempt_number(),
        };
        if let Err(e) = self.ports.waker.disarm(wake).await {
            warn!(task_id = %task.id, error = %e, "could not remove the pending wake-up");
        }
    }

    /// Arms the task's wake-up after a write that took effect. A failure is not the
    /// caller's: the task is stored and pending, so the sweeper arms it within its recovery
    /// bound ([`SWEEP_GRACE`]); it is logged and counted (`WakeUpsDeferred`).
    async fn arm_or_defer(&self, task: &Task) {
        if let Err(e) = self.arm_current(task).await {
            self.ports.metrics.wake_up_deferred();
            warn!(task_id = %task.id, attempt = task.attempt_number(), error = %e,
                "task stored but its wake-up could not be armed; the sweeper will arm it");
        }
    }

    /// Sends a failed task's dead letter, then marks it sent. A send that fails leaves the
    /// task in the pending index, where a redelivered wake-up or the sweeper finds it; a mark
    /// that fails means the dead letter may be sent again (dead letters are at least once).
    async fn send_dead_letter(&self, failed: &Task) -> Result<(), AppError> {
        self.ports.dead_letters.send(failed).await?;
        let Some(sent) = failed.dead_letter_sent(self.now()) else {
            return Ok(());
        };
        match self.ports.store.update(&sent).await {
            // A conflict: another sender marked it, or /retry revived the task.
            Ok(()) | Err(PortError::Conflict) => {}
            Err(e) => {
                warn!(task_id = %failed.id, error = %e,
                    "dead letter sent but not marked sent; it may be sent again");
            }
        }
        Ok(())
    }

    /// The sweeper: re-arms every task that should have moved more than [`SWEEP_GRACE`]
    /// before `now` and did not (a `scheduled` task past its due time, a `running` task past
    /// its lease), and sends the dead letters whose send failed. It never delivers: the
    /// wake-ups it arms claim their attempt like any other, so a duplicate is harmless. Reads
    /// at most [`SWEEP_LIMIT`] tasks from the pending index; one task's failure does not
    /// stop the others (it is counted in [`Recovered::failed`] and found again next time).
    pub(crate) async fn recover(
        &self,
        scan: &(impl TaskScan + ?Sized),
        now: DateTime<Utc>,
    ) -> Result<Recovered, AppError> {
        self.sweep(scan, now - SWEEP_GRACE).await
    }

    async fn sweep(
        &self,
        scan: &(impl TaskScan + ?Sized),
        cutoff: DateTime<Utc>,
    ) -> Result<Recovered, AppError> {
        use futures::StreamExt;
        let candidates = scan.overdue(cutoff, SWEEP_LIMIT).await?;
        let outcomes: Vec<_> = futures::stream::iter(candidates)
            .map(|task| self.recover_one(task, cutoff))
            .buffer_unordered(SWEEP_CONCURRENCY)
            .collect()
            .await;
        let mut done = Recovered::default();
        for outcome in outcomes {
            match outcome {
                Ok(None) => {}
                Ok(Some(Fired::DeadLetterSent)) => done.dead_letters += 1,
                Ok(Some(_)) => done.rearmed += 1,
                Err(_) => done.failed += 1,
            }
        }
        Ok(done)
    }

    /// Recovers one task the index named, if it is still stalled as read now.
    async fn recover_one(
        &self,
        task: Task,
        cutoff: DateTime<Utc>,
    ) -> Result<Option<Fired>, AppError> {
        if !task.stalled(cutoff) {
            return Ok(None);
        }
        let pending_at = task.pending_at();
        let result = if task.status == Status::Failed {
            self.send_dead_letter(&task)
                .await
                .map(|()| Fired::DeadLetterSent)
        } else {
            let Some((at, wake)) = task.wake() else {
                return Ok(None);
            };
            let armed = self.ports.waker.arm(wake, at).await;
            if armed.is_ok() {
                self.note_rearmed(&task).await;
            }
            armed.map(|()| Fired::Rearmed).map_err(AppError::from)
        };
        match &result {
            Ok(_) => {
                self.ports.metrics.task_recovered();
                warn!(task_id = %task.id, attempt = task.attempt_number(), status = %task.status,
                    pending_at = ?pending_at, "stalled task recovered by the sweeper");
            }
            Err(e) => {
                error!(task_id = %task.id, status = %task.status, error = %e,
                    "the sweeper could not recover a stalled task; the next sweep tries again");
            }
        }
        result.map(Some)
    }

    /// Writes the sweeper's note that it re-armed `task` (its backoff,
    /// [`Task::sweep_at`]), after the wake-up was armed: if this write fails or meets a
    /// change, the task is only re-armed sooner next time (a duplicate wake-up is harmless);
    /// the other order could leave a task with no wake-up and a backoff to wait out.
    async fn note_rearmed(&self, task: &Task) {
        let Some(noted) = task.rearmed_now(self.now()) else {
            return;
        };
        match self.ports.store.update(&noted).await {
            Ok(()) | Err(PortError::Conflict) => {}
            Err(e) => {
                warn!(task_id = %task.id, error = %e, "could not note the sweeper's re-arm; the task may be re-armed sooner");
            }
        }
    }

    /// Handles a wake-up that carries the time its attempt is due. A wake-up up to
    /// [`EARLY_WAKE_WAIT`] early (the delay queue counts whole seconds, so its messages
    /// arrive up to one second ahead) waits out the rest and fires on time. An earlier one
    /// (EventBridge Scheduler fires anywhere in its minute, set two minutes ahead) is
    /// re-armed for the remaining time straight away, without a store round trip.
    #[cfg_attr(
        not(feature = "aws"),
        allow(dead_code, reason = "the Lambda host's use case")
    )]
    pub(crate) async fn fire_due(
        &self,
        wake: WakeUp,
        due: Option<DateTime<Utc>>,
    ) -> Result<Fired, AppError> {
        if let Some(due) = due {
            let early = due - self.now();
            if early > EARLY_WAKE_WAIT {
                self.ports.waker.arm(wake, due).await?;
                return Ok(Fired::Rearmed);
            }
            if let Ok(wait) = early.to_std() {
                tokio::time::sleep(wait).await;
            }
        }
        self.fire(wake).await
    }

    /// Fires whichever attempt of task `id` is current: the original design's execution
    /// event names a task, not an attempt. A task that does not exist is `NotFound`.
    #[cfg_attr(
        not(feature = "aws"),
        allow(dead_code, reason = "the Lambda host's use case")
    )]
    pub(crate) async fn fire_task(&self, id: TaskId) -> Result<(WakeUp, Fired), AppError> {
        let task = self.ports.store.get(id).await?.ok_or(AppError::NotFound)?;
        let wake = WakeUp {
            task_id: id,
            attempt: task.attempt_number(),
        };
        Ok((wake, self.fire(wake).await?))
    }

    /// [`fire`](Self::fire) for a host with no redelivery of its own (the local timer fires
    /// each wake-up once): when firing fails, the task is left as stored (perhaps `running`
    /// under a lease no one will finish), so the wake-up is armed again for
    /// [`RETRY_FAILED_WAKE`] later, when any lease it may hold has expired and the attempt
    /// can be re-claimed, rather than waiting for the next start. (On AWS the invocation's
    /// own retry plays this part.)
    pub(crate) async fn fire_or_rearm(&self, wake: WakeUp) {
        if let Err(e) = self.fire(wake).await {
            let again = self.now() + RETRY_FAILED_WAKE;
            error!(task_id = %wake.task_id, attempt = wake.attempt, error = %e, retry_at = %again, "wake-up failed");
            if let Err(e) = self.ports.waker.arm(wake, again).await {
                warn!(task_id = %wake.task_id, attempt = wake.attempt, error = %e, "could not re-arm a failed wake-up");
            }
        }
    }

    /// Start-up recovery: makes claims that no process can still hold re-claimable now, then
    /// sweeps with no grace ([`recover`](Self::recover) without waiting: nothing is in flight
    /// after a restart). At start-up every task `running` was claimed by a process that died,
    /// so waiting out its lease would only delay the attempt (delivery is at-least-once). A
    /// task that changed meanwhile is left to whoever changed it. Returns how many claims
    /// were released.
    pub(crate) async fn recover_leases(&self, scan: &dyn LeaseScan) -> Result<usize, AppError> {
        let now = self.now();
        let mut released = 0;
        for task in scan.running().await? {
            let Some(freed) = task.release_lease(now) else {
                continue;
            };
            match self.ports.store.update(&freed).await {
                Ok(()) => released += 1,
                Err(PortError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let swept = self.sweep(scan, now).await?;
        if swept.failed > 0 {
            return Err(AppError::Unavailable(format!(
                "{} stalled tasks could not be recovered",
                swept.failed
            )));
        }
        Ok(released)
    }

    /// Handles a wake-up: claim the attempt conditionally, deliver, record, then arm the
    /// retry or dead-letter the task. A duplicate wake-up loses the claim and delivers
    /// nothing.
    pub(crate) async fn fire(&self, wake: WakeUp) -> Result<Fired, AppError> {
        let span = info_span!("fire", task_id = %wake.task_id, attempt = wake.attempt);
        self.fire_inner(wake).instrument(span).await
    }

    async fn fire_inner(&self, wake: WakeUp) -> Result<Fired, AppError> {
        let p = &self.ports;
        let now = p.clock.now();
        let running = match p.store.claim(wake.task_id, wake.attempt, now).await? {
            ClaimOutcome::Claimed(t) => t,
            ClaimOutcome::Rejected(None) => {
                warn!("wake-up for an unknown task dropped");
                return Ok(Fired::Dropped);
            }
            ClaimOutcome::Rejected(Some(t)) => return self.rejected(wake, &t, now).await,
        };
        if running.occurrence.is_some() && wake.attempt == 1 {
            // Before delivering: a slow or failing occurrence never delays the next one.
            self.arm_next_occurrence(&running).await;
        }
        let scheduled_for = running.next_attempt_at.unwrap_or(running.run_at);
        let delivery = match p.targets.check(running.action.webhook().url.as_url()).await {
            Ok(()) => p.webhook.deliver(&running, wake.attempt).await,
            Err(reason) => Delivery {
                started_at: p.clock.now(),
                duration: std::time::Duration::ZERO,
                outcome: crate::domain::AttemptOutcome::Failed,
                status_code: None,
                error: Some(format!("target refused: {reason}")),
                hint: RetryHint::Permanent,
            },
        };
        let lateness_ms = (delivery.started_at - scheduled_for).num_milliseconds();
        let (done, next) = running
            .record(
                wake.attempt,
                &delivery,
                p.clock.now(),
                rand::random::<f64>(),
            )
            .map_err(|e| AppError::Unavailable(e.to_string()))?;
        match p.store.update(&done).await {
            Ok(()) => {}
            Err(PortError::Conflict) => {
                // Our lease expired and another wake-up re-claimed the attempt; its record wins.
                warn!("attempt was re-claimed while delivering; outcome not recorded");
                return Ok(Fired::Dropped);
            }
            Err(e) => return Err(e.into()),
        }
        info!(
            outcome = ?delivery.outcome,
            status_code = delivery.status_code,
            duration_ms = delivery.duration.as_millis() as u64,
            lateness_ms,
            status = %done.status,
            "attempt recorded"
        );
        match next {
            Next::Completed => p.metrics.task_delivered(lateness_ms),
            Next::Retry { at, wake } => {
                p.metrics.task_retried();
                p.waker.arm(wake, at).await?;
            }
            Next::Failed => {
                p.metrics.task_failed();
                // On failure the task stays failed with its dead letter unsent: this wake-up's
                // redelivery or the sweeper sends it.
                self.send_dead_letter(&done).await?;
            }
        }
        Ok(Fired::Delivered(next))
    }

    async fn rejected(
        &self,
        wake: WakeUp,
        task: &Task,
        now: DateTime<Utc>,
    ) -> Result<Fired, AppError> {
        match task.claim(wake.attempt, now) {
            Err(ClaimRejection::NotDue { at }) => {
                self.ports.waker.arm(wake, at).await?;
                Ok(Fired::Rearmed)
            }
            // The task's own rule allows the claim the store refused (they disagreed, or the
            // task changed and changed back): never drop it, look again shortly.
            Ok(_) => {
                let at = crate::domain::to_millis(now) + RECLAIM_AFTER_REFUSAL;
                warn!(retry_at = %at, "the store refused a claim the task allows; armed again");
                self.ports.waker.arm(wake, at).await?;
                Ok(Fired::Rearmed)
            }
            // A wake-up for an older attempt while a newer one waits: the newer one's
            // wake-up may have been lost in a crash between write and arm; arm it again
            // (duplicates are harmless, claims are conditional).
            _ if task.status == Status::Scheduled && task.attempt_number() > wake.attempt => {
                self.arm_current(task).await?;
                Ok(Fired::Rearmed)
            }
            // The attempt failed for good but its dead letter was not sent (the send failed
            // and this is the wake-up's redelivery): send it now.
            _ if task.dead_letter_sent(now).is_some() => {
                self.send_dead_letter(task).await?;
                Ok(Fired::DeadLetterSent)
            }
            _ => Ok(Fired::Dropped),
        }
    }
}
