//! The store contract: cases every [`TaskStore`] must pass, run against SQLite (here, in
//! `sqlite`'s tests) and DynamoDB on moto server (in `dynamodb`'s tests). Each case uses its
//! own owner, so cases may share one store and run concurrently.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::{
    Action, AttemptOutcome, Delivery, HttpMethod, IdempotencyKey, NewTask, Next, Owner, RetryHint,
    RetryPolicy, Status, Task, TaskId, TimeoutSeconds, WebhookAction, WebhookHeaders, WebhookUrl,
};
use crate::ports::{ClaimOutcome, CreateOutcome, ListQuery, PortError, TaskScan, TaskStore};

mod reschedule;
pub(crate) mod schedules;
pub(crate) use reschedule::{
    a_move_races_a_cancel, a_move_races_the_claim, a_moved_task_is_found_at_its_new_time,
};
#[cfg(feature = "aws")]
pub(crate) use schedules::new_schedule;
pub(crate) use schedules::{
    a_schedule_write_is_all_or_nothing, claiming_the_pending_occurrence_moves_the_chain_on,
    schedules_are_kept_listed_and_idempotent,
};

/// A store under contract: the task store, the sweeper's scan of it, and its schedules.
pub(crate) trait ScanStore: TaskStore + TaskScan + crate::ports::ScheduleStore {}
impl<T: TaskStore + TaskScan + crate::ports::ScheduleStore> ScanStore for T {}

pub(crate) type Store = Arc<dyn ScanStore>;

/// What a store under test guarantees beyond its conditions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    /// Conditional writes to one item are serialized, so racing writers can be run truly
    /// concurrently. SQLite (one writer thread) and real DynamoDB do this; moto server does
    /// not (it evaluates a condition and writes without a per-item lock, so two racing
    /// writers can both pass). Without it the races run in both orders, one after the other,
    /// which still proves the conditions themselves.
    pub(crate) atomic: bool,
}

/// Runs `a` and `b` concurrently on an atomic store, else `a` then `b` (or `b` then `a`).
async fn race<A, B>(
    caps: Caps,
    b_first: bool,
    a: impl std::future::Future<Output = A>,
    b: impl std::future::Future<Output = B>,
) -> (A, B) {
    if caps.atomic {
        tokio::join!(a, b)
    } else if b_first {
        let b = b.await;
        (a.await, b)
    } else {
        let a = a.await;
        (a, b.await)
    }
}

/// A fixed instant (millisecond precision, like parsed API input).
pub(crate) fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000).unwrap()
}

pub(crate) fn owner() -> Owner {
    Owner::parse(&format!(
        "arn:aws:iam::123456789012:user/contract-{}",
        TaskId::generate()
    ))
    .unwrap()
}

/// A task of `owner` due at `run_at`, 3 attempts, with a JSON body that exercises nesting
/// and numbers.
pub(crate) fn task(owner: &Owner, run_at: DateTime<Utc>, key: Option<&str>) -> Task {
    let new = NewTask {
        action: Action::Webhook(WebhookAction {
            url: WebhookUrl::parse("https://example.com/hook").unwrap(),
            method: HttpMethod::Post,
            headers: WebhookHeaders::default(),
            data: Some(
                serde_json::json!({"message": "hi", "n": 3, "x": 1.5, "list": [1, "a", null], "empty": ""}),
            ),
        }),
        run_at,
        retry: RetryPolicy::parse(Some(3), Some(10), Some(60)).unwrap(),
        timeout: TimeoutSeconds::default(),
        local: None,
    };
    Task::new(
        TaskId::generate(),
        owner.clone(),
        new,
        t0() - TimeDelta::hours(1),
        key.map(|k| IdempotencyKey::parse(k).unwrap()),
        key.map(|_| "hash-1".to_owned()),
    )
}

pub(crate) fn delivery(hint: RetryHint, at: DateTime<Utc>) -> Delivery {
    let ok = hint == RetryHint::Success;
    Delivery {
        started_at: at,
        duration: Duration::from_millis(12),
        outcome: if ok {
            AttemptOutcome::Succeeded
        } else {
            AttemptOutcome::Failed
        },
        status_code: Some(if ok { 200 } else { 503 }),
        error: (!ok).then(|| "HTTP 503".to_owned()),
        hint,
    }
}

