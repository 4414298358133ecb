//! A recurring schedule: a [`Plan`] and a task template. Its occurrences are ordinary tasks
//! ([`Task::occurrence`] links them back); an active schedule always has exactly one pending
//! occurrence, the chain's next link ([`Schedule::pending`]).

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::recurrence::{CronExpr, Every, Plan, Recurrence, parse_timezone};
use super::{
    Action, IdempotencyKey, NewTask, Owner, RetryPolicy, Task, TaskId, TimeoutSeconds,
    ValidationError,
};

/// A schedule id: a ULID, like task ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct ScheduleId(Ulid);

impl ScheduleId {
    pub(crate) fn generate() -> Self {
        Self(Ulid::new())
    }

    pub(crate) fn parse_field(field: &str, s: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new(field, "not a schedule id (26-character ULID)");
        if s.len() != 26 {
            return Err(bad());
        }
        Ulid::from_string(s)
            .ok()
            .filter(|u| u.to_string().eq_ignore_ascii_case(s))
            .map(Self)
            .ok_or_else(bad)
    }

    pub(crate) fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::parse_field("schedule_id", s)
    }
}

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ScheduleId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ScheduleId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ScheduleId> for String {
    fn from(id: ScheduleId) -> Self {
        id.to_string()
    }
}

/// What links a task to the schedule it is an occurrence of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Occurrence {
    pub(crate) schedule_id: ScheduleId,
    /// The instant the plan gave it (for a trigger, the instant it was asked for).
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) planned_at: DateTime<Utc>,
    /// Set when this occurrence was claimed more than one period late: it stands for every
    /// occurrence of the missed span, this many of them after itself, which are not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) catch_up: Option<u32>,
    /// Made by `POST /schedules/{id}/trigger`, outside the plan.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) triggered: bool,
    /// Set when this occurrence's claim moved the chain on: the occurrence written with the
    /// claim, which the claimer arms (without reading the schedule again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<Pending>,
}

/// What each occurrence does: a create request without its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskTemplate {
    #[serde(flatten)]
    pub(crate) action: Action,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: TimeoutSeconds,
}

/// The stored form of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PlanRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every: Option<String>,
    timezone: String,
    #[serde(default, with = "crate::domain::time::stored::option")]
    start_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::domain::time::stored::option")]
    end_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::domain::time::stored")]
    anchor: DateTime<Utc>,
}

impl From<Plan> for PlanRepr {
    fn from(p: Plan) -> Self {
        let (cron, every) = match &p.recurrence {
            Recurrence::Cron(c) => (Some(c.as_str().to_owned()), None),
            Recurrence::Every(e) => (None, Some(e.to_string())),
        };
        Self {
            cron,
            every,
            timezone: p.timezone.name().to_owned(),
            start_at: p.start_at,
            end_at: p.end_at,
            anchor: p.anchor,
        }
    }
}

impl TryFrom<PlanRepr> for Plan {
    type Error = ValidationError;
    fn try_from(r: PlanRepr) -> Result<Self, Self::Error> {
        let recurrence = match (r.cron, r.every) {
            (Some(c), None) => Recurrence::Cron(CronExpr::parse("cron", &c)?),
            (None, Some(e)) => Recurrence::Every(Every::parse("every", &e)?),
            _ => {
                return Err(ValidationError::new(
                    "cron",
                    "exactly one of cron and every",
                ));
            }
        };
        Ok(Self {
            recurrence,
            timezone: parse_timezone("timezone", &r.timezone)?,
            start_at: r.start_at,
            end_at: r.end_at,
            anchor: r.anchor,
        })
    }
}

/// The chain's next link: the occurrence task that is `scheduled` now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub(crate) task_id: TaskId,
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) at: DateTime<Utc>,
}

/// A recurring schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Schedule {
    pub(crate) id: ScheduleId,
    pub(crate) owner: Owner,
    #[serde(with = "plan_serde")]
    pub(crate) plan: Plan,
    pub(crate) task: TaskTemplate,
    pub(crate) paused: bool,
    pub(crate) pending: Option<Pending>,
    /// The occurrence claimed (or triggered) last.
    pub(crate) last_task_id: Option<TaskId>,
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) updated_at: DateTime<Utc>,
    /// Bumped by every change; stores write conditionally on the previous value.
    pub(crate) version: u64,
    pub(crate) idempotency_key: Option<IdempotencyKey>,
    pub(crate) request_hash: Option<String>,
}

