//! Use cases of recurring schedules. Occurrences are ordinary tasks, armed on the same
//! waker and recovered by the same sweeper; a schedule only decides when the next one falls.
//!
//! Every change writes the schedule and its occurrence tasks in one transaction
//! ([`ScheduleWrite`]) and arms afterwards. When arming fails, the occurrence is a stored
//! `scheduled` task like any other: the sweeper arms it (within its recovery bound), and on
//! the local host every start re-arms what is on disk.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::{AppError, Scheduler};
use crate::domain::{
    IdempotencyKey, NewSchedule, Owner, Pending, Replanned, Schedule, ScheduleChanges, ScheduleId,
    Status, Task, ValidationError, WakeUp,
};
use crate::ports::{PortError, ScheduleCreateOutcome, ScheduleStore, ScheduleWrite};

/// How many times a schedule change is re-read and re-decided when it loses a race (with a
/// claim moving the chain, or another change).
const CHANGE_ATTEMPTS: usize = 5;

#[derive(Debug, Clone)]
pub(crate) struct CreateScheduleCommand {
    pub(crate) owner: Owner,
    pub(crate) schedule: NewSchedule,
    pub(crate) idempotency: Option<(IdempotencyKey, String)>,
}

/// A schedule as `GET /schedules/{id}` shows it: with its last occurrence's task.
#[derive(Debug, Clone)]
pub(crate) struct ScheduleView {
    pub(crate) schedule: Schedule,
    pub(crate) last: Option<Task>,
}

#[derive(Debug)]
pub(crate) enum CreatedSchedule {
    New(Schedule),
    Existing(Schedule),
}

/// What a schedule change does.
enum Change {
    Replan(Box<ScheduleChanges>),
    Delete,
    Trigger,
}

impl Scheduler {
    pub(super) fn schedules(&self) -> Result<&Arc<dyn ScheduleStore>, AppError> {
        self.schedules.as_ref().ok_or_else(|| {
            AppError::NotImplemented("schedules are not available on this host".into())
        })
    }

    pub(crate) async fn create_schedule(
        &self,
        cmd: CreateScheduleCommand,
    ) -> Result<CreatedSchedule, AppError> {
        let store = self.schedules()?;
        let url = cmd.schedule.task.action.webhook().url.as_url().clone();
        self.ports
            .targets
            .check(&url)
            .await
            .map_err(|refused| ValidationError::new("task.payload.url", refused.to_string()))?;
        let (key, hash) = cmd
            .idempotency
            .map_or((None, None), |(k, h)| (Some(k), Some(h)));
        let Replanned { schedule, create } = Schedule::create(
            ScheduleId::generate(),
            cmd.owner,
            cmd.schedule,
            self.now(),
            key,
            hash,
        );
        match store.create_schedule(&schedule, create.as_ref()).await? {
            ScheduleCreateOutcome::Created => {
                if let Some(t) = &create {
                    self.arm_or_defer(t).await;
                }
                info!(schedule_id = %schedule.id, next = ?schedule.pending.map(|p| p.at), "schedule created");
                Ok(CreatedSchedule::New(schedule))
            }
            ScheduleCreateOutcome::Existing(existing) => {
                if existing.request_hash != schedule.request_hash {
                    return Err(AppError::Conflict(
                        "Idempotency-Key was already used with a different request".into(),
                    ));
                }
                // The first request may have died between its write and its wake-up.
                self.arm_pending(&existing).await;
                Ok(CreatedSchedule::Existing(*existing))
            }
        }
    }

    pub(crate) async fn get_schedule(
        &self,
        owner: &Owner,
        id: ScheduleId,
    ) -> Result<ScheduleView, AppError> {
        self.view_of(self.owned_schedule(owner, id).await?).await
    }

    /// The schedule with its last occurrence's task, as `GET /schedules/{id}` shows it.
    pub(crate) async fn view_of(&self, schedule: Schedule) -> Result<ScheduleView, AppError> {
        let last = match schedule.last_task_id {
            Some(t) => self.ports.store.get(t).await?,
            None => None,
        };
        Ok(ScheduleView { schedule, last })
    }

    async fn owned_schedule(&self, owner: &Owner, id: ScheduleId) -> Result<Schedule, AppError> {
        match self.schedules()?.get_schedule(id).await? {
            // Another owner's schedule is indistinguishable from a missing one.
            Some(s) if &s.owner == owner => Ok(s),
            _ => Err(AppError::ScheduleNotFound),
        }
    }

    pub(crate) async fn list_schedules(
        &self,
        owner: &Owner,
        limit: u32,
        after: Option<ScheduleId>,
    ) -> Result<(Vec<Schedule>, bool), AppError> {
        Ok(self
            .schedules()?
            .list_schedules(owner, limit, after)
            .await?)
    }

    /// `PATCH /schedules/{id}`: the plan, template or pause changes, and the pending
    /// occurrence is replaced at once (cancelled in the same write).
    pub(crate) async fn change_schedule(
        &self,
        owner: &Owner,
        id: ScheduleId,
        changes: ScheduleChanges,
    ) -> Result<Schedule, AppError> {
        let (s, _) = self
            .apply(owner, id, Change::Replan(Box::new(changes)))
            .await?;
        info!(schedule_id = %id, paused = s.paused, next = ?s.pending.map(|p| p.at), "schedule changed");
        Ok(s)
    }