async fn created(store: &Store, t: &Task) {
    match store.create(t).await.unwrap() {
        CreateOutcome::Created => {}
        CreateOutcome::Existing(e) => panic!("expected a new task, got existing {}", e.id),
    }
}

pub(crate) fn claimed(outcome: ClaimOutcome) -> Task {
    match outcome {
        ClaimOutcome::Claimed(t) => t,
        ClaimOutcome::Rejected(t) => panic!("expected a claim, rejected with {t:?}"),
    }
}

fn rejected(outcome: ClaimOutcome) -> Option<Task> {
    match outcome {
        ClaimOutcome::Claimed(t) => panic!("expected a rejection, claimed {}", t.id),
        ClaimOutcome::Rejected(t) => t,
    }
}

pub(crate) async fn create_and_get(store: Store, _caps: Caps) {
    let o = owner();
    let t = task(&o, t0(), None);
    created(&store, &t).await;
    assert_eq!(store.get(t.id).await.unwrap().as_ref(), Some(&t));
    assert!(store.get(TaskId::generate()).await.unwrap().is_none());
}

pub(crate) async fn idempotent_create(store: Store, caps: Caps) {
    let o = owner();
    let first = task(&o, t0(), Some("key-1"));
    created(&store, &first).await;
    // Same owner, same key, another id: nothing is written, the first task comes back.
    let repeat = task(&o, t0() + TimeDelta::hours(1), Some("key-1"));
    match store.create(&repeat).await.unwrap() {
        CreateOutcome::Existing(e) => assert_eq!(*e, first),
        CreateOutcome::Created => panic!("a repeated idempotency key created a task"),
    }
    assert!(store.get(repeat.id).await.unwrap().is_none());
    // Another owner may use the same key; the same owner another key.
    created(&store, &task(&owner(), t0(), Some("key-1"))).await;
    created(&store, &task(&o, t0(), Some("key-2"))).await;
    // Racing creates with one key: exactly one wins.
    let racers: Vec<Task> = (0..4).map(|_| task(&o, t0(), Some("race"))).collect();
    let outcomes = if caps.atomic {
        futures::future::join_all(racers.iter().map(|t| store.create(t))).await
    } else {
        let mut out = Vec::new();
        for t in &racers {
            out.push(store.create(t).await);
        }
        out
    };
    let winners: Vec<TaskId> = racers
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| matches!(o, Ok(CreateOutcome::Created)))
        .map(|(t, _)| t.id)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    for o in outcomes {
        match o {
            Ok(CreateOutcome::Existing(e)) => assert_eq!(e.id, winners[0]),
            Ok(CreateOutcome::Created) => {}
            // Never an error: a create that met a concurrent one answers with the winner.
            Err(e) => panic!("{e}"),
        }
    }
}

pub(crate) async fn claim_once_under_concurrency(store: Store, caps: Caps) {
    let o = owner();
    let t = task(&o, t0(), None);
    created(&store, &t).await;
    // Not due yet: rejected with the task as it is.
    let early = rejected(
        store
            .claim(t.id, 1, t0() - TimeDelta::seconds(1))
            .await
            .unwrap(),
    );
    assert_eq!(early.map(|t| t.status), Some(Status::Scheduled));
    // Wrong attempt, unknown task.
    assert!(rejected(store.claim(t.id, 2, t0()).await.unwrap()).is_some());
    assert!(rejected(store.claim(TaskId::generate(), 1, t0()).await.unwrap()).is_none());
    // Two wake-ups of one attempt at once: exactly one wins.
    let (a, b) = race(
        caps,
        false,
        store.claim(t.id, 1, t0()),
        store.claim(t.id, 1, t0()),
    )
    .await;
    let (a, b) = (a.unwrap(), b.unwrap());
    let (winner, loser) = match (a, b) {
        (ClaimOutcome::Claimed(w), ClaimOutcome::Rejected(l)) => (w, l),
        (ClaimOutcome::Rejected(l), ClaimOutcome::Claimed(w)) => (w, l),
        other => panic!("expected one claim and one rejection, got {other:?}"),
    };
    assert_eq!(
        (winner.status, winner.version, winner.attempt_number()),
        (Status::Running, 2, 1)
    );
    let lease = winner.lease_until.expect("a lease");
    let expected = t.lease_for(t0());
    assert!(
        (lease - expected).num_milliseconds().abs() <= 1,
        "{lease} vs {expected}"
    );
    assert_eq!(winner.updated_at, t0());
    let loser = loser.expect("the loser sees the task");
    assert_eq!(loser.status, Status::Running);
    assert_eq!(store.get(t.id).await.unwrap().unwrap(), winner);
    // While the lease holds the attempt stays taken; after it, a wake-up re-claims it (the
    // holder died): at-least-once, never two live deliveries.
    assert!(
        rejected(
            store
                .claim(t.id, 1, lease - TimeDelta::seconds(1))
                .await
                .unwrap()
        )
        .is_some()
    );
    let again = claimed(store.claim(t.id, 1, lease).await.unwrap());
    assert_eq!((again.version, again.status), (3, Status::Running));
}

