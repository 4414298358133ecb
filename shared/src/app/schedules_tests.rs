//! Schedules' use cases over the real SQLite store, with a paused clock.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::TimeDelta;

use super::*;
use crate::app::{Fired, SWEEP_GRACE};
use crate::domain::{
    Action, Every, HttpMethod, Next, Recurrence, RetryHint, RetryPolicy, ScheduleChanges,
    TaskTemplate, TimeoutSeconds, WebhookAction, WebhookHeaders, WebhookUrl,
};
use crate::fakes::{Rig, ScriptedWebhook, TokioClock, wake};
use crate::ports::{AllowAllTargets, Clock, ListQuery, TaskStore};

fn alice() -> Owner {
    Owner::parse("alice").unwrap()
}

fn rig_with(webhook: ScriptedWebhook) -> (Rig, Arc<TokioClock>) {
    let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let clock = Arc::new(TokioClock::starting_at(start));
    let rig = Rig::with(webhook, Arc::new(AllowAllTargets), clock.clone());
    (rig, clock)
}

fn rig() -> (Rig, Arc<TokioClock>) {
    rig_with(ScriptedWebhook::default())
}

fn template(max_attempts: i64) -> TaskTemplate {
    TaskTemplate {
        action: Action::Webhook(WebhookAction {
            url: WebhookUrl::parse("https://example.com/tick").unwrap(),
            method: HttpMethod::Post,
            headers: WebhookHeaders::default(),
            data: None,
        }),
        retry: RetryPolicy::parse(Some(max_attempts), Some(1), Some(1)).unwrap(),
        timeout: TimeoutSeconds::default(),
    }
}

fn every(s: &str) -> NewSchedule {
    NewSchedule {
        recurrence: Recurrence::Every(Every::parse("every", s).unwrap()),
        timezone: chrono_tz::UTC,
        start_at: None,
        end_at: None,
        paused: false,
        task: template(3),
    }
}

async fn create(rig: &Rig, new: NewSchedule) -> Schedule {
    let cmd = CreateScheduleCommand {
        owner: alice(),
        schedule: new,
        idempotency: None,
    };
    match rig.scheduler.create_schedule(cmd).await.unwrap() {
        CreatedSchedule::New(s) => s,
        other => panic!("{other:?}"),
    }
}

async fn schedule(rig: &Rig, id: ScheduleId) -> Schedule {
    rig.scheduler
        .get_schedule(&alice(), id)
        .await
        .unwrap()
        .schedule
}

async fn task(rig: &Rig, id: crate::domain::TaskId) -> Task {
    rig.store.get(id).await.unwrap().unwrap()
}

/// The pending occurrence's wake-up, as armed.
fn pending_wake(s: &Schedule) -> (WakeUp, DateTime<Utc>) {
    let p = s.pending.unwrap();
    (
        WakeUp {
            task_id: p.task_id,
            attempt: 1,
        },
        p.at,
    )
}

async fn occurrences(rig: &Rig, id: ScheduleId) -> Vec<Task> {
    rig.scheduler
        .list(&ListQuery::first_page(&alice(), Some(id)))
        .await
        .unwrap()
        .tasks
}

