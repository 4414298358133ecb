use std::{fmt, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Action, IdempotencyKey, LocalRunAt, Owner, RetryPolicy, TaskId, ValidationError, to_millis,
};

/// The status machine of docs/api.md:
/// `scheduled → running → completed | failed`, `running → scheduled` while a retry waits,
/// `scheduled → cancelled`, `failed → scheduled` through `/retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    Scheduled,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub(crate) const ALL: [Status; 5] = [
        Self::Scheduled,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "status",
                    "must be one of scheduled, running, completed, failed, cancelled",
                )
            })
    }

    /// Whether the task will never be delivered again (unless a failed one is retried).
    pub(crate) fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Webhook timeout: 1..=30 s, default 10 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub(crate) struct TimeoutSeconds(u32);

impl TimeoutSeconds {
    pub(crate) const MAX: u32 = 30;

    pub(crate) fn parse(n: i64) -> Result<Self, ValidationError> {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=Self::MAX).contains(n))
            .map(Self)
            .ok_or_else(|| ValidationError::new("timeout_seconds", "must be between 1 and 30"))
    }

    pub(crate) fn get(self) -> u32 {
        self.0
    }

    pub(crate) fn duration(self) -> Duration {
        Duration::from_secs(self.0.into())
    }
}

impl Default for TimeoutSeconds {
    fn default() -> Self {
        Self(10)
    }
}

impl TryFrom<u32> for TimeoutSeconds {
    type Error = ValidationError;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Self::parse(n.into())
    }
}

impl From<TimeoutSeconds> for u32 {
    fn from(t: TimeoutSeconds) -> Self {
        t.0
    }
}

/// A validated create request, before it has an id or an owner.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewTask {
    pub(crate) action: Action,
    pub(crate) run_at: DateTime<Utc>,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: TimeoutSeconds,
    /// The local time and zone `run_at` was given as, if it was (`run_at_local`).
    pub(crate) local: Option<LocalRunAt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AttemptOutcome {
    Succeeded,
    Failed,
    TimedOut,
}

/// One delivery attempt, as recorded in the task's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Attempt {
    pub(crate) number: u32,
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) started_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) finished_at: DateTime<Utc>,
    pub(crate) outcome: AttemptOutcome,
    pub(crate) status_code: Option<u16>,
    pub(crate) error: Option<String>,
    pub(crate) duration_ms: u64,
}

/// What the webhook client learned about a failure: may it be retried, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryHint {
    Success,
    Retryable { after: Option<Duration> },
    Permanent,
}

/// The result of one call to the webhook, produced by the `WebhookClient` port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) duration: Duration,
    pub(crate) outcome: AttemptOutcome,
    pub(crate) status_code: Option<u16>,
    pub(crate) error: Option<String>,
    pub(crate) hint: RetryHint,
}

impl Delivery {
    fn attempt(&self, number: u32) -> Attempt {
        Attempt {
            number,
            started_at: self.started_at,
            finished_at: self.started_at + TimeDelta::from_std(self.duration).unwrap_or_default(),
            outcome: self.outcome,
            status_code: self.status_code,
            error: self.error.clone(),
            duration_ms: self.duration.as_millis().try_into().unwrap_or(u64::MAX),
        }
    }
}

/// Recorded when the last attempt fails (locally it stays with the task; on AWS it is also
/// sent to the dead-letter queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeadLetter {
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) attempts: u32,
    pub(crate) last_error: String,
    /// Whether the dead letter has been handed to [`DeadLetters`](crate::ports::DeadLetters).
    /// Written `false` with the failure and `true` after the send, so a send that failed is
    /// found again (the pending index keeps the task until then) and a dead letter is sent at
    /// least once. Stored tasks from before this flag count as sent.
    #[serde(default = "sent_before_the_flag")]
    pub(crate) sent: bool,
}

fn sent_before_the_flag() -> bool {
    true
}

/// A wake-up: "look at attempt `attempt` of task `task_id` now". The attempt number lets a
/// late or duplicated wake-up be recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct WakeUp {
    pub(crate) task_id: TaskId,
    pub(crate) attempt: u32,
}