pub(crate) async fn retry_bookkeeping(store: Store, _caps: Caps) {
    let o = owner();
    let t = task(&o, t0(), None);
    created(&store, &t).await;
    let mut current = t.clone();
    for n in 1..=3u32 {
        let due = current.next_attempt_at.unwrap();
        let running = claimed(store.claim(t.id, n, due).await.unwrap());
        let (after, next) = running
            .record(
                n,
                &delivery(RetryHint::Retryable { after: None }, due),
                due,
                0.5,
            )
            .unwrap();
        store.update(&after).await.unwrap();
        // A stale writer (the version before) loses.
        assert!(matches!(
            store.update(&running).await,
            Err(PortError::Conflict)
        ));
        let stored = store.get(t.id).await.unwrap().unwrap();
        assert_eq!(stored, after);
        assert_eq!(stored.attempts.len(), n as usize);
        match next {
            Next::Retry { at, wake } => {
                assert_eq!((stored.status, wake.attempt), (Status::Scheduled, n + 1));
                // The retry is not due before its backoff.
                assert!(
                    rejected(
                        store
                            .claim(t.id, n + 1, at - TimeDelta::milliseconds(5))
                            .await
                            .unwrap()
                    )
                    .is_some()
                );
            }
            Next::Failed => {
                assert_eq!(n, 3);
                assert_eq!(stored.status, Status::Failed);
                assert_eq!(stored.dead_letter.as_ref().unwrap().attempts, 3);
            }
            Next::Completed => unreachable!(),
        }
        current = stored;
    }
    // /retry: a fresh budget from attempt 4, then success.
    let now = t0() + TimeDelta::hours(2);
    let revived = current.retry_failed(now).unwrap();
    store.update(&revived).await.unwrap();
    let running = claimed(store.claim(t.id, 4, now).await.unwrap());
    let (done, _) = running
        .record(4, &delivery(RetryHint::Success, now), now, 0.5)
        .unwrap();
    store.update(&done).await.unwrap();
    let stored = store.get(t.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.attempts.len()),
        (Status::Completed, 4)
    );
}

/// A wake-up that waits out its due time to the instant (the AWS host does) is claimed then,
/// even when the clock that computed the due time had sub-millisecond digits: the store's
/// rounding and the task's own rule agree.
pub(crate) async fn claimable_at_the_exact_due_time(store: Store, _caps: Caps) {
    let o = owner();
    let t = task(&o, t0(), None);
    created(&store, &t).await;
    // A clock with microseconds and nanoseconds, as the system clock has.
    let now = t0() + TimeDelta::nanoseconds(1_234_567);
    let running = claimed(store.claim(t.id, 1, now).await.unwrap());
    // The lease ends exactly at `lease_until`: a re-claim then succeeds.
    let lease = running.lease_until.expect("a lease");
    let running = claimed(store.claim(t.id, 1, lease).await.unwrap());
    let failed_at = lease + TimeDelta::nanoseconds(345_678);
    let (after, next) = running
        .record(
            1,
            &delivery(RetryHint::Retryable { after: None }, failed_at),
            failed_at,
            0.3337,
        )
        .unwrap();
    store.update(&after).await.unwrap();
    let Next::Retry { at, wake } = next else {
        panic!("expected a retry, got {next:?}");
    };
    let retried = claimed(store.claim(t.id, wake.attempt, at).await.unwrap());
    assert_eq!(retried.attempt_number(), 2);
}