#[tokio::test(start_paused = true)]
async fn each_claim_writes_and_arms_the_next_occurrence() {
    let (rig, clock) = rig();
    let t0 = clock.now();
    let s = create(&rig, every("2s")).await;
    assert_eq!(rig.last_armed(), Some(pending_wake(&s)));
    assert_eq!(s.pending.unwrap().at, t0 + TimeDelta::seconds(2));
    let mut ids = Vec::new();
    for n in 1..=3 {
        let s = schedule(&rig, s.id).await;
        let (w, at) = pending_wake(&s);
        assert_eq!(at, t0 + TimeDelta::seconds(2 * n));
        tokio::time::advance((at - clock.now()).to_std().unwrap()).await;
        assert_eq!(
            rig.scheduler.fire(w).await.unwrap(),
            Fired::Delivered(Next::Completed)
        );
        ids.push(w.task_id);
        // The next occurrence is stored and armed at its instant.
        let after = schedule(&rig, s.id).await;
        assert_eq!(after.last_task_id, Some(w.task_id));
        assert_eq!(rig.last_armed(), Some(pending_wake(&after)));
        assert_eq!(after.pending.unwrap().at, at + TimeDelta::seconds(2));
        assert_eq!(
            task(&rig, after.pending.unwrap().task_id).await.status,
            Status::Scheduled
        );
    }
    // Delivered on their instants, once each.
    let calls = rig.webhook.calls.lock().unwrap().clone();
    assert_eq!(
        calls
            .iter()
            .map(|(w, at)| (w.task_id, *at))
            .collect::<Vec<_>>(),
        ids.iter()
            .enumerate()
            .map(|(i, id)| (*id, t0 + TimeDelta::seconds(2 * (i as i64 + 1))))
            .collect::<Vec<_>>()
    );
    // The schedule's occurrences: three completed, one pending, linked by schedule_id.
    let all = occurrences(&rig, s.id).await;
    assert_eq!(
        all.iter().map(|t| t.status).collect::<Vec<_>>(),
        [
            Status::Completed,
            Status::Completed,
            Status::Completed,
            Status::Scheduled
        ]
    );
    let view = rig.scheduler.get_schedule(&alice(), s.id).await.unwrap();
    assert_eq!(
        view.last.map(|t| (t.id, t.status)),
        Some((ids[2], Status::Completed))
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_claim_is_one_catch_up_never_a_storm() {
    let (rig, clock) = rig();
    let s = create(&rig, every("1m")).await;
    let (w, at) = pending_wake(&s);
    // The host was down for an hour: the wake-up arrives 60 min 30 s late.
    tokio::time::advance(
        (at - clock.now() + TimeDelta::minutes(60) + TimeDelta::seconds(30))
            .to_std()
            .unwrap(),
    )
    .await;
    let now = clock.now();
    rig.scheduler.fire(w).await.unwrap();
    let claimed = task(&rig, w.task_id).await;
    assert_eq!(claimed.occurrence.unwrap().catch_up, Some(60));
    assert_eq!(rig.webhook.call_count(), 1);
    // The next one is planned after now, on the plan's grid.
    let next = schedule(&rig, s.id).await.pending.unwrap();
    assert_eq!(next.at, at + TimeDelta::minutes(61));
    assert!(next.at > now && next.at - now <= TimeDelta::minutes(1));
    assert_eq!(occurrences(&rig, s.id).await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_occurrence_does_not_delay_the_next() {
    let (rig, clock) = rig_with(ScriptedWebhook::answering(&[RetryHint::Retryable {
        after: None,
    }]));
    let s = create(&rig, every("10s")).await;
    let (w, at) = pending_wake(&s);
    tokio::time::advance((at - clock.now()).to_std().unwrap()).await;
    assert!(matches!(
        rig.scheduler.fire(w).await.unwrap(),
        Fired::Delivered(Next::Retry { .. })
    ));
    // The retry of the first and the next occurrence are both armed; the next on its own
    // instant.
    let next = schedule(&rig, s.id).await.pending.unwrap();
    assert_eq!(next.at, at + TimeDelta::seconds(10));
    let armed = rig.waker.armed.lock().unwrap().clone();
    assert!(armed.contains(&(
        WakeUp {
            task_id: next.task_id,
            attempt: 1
        },
        next.at
    )));
    assert!(
        armed
            .iter()
            .any(|(x, _)| x.task_id == w.task_id && x.attempt == 2)
    );
    // The retried attempt does not move the chain again.
    let first = task(&rig, w.task_id).await;
    let (retry_at, _) = first.wake().unwrap();
    tokio::time::advance((retry_at - clock.now()).to_std().unwrap()).await;
    rig.scheduler.fire(wake(&first)).await.unwrap();
    assert_eq!(schedule(&rig, s.id).await.pending.unwrap(), next);
}

#[tokio::test(start_paused = true)]
async fn when_arming_the_next_fails_the_sweeper_arms_it() {
    let (rig, clock) = rig();
    let s = create(&rig, every("1m")).await;
    let (w, at) = pending_wake(&s);
    tokio::time::advance((at - clock.now()).to_std().unwrap()).await;
    rig.waker.refuse.store(true, Ordering::SeqCst);
    // The claim and the next occurrence were written together; only the arm failed.
    rig.scheduler.fire(w).await.unwrap();
    let next = schedule(&rig, s.id).await;
    let (next_wake, next_at) = pending_wake(&next);
    assert_eq!(
        task(&rig, next_wake.task_id).await.status,
        Status::Scheduled
    );
    assert!(
        !rig.waker
            .armed
            .lock()
            .unwrap()
            .iter()
            .any(|(x, _)| *x == next_wake)
    );
    rig.waker.refuse.store(false, Ordering::SeqCst);
    // Before the grace has passed the sweeper leaves it alone; after, it arms it.
    tokio::time::advance((next_at - clock.now()).to_std().unwrap()).await;
    let swept = rig
        .scheduler
        .recover(&rig.store, clock.now())
        .await
        .unwrap();
    assert_eq!(swept.rearmed, 0);
    tokio::time::advance((SWEEP_GRACE + TimeDelta::seconds(1)).to_std().unwrap()).await;
    let swept = rig
        .scheduler
        .recover(&rig.store, clock.now())
        .await
        .unwrap();
    assert_eq!(swept.rearmed, 1);
    assert_eq!(rig.last_armed(), Some((next_wake, next_at)));
    // And it is delivered, late, as one occurrence; the chain goes on.
    rig.scheduler.fire(next_wake).await.unwrap();
    assert_eq!(rig.webhook.call_count(), 2);
    assert!(schedule(&rig, s.id).await.pending.unwrap().at > clock.now());
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_the_claim_loses_nothing_the_next_start_arms_it() {
    // The claim's transaction is the only step that matters: after it, the next occurrence
    // is on disk whatever happens to the process (here: no arm, no delivery, no record).
    let (rig, clock) = rig();
    let s = create(&rig, every("5s")).await;
    let (w, at) = pending_wake(&s);
    tokio::time::advance((at - clock.now()).to_std().unwrap()).await;
    let claimed = match rig.store.claim(w.task_id, 1, clock.now()).await.unwrap() {
        crate::ports::ClaimOutcome::Claimed(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(claimed.status, Status::Running);
    let after = schedule(&rig, s.id).await;
    let (next_wake, next_at) = pending_wake(&after);
    assert_eq!(next_at, at + TimeDelta::seconds(5));
    // Start-up recovery: the running claim is released and re-delivered, the next
    // occurrence is found on disk by the timer's paging.
    let released = rig.scheduler.recover_leases(&rig.store).await.unwrap();
    assert_eq!(released, 1);
    let due = rig.store.due_after(None, 10).await.unwrap();
    assert!(due.iter().any(|d| d.wake == next_wake && d.at == next_at));
    assert!(due.iter().any(|d| d.wake == w));
    rig.scheduler.fire(w).await.unwrap();
    // Re-claiming the first occurrence did not move the chain a second time.
    assert_eq!(schedule(&rig, s.id).await.pending, after.pending);
    assert_eq!(occurrences(&rig, s.id).await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn pause_resume_and_delete_replace_the_pending_occurrence() {
    let (rig, clock) = rig();
    let s = create(&rig, every("10s")).await;
    let first = s.pending.unwrap();
    let paused = rig
        .scheduler
        .change_schedule(
            &alice(),
            s.id,
            ScheduleChanges {
                paused: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(paused.pending, None);
    assert_eq!(task(&rig, first.task_id).await.status, Status::Cancelled);
    assert!(rig.waker.disarmed.lock().unwrap().contains(&WakeUp {
        task_id: first.task_id,
        attempt: 1
    }));
    // A wake-up of the cancelled occurrence that still arrives delivers nothing.
    tokio::time::advance(Duration::from_secs(35)).await;
    assert_eq!(
        rig.scheduler
            .fire(WakeUp {
                task_id: first.task_id,
                attempt: 1
            })
            .await
            .unwrap(),
        Fired::Dropped
    );
    let resumed = rig
        .scheduler
        .change_schedule(
            &alice(),
            s.id,
            ScheduleChanges {
                paused: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let next = resumed.pending.unwrap();
    assert!(next.at > clock.now() && next.at <= clock.now() + TimeDelta::seconds(10));
    assert_eq!(rig.last_armed(), Some(pending_wake(&resumed)));
    // A new period re-plans at once, from now.
    let changed = rig
        .scheduler
        .change_schedule(
            &alice(),
            s.id,
            ScheduleChanges {
                recurrence: Some(Recurrence::Every(Every::parse("every", "1h").unwrap())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(task(&rig, next.task_id).await.status, Status::Cancelled);
    assert_eq!(
        changed.pending.unwrap().at,
        clock.now() + TimeDelta::hours(1)
    );
    // The pending occurrence cannot be cancelled on its own: the chain would stop.
    let pending = changed.pending.unwrap().task_id;
    assert!(matches!(
        rig.scheduler.cancel(&alice(), pending).await,
        Err(AppError::Conflict(_))
    ));
    // Nor moved or run on its own: the schedule's plan says when it runs.
    assert!(matches!(
        rig.scheduler.run_now(&alice(), pending).await,
        Err(AppError::Conflict(m)) if m.contains("/trigger")
    ));
    assert!(matches!(
        rig.scheduler.reschedule(&alice(), pending, clock.now(), None).await,
        Err(AppError::Conflict(m)) if m.contains("PATCH /schedules")
    ));
    assert_eq!(task(&rig, pending).await.status, Status::Scheduled);
    let deleted = rig.scheduler.delete_schedule(&alice(), s.id).await.unwrap();
    assert_eq!(deleted.pending, None);
    assert_eq!(task(&rig, pending).await.status, Status::Cancelled);
    assert!(matches!(
        rig.scheduler.get_schedule(&alice(), s.id).await,
        Err(AppError::ScheduleNotFound)
    ));
    // The tasks it made keep their history.
    assert_eq!(occurrences(&rig, s.id).await.len(), 3);
    assert_eq!(rig.webhook.call_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn trigger_adds_one_occurrence_now_and_leaves_the_plan() {
    let (rig, clock) = rig();
    let s = create(&rig, every("1h")).await;
    let t = rig
        .scheduler
        .trigger_schedule(&alice(), s.id)
        .await
        .unwrap();
    assert_eq!(t.run_at, crate::domain::to_millis(clock.now()));
    assert!(t.occurrence.as_ref().unwrap().triggered);
    assert_eq!(rig.last_armed(), Some((wake(&t), t.run_at)));
    rig.scheduler.fire(wake(&t)).await.unwrap();
    assert_eq!(rig.webhook.call_count(), 1);
    let after = schedule(&rig, s.id).await;
    assert_eq!(after.pending, s.pending);
    assert_eq!(after.last_task_id, Some(t.id));
}

#[tokio::test(start_paused = true)]
async fn owners_idempotency_and_missing_stores() {
    let (rig, _clock) = rig();
    let key = crate::domain::IdempotencyKey::parse("nightly").unwrap();
    let cmd = |hash: &str| CreateScheduleCommand {
        owner: alice(),
        schedule: every("1h"),
        idempotency: Some((key.clone(), hash.to_owned())),
    };
    let first = match rig.scheduler.create_schedule(cmd("h1")).await.unwrap() {
        CreatedSchedule::New(s) => s,
        other => panic!("{other:?}"),
    };
    match rig.scheduler.create_schedule(cmd("h1")).await.unwrap() {
        CreatedSchedule::Existing(s) => assert_eq!(s.id, first.id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rig.scheduler.create_schedule(cmd("h2")).await,
        Err(AppError::Conflict(_))
    ));
    // One schedule, one pending occurrence.
    assert_eq!(occurrences(&rig, first.id).await.len(), 1);
    let bob = Owner::parse("bob").unwrap();
    assert!(matches!(
        rig.scheduler.get_schedule(&bob, first.id).await,
        Err(AppError::ScheduleNotFound)
    ));
    assert!(matches!(
        rig.scheduler.delete_schedule(&bob, first.id).await,
        Err(AppError::ScheduleNotFound)
    ));
    let (mine, more) = rig
        .scheduler
        .list_schedules(&alice(), 10, None)
        .await
        .unwrap();
    assert_eq!((mine.len(), more), (1, false));
    assert!(
        rig.scheduler
            .list_schedules(&bob, 10, None)
            .await
            .unwrap()
            .0
            .is_empty()
    );
}
