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
    ClaimOutcome, Clock, CreateOutcome, DeadLetters, ListQuery, Metrics, Page, PortError,
    TargetPolicy, TaskScan, TaskStore, Waker, WebhookClient,
};

#[cfg(test)]
mod recovery_tests;
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

/// Errors of the use cases, mapped to HTTP once in `api` and to retryable/permanent once
/// at the Lambda boundary.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("task not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<PortError> for AppError {
    fn from(e: PortError) -> Self {
        Self::Unavailable(e.to_string())
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
    /// Duplicate, stale, or for a task that is gone or finished.
    Dropped,
}

#[derive(Clone)]
pub(crate) struct Scheduler {
    ports: Ports,
}

impl Scheduler {
    pub(crate) fn new(ports: Ports) -> Self {
        Self { ports }
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
                self.arm_current(&task).await?;
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
                self.arm_current(&existing).await?;
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
        Ok(self.ports.store.list(query).await?)
    }

    pub(crate) async fn cancel(&self, owner: &Owner, id: TaskId) -> Result<Task, AppError> {
        let task = self.transition(owner, id, |t, now| t.cancel(now)).await?;
        let wake = WakeUp {
            task_id: id,
            attempt: task.attempt_number(),
        };
        if let Err(e) = self.ports.waker.disarm(wake).await {
            // Not fatal: a wake-up that still arrives finds the task cancelled.
            warn!(task_id = %id, error = %e, "could not remove the pending wake-up");
        }
        self.ports.metrics.task_cancelled();
        info!(task_id = %id, "task cancelled");
        Ok(task)
    }

    pub(crate) async fn retry(&self, owner: &Owner, id: TaskId) -> Result<Task, AppError> {
        let task = self
            .transition(owner, id, |t, now| t.retry_failed(now))
            .await?;
        self.arm_current(&task).await?;
        info!(task_id = %id, attempt = task.attempt_number(), "failed task re-armed");
        Ok(task)
    }

    /// Read, apply a pure transition, write conditionally; a lost race is re-read and
    /// re-decided, so a 409 always reflects the status that won.
    async fn transition(
        &self,
        owner: &Owner,
        id: TaskId,
        f: impl Fn(&Task, DateTime<Utc>) -> Result<Task, crate::domain::TransitionError>,
    ) -> Result<Task, AppError> {
        for _ in 0..5 {
            let current = self.get(owner, id).await?;
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

    /// Makes claims that no process can still hold re-claimable now, and arms them. At
    /// start-up every task `running` was claimed by a process that died, so waiting out its
    /// lease would only delay the attempt (delivery is at-least-once). A task that changed
    /// meanwhile is left to whoever changed it. Returns how many were released.
    pub(crate) async fn recover_leases(&self, scan: &dyn TaskScan) -> Result<usize, AppError> {
        let now = self.now();
        let mut recovered = 0;
        for task in scan.running().await? {
            let Some(released) = task.release_lease(now) else {
                continue;
            };
            match self.ports.store.update(&released).await {
                Ok(()) => {}
                Err(PortError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
            self.arm_current(&released).await?;
            recovered += 1;
        }
        Ok(recovered)
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
                p.dead_letters.send(&done).await?;
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
            // A wake-up for an older attempt while a newer one waits: the newer one's
            // wake-up may have been lost in a crash between write and arm; arm it again
            // (duplicates are harmless, claims are conditional).
            _ if task.status == Status::Scheduled && task.attempt_number() > wake.attempt => {
                self.arm_current(task).await?;
                Ok(Fired::Rearmed)
            }
            _ => Ok(Fired::Dropped),
        }
    }
}
