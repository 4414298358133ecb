//! Moving a scheduled task in time: `PATCH /tasks/{task_id}` and `POST /tasks/{task_id}/run`.
//!
//! Both write first, conditionally on the version they read (a race with a wake-up's claim
//! or a cancel is re-read and re-decided, so a `409` names the status that won), then
//! replace the wake-up: the old one is disarmed (best effort) and the new one armed. Once
//! the write took effect the answer is `200` whatever happens to the wake-up, as for create
//! and `/retry`: an arm that fails is logged and counted (`WakeUpsDeferred`), and the
//! sweeper arms the task once it is overdue. A wake-up for the old time that still arrives
//! carries the same attempt number: before the new time its claim finds the attempt not due
//! and re-arms it for the new time; after the attempt was made it is stale. It never
//! delivers early or twice.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::{AppError, Before, Scheduler};
use crate::domain::{LocalRunAt, Owner, Task, TaskId, format_time};

/// What to do instead of moving, or running now, a schedule's pending occurrence.
const PENDING_OCCURRENCE_MOVE: Before =
    Before::RefusePendingOccurrence("change the schedule (PATCH /schedules/{schedule_id}) instead");
const PENDING_OCCURRENCE_RUN: Before = Before::RefusePendingOccurrence(
    "trigger the schedule (POST /schedules/{schedule_id}/trigger) instead",
);

impl Scheduler {
    /// Moves a `scheduled` task to `at` (`local`: the local time and zone it was given as).
    pub(crate) async fn reschedule(
        &self,
        owner: &Owner,
        id: TaskId,
        at: DateTime<Utc>,
        local: Option<LocalRunAt>,
    ) -> Result<Task, AppError> {
        let task = self
            .transition(owner, id, PENDING_OCCURRENCE_MOVE, |t, now| {
                t.reschedule(at, local.clone(), now)
            })
            .await?;
        self.replace_wake_up(&task).await;
        info!(task_id = %id, run_at = %format_time(&task.run_at), "task rescheduled");
        Ok(task)
    }

    /// Makes a `scheduled` task due now.
    pub(crate) async fn run_now(&self, owner: &Owner, id: TaskId) -> Result<Task, AppError> {
        let task = self
            .transition(owner, id, PENDING_OCCURRENCE_RUN, |t, now| {
                t.reschedule(now, None, now)
            })
            .await?;
        self.replace_wake_up(&task).await;
        info!(task_id = %id, "task made due now");
        Ok(task)
    }

    /// Disarms the task's pending wake-up and arms it for its new time. The disarm comes
    /// first: on AWS a schedule is named after the attempt, and the new one takes its name.
    async fn replace_wake_up(&self, task: &Task) {
        if let Some((_, wake)) = task.wake()
            && let Err(e) = self.ports.waker.disarm(wake).await
        {
            // Not fatal: a wake-up that still arrives for the old time is not due then
            // (re-armed for the new time) or stale.
            warn!(task_id = %task.id, error = %e, "could not remove the old wake-up");
        }
        self.arm_or_defer(task).await;
    }
}