mod plan_serde {
    use super::{Plan, PlanRepr};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(p: &Plan, s: S) -> Result<S::Ok, S::Error> {
        PlanRepr::from(p.clone()).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Plan, D::Error> {
        let repr = PlanRepr::deserialize(d)?;
        Plan::try_from(repr).map_err(serde::de::Error::custom)
    }
}

/// A validated `POST /schedules` body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewSchedule {
    pub(crate) recurrence: Recurrence,
    pub(crate) timezone: chrono_tz::Tz,
    pub(crate) start_at: Option<DateTime<Utc>>,
    pub(crate) end_at: Option<DateTime<Utc>>,
    pub(crate) paused: bool,
    pub(crate) task: TaskTemplate,
}

/// A validated `PATCH /schedules/{id}` body: each field present is changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ScheduleChanges {
    pub(crate) recurrence: Option<Recurrence>,
    pub(crate) timezone: Option<chrono_tz::Tz>,
    pub(crate) task: Option<TaskTemplate>,
    pub(crate) paused: Option<bool>,
    /// `Some(None)` removes the end.
    pub(crate) end_at: Option<Option<DateTime<Utc>>>,
}

/// A schedule change and what it does to the occurrence tasks, to be written in one
/// transaction: the pending occurrence cancelled (`cancel`), a new one created (`create`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Replanned {
    pub(crate) schedule: Schedule,
    pub(crate) create: Option<Task>,
}

impl Schedule {
    /// How many missed occurrences a catch-up counts at most: counting walks the plan, inside
    /// the claim's transaction, so a second-by-second schedule down for a day stops at this.
    pub(crate) const MAX_MISSED: u32 = 10_000;

    /// A new schedule and its first occurrence (none while paused, or when the plan has no
    /// occurrence after `now`).
    pub(crate) fn create(
        id: ScheduleId,
        owner: Owner,
        new: NewSchedule,
        now: DateTime<Utc>,
        idempotency_key: Option<IdempotencyKey>,
        request_hash: Option<String>,
    ) -> Replanned {
        let plan = Plan {
            recurrence: new.recurrence,
            timezone: new.timezone,
            start_at: new.start_at,
            end_at: new.end_at,
            anchor: super::to_millis(new.start_at.unwrap_or(now)),
        };
        let mut s = Self {
            id,
            owner,
            plan,
            task: new.task,
            paused: new.paused,
            pending: None,
            last_task_id: None,
            created_at: now,
            updated_at: now,
            version: 1,
            idempotency_key,
            request_hash,
        };
        let create = s.plan_next(now, now);
        Replanned {
            schedule: s,
            create,
        }
    }

    /// Sets `pending` to the first occurrence after `after` (unless paused) and returns its
    /// task.
    fn plan_next(&mut self, after: DateTime<Utc>, now: DateTime<Utc>) -> Option<Task> {
        let at = self.plan.next_after(after);
        self.plan_at(at, now)
    }