/// What follows a recorded attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Completed,
    Retry { at: DateTime<Utc>, wake: WakeUp },
    Failed,
}

/// Why a wake-up may not claim its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimRejection {
    /// The attempt is the current one but falls due later: re-arm for `at`.
    NotDue { at: DateTime<Utc> },
    /// Another wake-up holds or held this attempt, or the task moved on.
    Stale,
}

/// A transition the status machine does not allow from the current status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task is {from}; {rule}")]
pub(crate) struct TransitionError {
    pub(crate) from: Status,
    pub(crate) rule: &'static str,
}

/// The sweeper's note on a task it re-armed: the instant it found the task stalled at
/// ([`Task::pending_at`] then), how many times it has re-armed it there, and when last. A
/// task that moves on has another pending instant, so the note no longer applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rearmed {
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) pending_at: DateTime<Utc>,
    pub(crate) count: u32,
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) at: DateTime<Utc>,
}

/// A scheduled webhook call and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Task {
    pub(crate) id: TaskId,
    pub(crate) owner: Owner,
    #[serde(flatten)]
    pub(crate) action: Action,
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) run_at: DateTime<Utc>,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: TimeoutSeconds,
    pub(crate) status: Status,
    pub(crate) attempts: Vec<Attempt>,
    /// Attempts recorded before the current budget began (`/retry` starts a fresh budget).
    pub(crate) budget_start: u32,
    /// When the current attempt is (or was, while running) due.
    #[serde(default, with = "crate::domain::time::stored::option")]
    pub(crate) next_attempt_at: Option<DateTime<Utc>>,
    /// While running: the claim's lease. A wake-up after it may re-claim the attempt, so a
    /// crash mid-delivery is recovered (at-least-once) and a live delivery is never doubled.
    #[serde(default, with = "crate::domain::time::stored::option")]
    pub(crate) lease_until: Option<DateTime<Utc>>,
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::stored")]
    pub(crate) updated_at: DateTime<Utc>,
    /// Bumped by every transition; stores write conditionally on the previous value.
    pub(crate) version: u64,
    pub(crate) idempotency_key: Option<IdempotencyKey>,
    /// Hash of the canonical create request, to tell an idempotent repeat from a conflict.
    pub(crate) request_hash: Option<String>,
    pub(crate) dead_letter: Option<DeadLetter>,
    /// The local time and zone the client gave for `run_at` (`run_at_local` + `timezone`),
    /// kept to show it back; `run_at` is the instant it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) local: Option<LocalRunAt>,
    /// Set on a schedule's occurrences: which schedule, and the instant planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) occurrence: Option<super::Occurrence>,
    /// Set by the sweeper when it re-arms the task ([`Task::rearmed_now`]); internal, never
    /// shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rearmed: Option<Rearmed>,
}

impl Task {
    /// Grace on top of the webhook timeout before a claim is considered abandoned.
    pub(crate) const LEASE_GRACE: TimeDelta = TimeDelta::seconds(30);

    pub(crate) fn new(
        id: TaskId,
        owner: Owner,
        new: NewTask,
        now: DateTime<Utc>,
        idempotency_key: Option<IdempotencyKey>,
        request_hash: Option<String>,
    ) -> Self {
        // Due times are whole milliseconds everywhere: the precision both stores compare at.
        let run_at = to_millis(new.run_at);
        Self {
            id,
            owner,
            action: new.action,
            run_at,
            retry: new.retry,
            timeout: new.timeout,
            status: Status::Scheduled,
            attempts: Vec::new(),
            budget_start: 0,
            next_attempt_at: Some(run_at),
            lease_until: None,
            created_at: now,
            updated_at: now,
            version: 1,
            idempotency_key,
            request_hash,
            dead_letter: None,
            local: new.local,
            occurrence: None,
            rearmed: None,
        }
    }

    /// Whether this task can be its schedule's pending occurrence, so that claiming it may
    /// move the chain on: a planned occurrence before its first attempt. A triggered one is
    /// outside the plan, and one with an attempt was claimed already, which moved the chain
    /// in the same write. The stores read the schedule only for these.
    pub(crate) fn may_move_chain(&self) -> bool {
        self.status == Status::Scheduled
            && self.attempts.is_empty()
            && self.occurrence.as_ref().is_some_and(|o| !o.triggered)
    }