pub(crate) async fn cancel_races(store: Store, caps: Caps) {
    for round in 0..6 {
        let o = owner();
        let t = task(&o, t0(), None);
        created(&store, &t).await;
        let cancelled = t.cancel(t0()).unwrap();
        let (cancel, claim) = race(
            caps,
            round % 2 == 1,
            store.update(&cancelled),
            store.claim(t.id, 1, t0()),
        )
        .await;
        let stored = store.get(t.id).await.unwrap().unwrap();
        match (cancel, claim.unwrap()) {
            (Ok(()), ClaimOutcome::Rejected(Some(seen))) => {
                assert_eq!(seen.status, Status::Cancelled, "round {round}");
                assert_eq!(stored.status, Status::Cancelled);
            }
            (Err(PortError::Conflict), ClaimOutcome::Claimed(running)) => {
                assert_eq!(stored, running, "round {round}");
            }
            (cancel, claim) => panic!("round {round}: both or neither won: {cancel:?} {claim:?}"),
        }
    }
    // A second cancel of the same version loses.
    let o = owner();
    let t = task(&o, t0(), None);
    created(&store, &t).await;
    store.update(&t.cancel(t0()).unwrap()).await.unwrap();
    assert!(matches!(
        store
            .update(&t.cancel(t0() + TimeDelta::seconds(1)).unwrap())
            .await,
        Err(PortError::Conflict)
    ));
}

pub(crate) async fn list_paging(store: Store, _caps: Caps) {
    let o = owner();
    let other = owner();
    let mut mine = Vec::new();
    // Equal run_at values too: the order is (run_at, task_id).
    for i in [5i64, 1, 3, 3, 9, 1, 7] {
        let t = task(&o, t0() + TimeDelta::seconds(i), None);
        created(&store, &t).await;
        mine.push(t);
    }
    created(&store, &task(&other, t0(), None)).await;
    mine.sort_by_key(|t| (t.run_at, t.id));

    let page_through = |status: Option<Status>, limit: u32| {
        let store = store.clone();
        let o = o.clone();
        async move {
            let mut seen = Vec::new();
            let mut after = None;
            let mut pages = 0;
            loop {
                let page = store
                    .list(&ListQuery {
                        owner: o.clone(),
                        status,
                        schedule_id: None,
                        limit,
                        after,
                    })
                    .await
                    .unwrap();
                pages += 1;
                assert!(page.tasks.len() <= limit as usize);
                seen.extend(page.tasks.iter().map(|t| t.id));
                match page.next {
                    Some(c) => after = Some(c),
                    None => break,
                }
                assert!(pages < 20, "paging does not end");
            }
            (seen, pages)
        }
    };
    let all: Vec<TaskId> = mine.iter().map(|t| t.id).collect();
    assert_eq!(page_through(None, 3).await, (all.clone(), 3));
    assert_eq!(
        page_through(None, 7).await,
        (all.clone(), 1),
        "exact fit: no next"
    );
    assert_eq!(page_through(None, 100).await, (all.clone(), 1));

    // By status: cancel two, claim one.
    for t in &mine[..2] {
        store.update(&t.cancel(t0()).unwrap()).await.unwrap();
    }
    claimed(store.claim(mine[2].id, 1, mine[2].run_at).await.unwrap());
    let ids = |r: std::ops::Range<usize>| mine[r].iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(page_through(Some(Status::Cancelled), 1).await.0, ids(0..2));
    assert_eq!(page_through(Some(Status::Running), 2).await.0, ids(2..3));
    assert_eq!(page_through(Some(Status::Scheduled), 2).await.0, ids(3..7));
    assert!(page_through(Some(Status::Failed), 2).await.0.is_empty());
}

