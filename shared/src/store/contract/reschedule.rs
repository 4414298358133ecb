//! Contract cases for moving a task (`PATCH /tasks/{id}`, `/run`): the move is one
//! conditional write, so racing the wake-up's claim or a cancel ends in exactly one winner,
//! and the stores index the task at its new time.

use chrono::TimeDelta;

use super::{Caps, Store, claimed, created, owner, race, rejected, t0, task};
use crate::domain::{LocalRunAt, Status, TaskId};
use crate::ports::{ClaimOutcome, ListQuery, PortError};

/// A move and the wake-up's claim at the old due time, in both orders (or at once): either
/// the move wins (the claim is refused, the task waits for its new time and is claimable
/// then, not a millisecond before) or the claim wins (the move is a conflict and the task
/// is running as claimed).
pub(crate) async fn a_move_races_the_claim(store: Store, caps: Caps) {
    for round in 0..6 {
        let o = owner();
        let t = task(&o, t0(), None);
        created(&store, &t).await;
        let new = t0() + TimeDelta::hours(1);
        let moved = t.reschedule(new, None, t0()).unwrap();
        let (mv, claim) = race(
            caps,
            round % 2 == 1,
            store.update(&moved),
            store.claim(t.id, 1, t0()),
        )
        .await;
        let stored = store.get(t.id).await.unwrap().unwrap();
        match (mv, claim.unwrap()) {
            (Ok(()), ClaimOutcome::Rejected(Some(seen))) => {
                assert_eq!(seen, moved, "round {round}");
                assert_eq!(stored, moved);
                // Never early: the old time's wake-up, or any before the new time, is refused.
                let early = rejected(
                    store
                        .claim(t.id, 1, new - TimeDelta::milliseconds(1))
                        .await
                        .unwrap(),
                );
                assert_eq!(early.map(|t| t.status), Some(Status::Scheduled));
                let running = claimed(store.claim(t.id, 1, new).await.unwrap());
                // Never twice: a second wake-up of the attempt is refused.
                assert!(rejected(store.claim(t.id, 1, new).await.unwrap()).is_some());
                assert_eq!(running.attempt_number(), 1);
            }
            (Err(PortError::Conflict), ClaimOutcome::Claimed(running)) => {
                assert_eq!(stored, running, "round {round}");
            }
            (mv, claim) => panic!("round {round}: both or neither won: {mv:?} {claim:?}"),
        }
    }
}

/// A move and a cancel of the same version: exactly one is written.
pub(crate) async fn a_move_races_a_cancel(store: Store, caps: Caps) {
    for round in 0..6 {
        let o = owner();
        let t = task(&o, t0() + TimeDelta::hours(1), None);
        created(&store, &t).await;
        let moved = t.reschedule(t0(), None, t0()).unwrap();
        let cancelled = t.cancel(t0()).unwrap();
        let (mv, cancel) = race(
            caps,
            round % 2 == 1,
            store.update(&moved),
            store.update(&cancelled),
        )
        .await;
        let stored = store.get(t.id).await.unwrap().unwrap();
        match (mv, cancel) {
            (Ok(()), Err(PortError::Conflict)) => assert_eq!(stored, moved, "round {round}"),
            (Err(PortError::Conflict), Ok(())) => assert_eq!(stored, cancelled, "round {round}"),
            (mv, cancel) => panic!("round {round}: both or neither won: {mv:?} {cancel:?}"),
        }
    }
}

/// A moved task keeps its local time, lists at its new `run_at`, and the sweeper's index
/// follows it.
pub(crate) async fn a_moved_task_is_found_at_its_new_time(store: Store, _caps: Caps) {
    let o = owner();
    let first = task(&o, t0(), None);
    let second = task(&o, t0() + TimeDelta::hours(1), None);
    created(&store, &first).await;
    created(&store, &second).await;
    let (local, at) = LocalRunAt::parse("2027-10-31T02:30:00", "Europe/Paris").unwrap();
    let moved = second
        .reschedule(t0() - TimeDelta::hours(1), Some(local.clone()), t0())
        .unwrap();
    store.update(&moved).await.unwrap();
    let back = store.get(second.id).await.unwrap().unwrap();
    assert_eq!(back, moved);
    assert_eq!(back.local, Some(local.clone()));
    let order = |store: Store, o: crate::domain::Owner| async move {
        store
            .list(&ListQuery {
                owner: o,
                status: None,
                limit: 10,
                after: None,
                schedule_id: None,
            })
            .await
            .unwrap()
            .tasks
            .iter()
            .map(|t| t.id)
            .collect::<Vec<TaskId>>()
    };
    assert_eq!(
        order(store.clone(), o.clone()).await,
        vec![second.id, first.id]
    );
    // Overdue half an hour before the first: only the moved one.
    let overdue = store
        .overdue(t0() - TimeDelta::minutes(30), 10)
        .await
        .unwrap();
    assert_eq!(
        overdue.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![second.id]
    );
    // Moved far ahead (a local time resolved elsewhere): listed last, overdue no more.
    let ahead = back
        .reschedule(at + TimeDelta::days(400), None, t0())
        .unwrap();
    store.update(&ahead).await.unwrap();
    assert_eq!(store.get(second.id).await.unwrap().unwrap().local, None);
    assert_eq!(order(store.clone(), o).await, vec![first.id, second.id]);
    assert!(
        store
            .overdue(t0() + TimeDelta::minutes(30), 10)
            .await
            .unwrap()
            .iter()
            .all(|t| t.id != second.id)
    );
}