    /// The number of the attempt that is scheduled or running (1-based).
    pub(crate) fn attempt_number(&self) -> u32 {
        u32::try_from(self.attempts.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The wake-up for the current attempt, if the task is waiting or running.
    pub(crate) fn wake(&self) -> Option<(DateTime<Utc>, WakeUp)> {
        let at = match self.status {
            Status::Scheduled => self.next_attempt_at?,
            Status::Running => self.lease_until?,
            _ => return None,
        };
        Some((
            at,
            WakeUp {
                task_id: self.id,
                attempt: self.attempt_number(),
            },
        ))
    }

    /// The instant the task must next be moving, while it needs moving at all: a scheduled
    /// task's due time, a running task's lease end, a failed task's failure while its dead
    /// letter is unsent. The stores index it (the sweeper's query); `None` otherwise.
    pub(crate) fn pending_at(&self) -> Option<DateTime<Utc>> {
        match self.status {
            Status::Scheduled => Some(self.next_attempt_at.unwrap_or(self.run_at)),
            Status::Running => self.lease_until,
            Status::Failed => self.unsent_dead_letter().map(|d| d.recorded_at),
            Status::Completed | Status::Cancelled => None,
        }
    }

    /// The first gap the sweeper leaves after re-arming a task, before it may re-arm the same
    /// stalled instant again, on top of the sweeper's grace; each further re-arm doubles the gap.
    pub(crate) const REARM_BACKOFF: TimeDelta = TimeDelta::seconds(30);
    /// The longest such gap.
    pub(crate) const REARM_BACKOFF_MAX: TimeDelta = TimeDelta::minutes(15);

    /// When the sweeper should look at the task: [`pending_at`](Self::pending_at), or, once
    /// the sweeper has re-armed it at that same instant `n` times, the last re-arm plus
    /// `REARM_BACKOFF · (2^(n-1) - 1)` (at most [`REARM_BACKOFF_MAX`](Self::REARM_BACKOFF_MAX)).
    /// The re-arm's own write moved `updated_at`, which [`stalled`](Self::stalled) also
    /// waits out, so with a grace of 30 s the re-arms of a task that stays stalled are 30,
    /// 60, 120, 240 s... apart: a backlog (wake-ups queued behind a throttled consumer) is
    /// not multiplied by one more wake-up per task on every sweep. The DynamoDB pending
    /// index is keyed by this instant.
    pub(crate) fn sweep_at(&self) -> Option<DateTime<Utc>> {
        let pending = self.pending_at()?;
        Some(match self.rearmed {
            Some(r) if r.pending_at == pending => {
                let doubling = 2_i32.saturating_pow(r.count.saturating_sub(1).min(16)) - 1;
                let gap = (Self::REARM_BACKOFF * doubling).min(Self::REARM_BACKOFF_MAX);
                pending.max(r.at + gap)
            }
            _ => pending,
        })
    }

    /// Whether the task should have moved by `cutoff` and nothing has touched it since: it
    /// was due to the sweeper ([`sweep_at`](Self::sweep_at)) at or before `cutoff` and last
    /// written at or before it. (A task written after `cutoff`, such as one just created
    /// with a `run_at` in the past, is still in its writer's hands.)
    pub(crate) fn stalled(&self, cutoff: DateTime<Utc>) -> bool {
        self.sweep_at().is_some_and(|at| at <= cutoff) && self.updated_at <= cutoff
    }

    /// The task with the sweeper's note that it re-armed it at `now` (one more time at the
    /// same pending instant, or the first time at a new one); `None` when nothing is pending.
    pub(crate) fn rearmed_now(&self, now: DateTime<Utc>) -> Option<Self> {
        let pending_at = self.pending_at()?;
        let count = match self.rearmed {
            Some(r) if r.pending_at == pending_at => r.count.saturating_add(1),
            _ => 1,
        };
        let mut t = self.bumped(now);
        // Whole milliseconds, as every instant an index is keyed by.
        t.rearmed = Some(Rearmed {
            pending_at,
            count,
            at: to_millis(now),
        });
        Some(t)
    }

    /// The dead letter of a failed task while it is not sent yet (its send failed, or has
    /// not happened): the redelivery of the wake-up, the sweeper or `/retry` sends it.
    pub(crate) fn unsent_dead_letter(&self) -> Option<&DeadLetter> {
        self.dead_letter
            .as_ref()
            .filter(|d| self.status == Status::Failed && !d.sent)
    }

    /// Marks the dead letter sent; `None` when there is none waiting.
    pub(crate) fn dead_letter_sent(&self, now: DateTime<Utc>) -> Option<Self> {
        self.unsent_dead_letter()?;
        let mut t = self.bumped(now);
        if let Some(d) = t.dead_letter.as_mut() {
            d.sent = true;
        }
        Some(t)
    }

    /// The lease a claim at `now` takes: the webhook timeout plus a grace.
    pub(crate) fn lease_for(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        to_millis(now + TimeDelta::seconds(self.timeout.get().into()) + Self::LEASE_GRACE)
    }

    fn bumped(&self, now: DateTime<Utc>) -> Self {
        let mut t = self.clone();
        t.version += 1;
        t.updated_at = now;
        t
    }

    /// `scheduled → running` for attempt `attempt`, or re-claims a running attempt whose
    /// lease expired (the process that held it died).
    pub(crate) fn claim(&self, attempt: u32, now: DateTime<Utc>) -> Result<Self, ClaimRejection> {
        if attempt != self.attempt_number() {
            return Err(ClaimRejection::Stale);
        }
        match self.status {
            Status::Scheduled => {
                let due = self.next_attempt_at.unwrap_or(self.run_at);
                if due > now {
                    return Err(ClaimRejection::NotDue { at: due });
                }
            }
            Status::Running if self.lease_until.is_some_and(|l| l <= now) => {}
            _ => return Err(ClaimRejection::Stale),
        }
        let mut t = self.bumped(now);
        t.status = Status::Running;
        t.lease_until = Some(self.lease_for(now));
        Ok(t)
    }

    /// Records the outcome of the running attempt and decides what follows.
    /// `jitter` is a uniform sample of `[0, 1)` for the backoff.
    pub(crate) fn record(
        &self,
        attempt: u32,
        delivery: &Delivery,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Result<(Self, Next), TransitionError> {
        if self.status != Status::Running || attempt != self.attempt_number() {
            return Err(TransitionError {
                from: self.status,
                rule: "only the running attempt can be recorded",
            });
        }
        let mut t = self.bumped(now);
        t.attempts.push(delivery.attempt(attempt));
        t.lease_until = None;
        let used = t.attempts.len() as u32 - t.budget_start;
        let next = match delivery.hint {
            RetryHint::Success => Next::Completed,
            RetryHint::Retryable { after } if used < t.retry.max_attempts.get() => {
                let wait = t.retry.backoff(used, after, jitter);
                let at = to_millis(now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX));
                Next::Retry {
                    at,
                    wake: WakeUp {
                        task_id: t.id,
                        attempt: t.attempt_number(),
                    },
                }
            }
            RetryHint::Retryable { .. } | RetryHint::Permanent => Next::Failed,
        };
        match next {
            Next::Completed => {
                t.status = Status::Completed;
                t.next_attempt_at = None;
            }
            Next::Retry { at, .. } => {
                t.status = Status::Scheduled;
                t.next_attempt_at = Some(at);
            }
            Next::Failed => {
                t.status = Status::Failed;
                t.next_attempt_at = None;
                t.dead_letter = Some(DeadLetter {
                    recorded_at: now,
                    sent: false,
                    attempts: used,
                    last_error: delivery
                        .error
                        .clone()
                        .unwrap_or_else(|| "delivery failed".to_owned()),
                });
            }
        }
        Ok((t, next))
    }

    /// At start-up no process can still hold a claim from before: let a running attempt be
    /// re-claimed at once instead of waiting out its lease (at-least-once delivery).
    pub(crate) fn release_lease(&self, now: DateTime<Utc>) -> Option<Self> {
        if self.status != Status::Running || self.lease_until.is_some_and(|l| l <= now) {
            return None;
        }
        let mut t = self.bumped(now);
        t.lease_until = Some(to_millis(now));
        Some(t)
    }

    /// `scheduled → cancelled`.
    pub(crate) fn cancel(&self, now: DateTime<Utc>) -> Result<Self, TransitionError> {
        if self.status != Status::Scheduled {
            return Err(TransitionError {
                from: self.status,
                rule: "only a scheduled task can be cancelled",
            });
        }
        let mut t = self.bumped(now);
        t.status = Status::Cancelled;
        t.next_attempt_at = None;
        Ok(t)
    }

    /// `scheduled → scheduled`, due at `at` instead (`PATCH /tasks/{id}`; `/run` with `at`
    /// = now and no local time): `run_at` and the next attempt both move to `at`, in whole
    /// milliseconds, and `local` replaces the local time shown. The attempt number stays: a
    /// wake-up still on its way for the old time finds the attempt not yet due (it re-arms
    /// for the new time) or already made (it is stale), so it never delivers early or twice.
    pub(crate) fn reschedule(
        &self,
        at: DateTime<Utc>,
        local: Option<LocalRunAt>,
        now: DateTime<Utc>,
    ) -> Result<Self, TransitionError> {
        if self.status != Status::Scheduled {
            return Err(TransitionError {
                from: self.status,
                rule: "only a scheduled task can be rescheduled or run now",
            });
        }
        let at = to_millis(at);
        let mut t = self.bumped(now);
        t.run_at = at;
        t.next_attempt_at = Some(at);
        t.local = local;
        Ok(t)
    }

    /// `failed → scheduled`, due now, with a fresh attempt budget.
    pub(crate) fn retry_failed(&self, now: DateTime<Utc>) -> Result<Self, TransitionError> {
        if self.status != Status::Failed {
            return Err(TransitionError {
                from: self.status,
                rule: "only a failed task can be retried",
            });
        }
        let mut t = self.bumped(now);
        t.status = Status::Scheduled;
        t.budget_start = t.attempts.len() as u32;
        t.next_attempt_at = Some(to_millis(now));
        t.dead_letter = None;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HttpMethod, WebhookAction, WebhookHeaders, WebhookUrl};

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn task(max_attempts: i64) -> Task {
        let new = NewTask {
            action: Action::Webhook(WebhookAction {
                url: WebhookUrl::parse("https://example.com/hook").unwrap(),
                method: HttpMethod::Post,
                headers: WebhookHeaders::default(),
                data: None,
            }),
            run_at: t0(),
            retry: RetryPolicy::parse(Some(max_attempts), Some(10), Some(60)).unwrap(),
            timeout: TimeoutSeconds::default(),
            local: None,
        };
        Task::new(
            TaskId::generate(),
            Owner::parse("alice").unwrap(),
            new,
            t0() - TimeDelta::hours(1),
            None,
            None,
        )
    }

    fn delivery(hint: RetryHint) -> Delivery {
        let (outcome, code) = match hint {
            RetryHint::Success => (AttemptOutcome::Succeeded, Some(200)),
            RetryHint::Retryable { .. } => (AttemptOutcome::Failed, Some(503)),
            RetryHint::Permanent => (AttemptOutcome::Failed, Some(400)),
        };
        Delivery {
            started_at: t0(),
            duration: Duration::from_millis(12),
            outcome,
            status_code: code,
            error: (hint != RetryHint::Success).then(|| format!("HTTP {}", code.unwrap())),
            hint,
        }
    }

    #[test]
    fn claim_only_when_due_and_only_once() {
        let t = task(3);
        assert_eq!(
            t.claim(1, t0() - TimeDelta::seconds(1)),
            Err(ClaimRejection::NotDue { at: t0() })
        );
        let running = t.claim(1, t0()).unwrap();
        assert_eq!(running.status, Status::Running);
        assert_eq!(running.version, t.version + 1);
        // A duplicate wake-up of the same attempt while the lease holds is stale.
        assert_eq!(
            running.claim(1, t0() + TimeDelta::seconds(5)),
            Err(ClaimRejection::Stale)
        );
        // A wake-up for another attempt is stale.
        assert_eq!(t.claim(2, t0()), Err(ClaimRejection::Stale));
        // After the lease the attempt can be re-claimed (crash recovery).
        let later = running.lease_until.unwrap();
        assert!(running.claim(1, later).is_ok());
    }

    #[test]
    fn success_completes() {
        let running = task(3).claim(1, t0()).unwrap();
        let (done, next) = running
            .record(1, &delivery(RetryHint::Success), t0(), 0.5)
            .unwrap();
        assert_eq!(next, Next::Completed);
        assert_eq!(done.status, Status::Completed);
        assert_eq!(done.attempts.len(), 1);
        assert_eq!(done.attempts[0].duration_ms, 12);
        assert_eq!(done.wake(), None);
        assert!(done.cancel(t0()).is_err());
    }

    #[test]
    fn retryable_failures_back_off_then_fail_with_a_dead_letter() {
        let mut t = task(3);
        for n in 1..=3 {
            let now = t.next_attempt_at.unwrap();
            let running = t.claim(n, now).unwrap();
            let (after, next) = running
                .record(n, &delivery(RetryHint::Retryable { after: None }), now, 0.5)
                .unwrap();
            t = after;
            if n < 3 {
                let ceiling = 10 * (1 << (n - 1));
                let expected = now + TimeDelta::milliseconds(ceiling * 500);
                assert_eq!(
                    next,
                    Next::Retry {
                        at: expected,
                        wake: WakeUp {
                            task_id: t.id,
                            attempt: n + 1
                        }
                    }
                );
                assert_eq!(t.status, Status::Scheduled);
            } else {
                assert_eq!(next, Next::Failed);
            }
        }
        assert_eq!(t.status, Status::Failed);
        let dl = t.dead_letter.clone().unwrap();
        assert_eq!((dl.attempts, dl.last_error.as_str()), (3, "HTTP 503"));
        // /retry starts a fresh budget at attempt 4.
        let again = t.retry_failed(t0() + TimeDelta::hours(1)).unwrap();
        assert_eq!(
            (
                again.status,
                again.attempt_number(),
                again.dead_letter.clone()
            ),
            (Status::Scheduled, 4, None)
        );
        let r = again.claim(4, t0() + TimeDelta::hours(1)).unwrap();
        let (_, next) = r
            .record(
                4,
                &delivery(RetryHint::Retryable { after: None }),
                t0(),
                0.0,
            )
            .unwrap();
        assert!(
            matches!(next, Next::Retry { .. }),
            "fresh budget allows a retry"
        );
    }

    #[test]
    fn permanent_failure_fails_at_once() {
        let running = task(5).claim(1, t0()).unwrap();
        let (t, next) = running
            .record(1, &delivery(RetryHint::Permanent), t0(), 0.5)
            .unwrap();
        assert_eq!(
            (next, t.status, t.attempts.len()),
            (Next::Failed, Status::Failed, 1)
        );
    }

    #[test]
    fn status_machine_refuses_illegal_transitions() {
        let t = task(3);
        assert!(t.retry_failed(t0()).is_err(), "scheduled cannot be retried");
        assert!(
            t.record(1, &delivery(RetryHint::Success), t0(), 0.0)
                .is_err(),
            "not running"
        );
        let cancelled = t.cancel(t0()).unwrap();
        assert_eq!(cancelled.status, Status::Cancelled);
        assert_eq!(cancelled.cancel(t0()).unwrap_err().from, Status::Cancelled);
        assert_eq!(cancelled.claim(1, t0()), Err(ClaimRejection::Stale));
        let running = t.claim(1, t0()).unwrap();
        assert_eq!(
            running.cancel(t0()).unwrap_err().to_string(),
            "task is running; only a scheduled task can be cancelled"
        );
    }

    #[test]
    fn stored_form_round_trips() {
        let t = task(3);
        let json = serde_json::to_string(&t).unwrap();
        let back: Task = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }
}