/// An idempotency key lives at least as long as its task: a repeat finds the task while it
/// waits, after it failed, after `/retry` revived it, and after it finished; and concurrent
/// creates with one key answer one `Created` and the same task to every other, never an
/// error.
pub(crate) async fn idempotency_key_lasts_as_long_as_its_task(store: Store, caps: Caps) {
    let o = owner();
    let repeat = |store: Store, o: Owner| async move {
        match store
            .create(&task(&o, t0(), Some("long-lived")))
            .await
            .unwrap()
        {
            CreateOutcome::Existing(e) => *e,
            CreateOutcome::Created => panic!("the key was forgotten while its task exists"),
        }
    };
    // Concurrent creates: one wins, the others get its task.
    let racers: Vec<Task> = (0..3).map(|_| task(&o, t0(), Some("long-lived"))).collect();
    let outcomes = if caps.atomic {
        futures::future::join_all(racers.iter().map(|t| store.create(t))).await
    } else {
        let mut out = Vec::new();
        for t in &racers {
            out.push(store.create(t).await);
        }
        out
    };
    let mut winner = None;
    for (t, outcome) in racers.iter().zip(outcomes) {
        match outcome.expect("a concurrent create with one key never fails") {
            CreateOutcome::Created => {
                assert!(winner.replace(t.clone()).is_none(), "two tasks for one key");
            }
            CreateOutcome::Existing(_) => {}
        }
    }
    let t = winner.expect("one create wins");
    assert_eq!(repeat(store.clone(), o.clone()).await, t);
    // Fails for good; a repeat still finds it.
    let running = claimed(store.claim(t.id, 1, t0()).await.unwrap());
    let (failed, _) = running
        .record(1, &delivery(RetryHint::Permanent, t0()), t0(), 0.5)
        .unwrap();
    store.update(&failed).await.unwrap();
    assert_eq!(repeat(store.clone(), o.clone()).await, failed);
    // Revived long after, by `/retry`, and then waiting out a long backoff.
    let later = t0() + TimeDelta::days(60);
    let revived = failed.retry_failed(later).unwrap();
    store.update(&revived).await.unwrap();
    assert_eq!(repeat(store.clone(), o.clone()).await, revived);
    let running = claimed(store.claim(t.id, 2, later).await.unwrap());
    let (waiting, _) = running
        .record(
            2,
            &delivery(RetryHint::Retryable { after: None }, later),
            later,
            0.99,
        )
        .unwrap();
    store.update(&waiting).await.unwrap();
    assert_eq!(repeat(store.clone(), o.clone()).await, waiting);
    // Finished: still found while the task exists.
    let at = waiting.next_attempt_at.unwrap();
    let running = claimed(store.claim(t.id, 3, at).await.unwrap());
    let (done, _) = running
        .record(3, &delivery(RetryHint::Success, at), at, 0.5)
        .unwrap();
    store.update(&done).await.unwrap();
    assert_eq!(repeat(store.clone(), o.clone()).await, done);
}

/// A write is applied once: the same write sent again (what a caller's retry after an
/// unknown outcome is, at the port) is a conflict and changes nothing, and a claim sent
/// again is refused and does not extend the lease. A store recognises its own write only
/// within one call (the retries of a lost response), never across calls.
pub(crate) async fn a_write_is_applied_once(store: Store, _caps: Caps) {
    let o = owner();
    let t = task(&o, t0(), None);
    created(&store, &t).await;
    let running = claimed(store.claim(t.id, 1, t0()).await.unwrap());
    let again = rejected(store.claim(t.id, 1, t0()).await.unwrap());
    assert_eq!(again.as_ref(), Some(&running));
    let (done, _) = running
        .record(1, &delivery(RetryHint::Success, t0()), t0(), 0.5)
        .unwrap();
    store.update(&done).await.unwrap();
    assert!(matches!(
        store.update(&done).await,
        Err(PortError::Conflict)
    ));
    assert_eq!(store.get(t.id).await.unwrap().unwrap(), done);
    let c = task(&o, t0(), None);
    created(&store, &c).await;
    let cancelled = c.cancel(t0()).unwrap();
    store.update(&cancelled).await.unwrap();
    assert!(matches!(
        store.update(&cancelled).await,
        Err(PortError::Conflict)
    ));
    assert_eq!(store.get(c.id).await.unwrap().unwrap(), cancelled);
}