    /// Sets `pending` to an occurrence at `at` (unless paused, or `at` is `None`) and returns
    /// its task.
    fn plan_at(&mut self, at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<Task> {
        self.pending = None;
        if self.paused {
            return None;
        }
        let at = at?;
        let task = self.occurrence_task(at, now, false);
        self.pending = Some(Pending {
            task_id: task.id,
            at,
        });
        Some(task)
    }

    /// An occurrence task due at `at`.
    pub(crate) fn occurrence_task(
        &self,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        triggered: bool,
    ) -> Task {
        let mut task = Task::new(
            TaskId::generate(),
            self.owner.clone(),
            NewTask {
                action: self.task.action.clone(),
                run_at: at,
                retry: self.task.retry,
                timeout: self.task.timeout,
                local: None,
            },
            now,
            None,
            None,
        );
        task.occurrence = Some(Occurrence {
            schedule_id: self.id,
            planned_at: task.run_at,
            catch_up: None,
            triggered,
            next: None,
        });
        task
    }

    fn bumped(&self, now: DateTime<Utc>) -> Self {
        let mut s = self.clone();
        s.version += 1;
        s.updated_at = now;
        s
    }

    /// Whether `task` is this schedule's pending occurrence (the chain's next link).
    pub(crate) fn is_pending(&self, task: TaskId) -> bool {
        self.pending.is_some_and(|p| p.task_id == task)
    }

    /// The chain moves on when its pending occurrence is claimed at `now`: the next
    /// occurrence is planned after `max(planned, now)`, so a late claim never produces a
    /// storm. A claim more than one period late marks the claimed task as the catch-up for
    /// the occurrences it missed. Returns the schedule, the next occurrence, and the claimed
    /// task with its catch-up mark; `None` when `claimed` is not the pending occurrence.
    pub(crate) fn advance(&self, claimed: &Task, now: DateTime<Utc>) -> Option<(Replanned, Task)> {
        if !self.is_pending(claimed.id) {
            return None;
        }
        let planned = claimed
            .occurrence
            .as_ref()
            .map_or(claimed.run_at, |o| o.planned_at);
        let mut marked = claimed.clone();
        let (missed, next) = self.plan.catch_up(planned, now, Self::MAX_MISSED);
        if missed > 0
            && let Some(o) = marked.occurrence.as_mut()
        {
            o.catch_up = Some(missed);
        }
        let mut s = self.bumped(now);
        s.last_task_id = Some(claimed.id);
        let create = s.plan_at(next, now);
        if let Some(o) = marked.occurrence.as_mut() {
            o.next = s.pending;
        }
        Some((
            Replanned {
                schedule: s,
                create,
            },
            marked,
        ))
    }

    /// Applies a PATCH: the plan changes from now on, and the pending occurrence (which the
    /// caller cancels in the same write) is replaced by one planned after `now`.
    pub(crate) fn change(&self, changes: ScheduleChanges, now: DateTime<Utc>) -> Replanned {
        let mut s = self.bumped(now);
        let recurrence_changed = changes.recurrence.is_some();
        if let Some(r) = changes.recurrence {
            s.plan.recurrence = r;
        }
        if let Some(tz) = changes.timezone {
            s.plan.timezone = tz;
        }
        if let Some(end) = changes.end_at {
            s.plan.end_at = end;
        }
        if let Some(t) = changes.task {
            s.task = t;
        }
        if let Some(p) = changes.paused {
            s.paused = p;
        }
        // A new period counts from now, not from the old anchor.
        if recurrence_changed && s.plan.start_at.is_none_or(|start| start <= now) {
            s.plan.anchor = super::to_millis(now);
        }
        let create = s.plan_next(now, now);
        Replanned {
            schedule: s,
            create,
        }
    }

    /// `POST /schedules/{id}/trigger`: an occurrence due now, outside the plan; the chain is
    /// not touched.
    pub(crate) fn trigger(&self, now: DateTime<Utc>) -> Replanned {
        let mut s = self.bumped(now);
        let task = s.occurrence_task(now, now, true);
        s.last_task_id = Some(task.id);
        Replanned {
            schedule: s,
            create: Some(task),
        }
    }

    /// The schedule as it is deleted: a new version with nothing pending.
    pub(crate) fn delete(&self, now: DateTime<Utc>) -> Replanned {
        let mut s = self.bumped(now);
        s.pending = None;
        Replanned {
            schedule: s,
            create: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HttpMethod, WebhookAction, WebhookHeaders, WebhookUrl};
    use chrono::TimeDelta;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    pub(crate) fn template() -> TaskTemplate {
        TaskTemplate {
            action: Action::Webhook(WebhookAction {
                url: WebhookUrl::parse("https://example.com/hook").unwrap(),
                method: HttpMethod::Post,
                headers: WebhookHeaders::default(),
                data: None,
            }),
            retry: RetryPolicy::parse(None, None, None).unwrap(),
            timeout: TimeoutSeconds::default(),
        }
    }

    fn every(s: &str, now: DateTime<Utc>) -> Replanned {
        Schedule::create(
            ScheduleId::generate(),
            Owner::parse("alice").unwrap(),
            NewSchedule {
                recurrence: Recurrence::Every(Every::parse("every", s).unwrap()),
                timezone: chrono_tz::UTC,
                start_at: None,
                end_at: None,
                paused: false,
                task: template(),
            },
            now,
            None,
            None,
        )
    }

    #[test]
    fn a_new_schedule_has_its_first_occurrence_pending() {
        let now = t("2026-05-17T10:00:00.250Z");
        let r = every("90s", now);
        let task = r.create.unwrap();
        assert_eq!(task.run_at, now + TimeDelta::seconds(90));
        assert_eq!(r.schedule.pending.unwrap().task_id, task.id);
        let o = task.occurrence.unwrap();
        assert_eq!((o.schedule_id, o.planned_at), (r.schedule.id, task.run_at));
    }

    #[test]
    fn a_claim_on_time_plans_the_next_after_the_planned_instant() {
        let now = t("2026-05-17T10:00:00Z");
        let r = every("1m", now);
        let first = r.create.unwrap();
        let claimed_at = first.run_at + TimeDelta::milliseconds(3);
        let (next, marked) = r.schedule.advance(&first, claimed_at).unwrap();
        assert_eq!(marked.occurrence.as_ref().unwrap().catch_up, None);
        let second = next.create.unwrap();
        assert_eq!(second.run_at, first.run_at + TimeDelta::minutes(1));
        assert_eq!(next.schedule.pending.unwrap().task_id, second.id);
        assert_eq!(next.schedule.last_task_id, Some(first.id));
        assert_eq!(next.schedule.version, r.schedule.version + 1);
        // A task that is not the pending occurrence does not move the chain.
        assert!(next.schedule.advance(&first, claimed_at).is_none());
    }

    #[test]
    fn a_claim_late_by_periods_is_one_catch_up_and_the_next_is_after_now() {
        let now = t("2026-05-17T10:00:00Z");
        let r = every("1m", now);
        let first = r.create.unwrap();
        // The host was down for an hour and a half.
        let claimed_at = first.run_at + TimeDelta::minutes(90) + TimeDelta::seconds(5);
        let (next, marked) = r.schedule.advance(&first, claimed_at).unwrap();
        assert_eq!(marked.occurrence.unwrap().catch_up, Some(90));
        let second = next.create.unwrap();
        assert!(second.run_at > claimed_at);
        assert!(second.run_at <= claimed_at + TimeDelta::minutes(1));
    }

    #[test]
    fn paused_schedules_have_nothing_pending_and_resume_plans_from_now() {
        let now = t("2026-05-17T10:00:00Z");
        let r = every("1h", now);
        let paused = r.schedule.change(
            ScheduleChanges {
                paused: Some(true),
                ..Default::default()
            },
            now + TimeDelta::minutes(5),
        );
        assert_eq!((paused.schedule.pending, paused.create), (None, None));
        let later = now + TimeDelta::hours(5) + TimeDelta::minutes(10);
        let resumed = paused.schedule.change(
            ScheduleChanges {
                paused: Some(false),
                ..Default::default()
            },
            later,
        );
        // Anchored at creation: the next whole hour after creation past `later`.
        assert_eq!(resumed.create.unwrap().run_at, now + TimeDelta::hours(6));
    }

    #[test]
    fn trigger_leaves_the_chain_alone() {
        let now = t("2026-05-17T10:00:00Z");
        let r = every("1h", now);
        let trig = r.schedule.trigger(now + TimeDelta::minutes(1));
        let task = trig.create.unwrap();
        assert!(task.occurrence.as_ref().unwrap().triggered);
        assert_eq!(task.run_at, now + TimeDelta::minutes(1));
        assert_eq!(trig.schedule.pending, r.schedule.pending);
    }

    #[test]
    fn stored_form_round_trips() {
        let r = every("15m", t("2026-05-17T10:00:00Z"));
        let json = serde_json::to_string(&r.schedule).unwrap();
        let back: Schedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r.schedule);
        let task = r.create.unwrap();
        let back: Task = serde_json::from_str(&serde_json::to_string(&task).unwrap()).unwrap();
        assert_eq!(back, task);
    }
}