    /// `DELETE /schedules/{id}`: the schedule and its pending occurrence go; the tasks that
    /// ran keep their history.
    pub(crate) async fn delete_schedule(
        &self,
        owner: &Owner,
        id: ScheduleId,
    ) -> Result<Schedule, AppError> {
        let (s, _) = self.apply(owner, id, Change::Delete).await?;
        info!(schedule_id = %id, "schedule deleted");
        Ok(s)
    }

    /// `POST /schedules/{id}/trigger`: one occurrence now, outside the plan.
    pub(crate) async fn trigger_schedule(
        &self,
        owner: &Owner,
        id: ScheduleId,
    ) -> Result<Task, AppError> {
        let (_, created) = self.apply(owner, id, Change::Trigger).await?;
        let task =
            created.ok_or_else(|| AppError::Unavailable("trigger created no task".into()))?;
        info!(schedule_id = %id, task_id = %task.id, "schedule triggered");
        Ok(task)
    }

    /// Read, decide, write conditionally (schedule and tasks together), then disarm what
    /// was cancelled and arm what was created. A lost race is re-read and re-decided.
    async fn apply(
        &self,
        owner: &Owner,
        id: ScheduleId,
        change: Change,
    ) -> Result<(Schedule, Option<Task>), AppError> {
        let store = self.schedules()?;
        for _ in 0..CHANGE_ATTEMPTS {
            let current = self.owned_schedule(owner, id).await?;
            let now = self.now();
            let (mut write, cancelled) = match &change {
                Change::Trigger => {
                    let r = current.trigger(now);
                    (self.write_of(r, false), None)
                }
                Change::Replan(changes) => {
                    let cancelled = self.cancel_pending(&current, now).await?;
                    let r = current.change((**changes).clone(), now);
                    (self.write_of(r, false), cancelled)
                }
                Change::Delete => {
                    let cancelled = self.cancel_pending(&current, now).await?;
                    (self.write_of(current.delete(now), true), cancelled)
                }
            };
            if let Some(c) = &cancelled {
                write.update.push(c.clone());
            }
            match store.write_schedule(&write).await {
                Ok(()) => {}
                Err(PortError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
            if let Some(c) = cancelled {
                self.disarm_or_warn(&c).await;
            }
            let created = write.insert.pop();
            if let Some(t) = &created {
                self.arm_or_defer(t).await;
            }
            return Ok((write.schedule, created));
        }
        Err(AppError::Unavailable(
            "schedule is changing too fast; try again".into(),
        ))
    }

    fn write_of(&self, r: Replanned, delete: bool) -> ScheduleWrite {
        ScheduleWrite {
            schedule: r.schedule,
            delete,
            update: Vec::new(),
            insert: r.create.into_iter().collect(),
        }
    }

    /// The pending occurrence, cancelled (to be written with the change). A pending
    /// occurrence that is no longer `scheduled` was claimed after the schedule was read:
    /// the write then conflicts on the schedule's version and is decided again.
    async fn cancel_pending(
        &self,
        schedule: &Schedule,
        now: DateTime<Utc>,
    ) -> Result<Option<Task>, AppError> {
        let Some(pending) = schedule.pending else {
            return Ok(None);
        };
        match self.ports.store.get(pending.task_id).await? {
            Some(t) if t.status == Status::Scheduled => Ok(t.cancel(now).ok()),
            _ => Ok(None),
        }
    }

    /// Arms the schedule's pending occurrence (idempotent).
    async fn arm_pending(&self, schedule: &Schedule) {
        if let Some(p) = schedule.pending {
            self.arm_occurrence(p).await;
        }
    }

    /// Arms an occurrence's first attempt. A failure loses nothing: the occurrence is a
    /// stored `scheduled` task, which the sweeper arms.
    async fn arm_occurrence(&self, p: Pending) {
        let wake = WakeUp {
            task_id: p.task_id,
            attempt: 1,
        };
        if let Err(e) = self.ports.waker.arm(wake, p.at).await {
            self.ports.metrics.wake_up_deferred();
            warn!(task_id = %p.task_id, error = %e,
                "occurrence stored but its wake-up could not be armed; the sweeper will arm it");
        }
    }

    /// After a claim: when the claimed task was its schedule's pending occurrence, the
    /// claim's transaction wrote the next one and named it in the claimed task
    /// ([`Occurrence::next`](crate::domain::Occurrence)); arm it. A failure here loses
    /// nothing: the next occurrence is a stored `scheduled` task, which the sweeper arms.
    pub(super) async fn arm_next_occurrence(&self, claimed: &Task) {
        if let Some(next) = claimed.occurrence.as_ref().and_then(|o| o.next) {
            self.arm_occurrence(next).await;
        }
    }

    /// Refuses to cancel (`DELETE /tasks/{id}`), move (`PATCH`) or run now (`/run`) a
    /// schedule's pending occurrence on its own: the chain would stop, or the schedule's plan
    /// would no longer say when it runs. The schedule's own routes are the way.
    pub(super) async fn refuse_pending_occurrence(
        &self,
        task: &Task,
        instead: &str,
    ) -> Result<(), AppError> {
        let (Some(store), Some(o)) = (&self.schedules, &task.occurrence) else {
            return Ok(());
        };
        if let Some(s) = store.get_schedule(o.schedule_id).await?
            && s.is_pending(task.id)
        {
            return Err(AppError::Conflict(format!(
                "task is the pending occurrence of schedule {}; {instead}",
                o.schedule_id
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "schedules_tests.rs"]
mod tests;