/// A due time made from a clock with sub-millisecond digits (`delay_seconds`) is
/// claimable exactly when the task's own rule says so: the store does not round it up past
/// an instant the domain calls due (DynamoDB refused such a claim, and the wake-up was
/// dropped).
pub(crate) async fn sub_millisecond_due_times_are_claimable_when_the_task_says(
    store: Store,
    _caps: Caps,
) {
    let o = owner();
    let due = t0() + TimeDelta::nanoseconds(456_789);
    let t = task(&o, due, None);
    created(&store, &t).await;
    let at = t.next_attempt_at.unwrap();
    assert!(at <= due && t.claim(1, at).is_ok());
    assert!(
        rejected(
            store
                .claim(t.id, 1, at - TimeDelta::milliseconds(1))
                .await
                .unwrap()
        )
        .is_some()
    );
    claimed(store.claim(t.id, 1, at).await.unwrap());
}

/// The sweeper's query: exactly the tasks that should be moving by the cutoff (a scheduled
/// task's due time, a running one's lease end, a failed one's failure while its dead letter
/// is unsent), from an index, bounded; never a finished task. A running task is named from
/// its lease's end exactly, on both stores.
pub(crate) async fn overdue_names_what_should_be_moving(store: Store, _caps: Caps) {
    let o = owner();
    let ids = |tasks: Vec<Task>| {
        let mut ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<TaskId>| {
        v.sort();
        v
    };
    let due = task(&o, t0(), None);
    let later = task(&o, t0() + TimeDelta::hours(1), None);
    let running = task(&o, t0(), None);
    let done = task(&o, t0(), None);
    let cancelled = task(&o, t0(), None);
    let failed = task(&o, t0(), None);
    for t in [&due, &later, &running, &done, &cancelled, &failed] {
        created(&store, t).await;
    }
    let lease = claimed(store.claim(running.id, 1, t0()).await.unwrap())
        .lease_until
        .unwrap();
    let finish = |t: Task, hint: RetryHint, at: DateTime<Utc>| {
        let store = store.clone();
        async move {
            let r = claimed(store.claim(t.id, 1, t0()).await.unwrap());
            let (after, _) = r.record(1, &delivery(hint, at), at, 0.5).unwrap();
            store.update(&after).await.unwrap();
            after
        }
    };
    finish(done.clone(), RetryHint::Success, t0()).await;
    store
        .update(&cancelled.cancel(t0()).unwrap())
        .await
        .unwrap();
    let failed_at = t0() + TimeDelta::seconds(1);
    let failed = finish(failed.clone(), RetryHint::Permanent, failed_at).await;
    assert!(!failed.dead_letter.as_ref().unwrap().sent);

    let ms = TimeDelta::milliseconds(1);
    let overdue = |cutoff: DateTime<Utc>| {
        let store = store.clone();
        async move { ids(store.overdue(cutoff, 100).await.unwrap()) }
    };
    assert_eq!(overdue(t0() - ms).await, Vec::<TaskId>::new());
    assert_eq!(overdue(t0()).await, vec![due.id]);
    assert_eq!(overdue(failed_at).await, sorted(vec![due.id, failed.id]));
    assert!(!overdue(lease - ms).await.contains(&running.id));
    let late = lease;
    assert_eq!(
        overdue(late).await,
        sorted(vec![due.id, failed.id, running.id])
    );
    // Each task is read afresh, whole.
    let found = store.overdue(late, 100).await.unwrap();
    for t in &found {
        assert_eq!(Some(t), store.get(t.id).await.unwrap().as_ref());
    }
    // Bounded.
    let two = store.overdue(late + TimeDelta::hours(2), 2).await.unwrap();
    assert!(!two.is_empty() && two.len() <= 2, "{}", two.len());
    // A dead letter marked sent leaves the index; a task revived by /retry comes back, due
    // when revived.
    let sent = failed.dead_letter_sent(failed_at).unwrap();
    store.update(&sent).await.unwrap();
    assert_eq!(overdue(late).await, sorted(vec![due.id, running.id]));
    let revived_at = late + TimeDelta::seconds(1);
    store
        .update(&sent.retry_failed(revived_at).unwrap())
        .await
        .unwrap();
    assert!(!overdue(late).await.contains(&failed.id));
    assert!(overdue(revived_at).await.contains(&failed.id));
    // Delivered: gone from the index.
    let r = claimed(store.claim(due.id, 1, late).await.unwrap());
    assert!(
        !overdue(late).await.contains(&due.id),
        "running: its lease is ahead"
    );
    let (after, _) = r
        .record(1, &delivery(RetryHint::Success, late), late, 0.5)
        .unwrap();
    store.update(&after).await.unwrap();
    assert!(
        !overdue(late + TimeDelta::hours(3)).await.contains(&due.id),
        "completed"
    );
}

/// The sweeper's backoff ([`Task::sweep_at`]): a task it re-armed twice at the same pending
/// instant is not named again before the backoff ends, and is from then on; the note is
/// stored with the task. Once the task moves on (claimed by a process that then dies), its
/// lease end counts, the old note no longer holds it back.
pub(crate) async fn a_rearmed_task_waits_out_the_sweepers_backoff(store: Store, _caps: Caps) {
    let o = owner();
    let t = task(&o, t0(), None);
    created(&store, &t).await;
    let s = TimeDelta::seconds;
    let first = t.rearmed_now(t0() + s(30)).unwrap();
    store.update(&first).await.unwrap();
    let second = first.rearmed_now(t0() + s(60)).unwrap();
    store.update(&second).await.unwrap();
    assert_eq!(store.get(t.id).await.unwrap().as_ref(), Some(&second));
    let back = second.sweep_at().unwrap();
    assert_eq!(
        back,
        t0() + s(90),
        "re-armed twice: 30 s more than the last re-arm"
    );
    let ms = TimeDelta::milliseconds(1);
    let named = |cutoff: DateTime<Utc>| {
        let store = store.clone();
        async move {
            store
                .overdue(cutoff, 100)
                .await
                .unwrap()
                .iter()
                .any(|x| x.id == t.id)
        }
    };
    assert!(!named(back - ms).await, "within the backoff");
    assert!(named(back).await);
    let running = claimed(store.claim(t.id, 1, back).await.unwrap());
    let lease = running.lease_until.unwrap();
    assert!(!named(lease - ms).await);
    assert!(
        named(lease).await,
        "the note was for the old pending instant"
    );
}

/// Generates one `#[tokio::test]` per contract case for a store built by `$make` (an async
/// expression yielding a [`Store`]) with capabilities `$caps`; attributes after them (such as
/// `#[ignore = "..."]` for a store that needs an emulator) go on every case.
macro_rules! store_contract_tests {
    ($make:expr, $caps:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::store::contract::store_contract_tests!(@case [$(#[$attr])*] $make, $caps;
            create_and_get, idempotent_create, claim_once_under_concurrency, retry_bookkeeping,
            claimable_at_the_exact_due_time, cancel_races, list_paging,
            idempotency_key_lasts_as_long_as_its_task, a_write_is_applied_once,
            overdue_names_what_should_be_moving, a_rearmed_task_waits_out_the_sweepers_backoff,
            sub_millisecond_due_times_are_claimable_when_the_task_says,
            a_move_races_the_claim, a_move_races_a_cancel, a_moved_task_is_found_at_its_new_time,
            schedules_are_kept_listed_and_idempotent,
            claiming_the_pending_occurrence_moves_the_chain_on,
            a_schedule_write_is_all_or_nothing);
    };
    (@case $attrs:tt $make:expr, $caps:expr; $($case:ident),*) => {
        $($crate::store::contract::store_contract_tests!(@one $attrs $make, $caps, $case);)*
    };
    (@one [$($attr:tt)*] $make:expr, $caps:expr, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $case() {
            $crate::store::contract::$case($make.await, $caps).await;
        }
    };
}
pub(crate) use store_contract_tests;

#[cfg(test)]
mod sqlite {
    use super::Store;
    use std::sync::Arc;

    async fn store() -> Store {
        let dir = tempfile::tempdir().unwrap().keep();
        Arc::new(crate::store::SqliteStore::open(&dir).unwrap())
    }

    super::store_contract_tests!(store(), super::Caps { atomic: true });
}
