//! The [`ScheduleStore`] side of the contract: a schedule and its occurrences are written
//! together or not at all, and the claim of the pending occurrence moves the chain on.

use super::*;
use crate::domain::{
    Every, IdempotencyKey, NewSchedule, Recurrence, Schedule, ScheduleChanges, ScheduleId,
    TaskTemplate,
};
use crate::ports::{ScheduleCreateOutcome, ScheduleWrite};

fn every_minute() -> NewSchedule {
    NewSchedule {
        recurrence: Recurrence::Every(Every::parse("every", "1m").unwrap()),
        timezone: chrono_tz::UTC,
        start_at: None,
        end_at: None,
        paused: false,
        task: TaskTemplate {
            action: task(&owner(), t0(), None).action,
            retry: RetryPolicy::parse(Some(1), Some(1), Some(1)).unwrap(),
            timeout: TimeoutSeconds::default(),
        },
    }
}

/// A new schedule (made at `t0`) and its first occurrence.
pub(crate) fn new_schedule(owner: &Owner, key: Option<&str>) -> (Schedule, Task) {
    let r = Schedule::create(
        ScheduleId::generate(),
        owner.clone(),
        every_minute(),
        t0(),
        key.map(|k| IdempotencyKey::parse(k).unwrap()),
        key.map(|_| "hash".to_owned()),
    );
    (r.schedule, r.create.expect("a first occurrence"))
}

async fn occurrences(store: &Store, owner: &Owner, id: ScheduleId) -> Vec<Task> {
    store
        .list(&ListQuery::first_page(owner, Some(id)))
        .await
        .unwrap()
        .tasks
}

pub(crate) async fn schedules_are_kept_listed_and_idempotent(store: Store, _caps: Caps) {
    let o = owner();
    let (s, first) = new_schedule(&o, Some("nightly"));
    assert!(matches!(
        store.create_schedule(&s, Some(&first)).await.unwrap(),
        ScheduleCreateOutcome::Created
    ));
    assert_eq!(store.get_schedule(s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(store.get(first.id).await.unwrap(), Some(first.clone()));
    // The same key again: nothing written, the first schedule returned.
    let (again, again_first) = new_schedule(&o, Some("nightly"));
    match store
        .create_schedule(&again, Some(&again_first))
        .await
        .unwrap()
    {
        ScheduleCreateOutcome::Existing(found) => assert_eq!(*found, s),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get_schedule(again.id).await.unwrap(), None);
    assert_eq!(store.get(again_first.id).await.unwrap(), None);
    // Listing: by owner, in creation order, paged; occurrences by their schedule only.
    let (s2, first2) = new_schedule(&o, None);
    store.create_schedule(&s2, Some(&first2)).await.unwrap();
    let (page, more) = store.list_schedules(&o, 1, None).await.unwrap();
    assert_eq!((page, more), (vec![s.clone()], true));
    let (page, more) = store.list_schedules(&o, 1, Some(s.id)).await.unwrap();
    assert_eq!((page, more), (vec![s2.clone()], false));
    assert!(
        store
            .list_schedules(&owner(), 10, None)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert_eq!(occurrences(&store, &o, s.id).await, vec![first.clone()]);
    assert!(
        occurrences(&store, &owner(), s.id).await.is_empty(),
        "owner's only"
    );
    // Schedules are not tasks: the owner's task listing has only the occurrences.
    let all = store
        .list(&ListQuery::first_page(&o, None))
        .await
        .unwrap()
        .tasks;
    assert_eq!(all.len(), 2);
    // Deleted with its pending occurrence cancelled: gone, and its key is free again.
    let mut gone = s.clone();
    gone.version += 1;
    gone.pending = None;
    store
        .write_schedule(&ScheduleWrite {
            schedule: gone,
            delete: true,
            update: vec![first.cancel(t0()).unwrap()],
            insert: vec![],
        })
        .await
        .unwrap();
    assert_eq!(store.get_schedule(s.id).await.unwrap(), None);
    assert_eq!(
        store.get(first.id).await.unwrap().unwrap().status,
        Status::Cancelled
    );
    let (fresh, fresh_first) = new_schedule(&o, Some("nightly"));
    assert!(matches!(
        store
            .create_schedule(&fresh, Some(&fresh_first))
            .await
            .unwrap(),
        ScheduleCreateOutcome::Created
    ));
}

pub(crate) async fn claiming_the_pending_occurrence_moves_the_chain_on(store: Store, _caps: Caps) {
    let o = owner();
    let (s, first) = new_schedule(&o, None);
    store.create_schedule(&s, Some(&first)).await.unwrap();
    let at = first.run_at;
    let ClaimOutcome::Claimed(running) = store.claim(first.id, 1, at).await.unwrap() else {
        panic!("claimed")
    };
    assert_eq!(running.status, Status::Running);
    assert_eq!(store.get(first.id).await.unwrap(), Some(running.clone()));
    let moved = store.get_schedule(s.id).await.unwrap().unwrap();
    let next = moved.pending.expect("the next occurrence is pending");
    assert_ne!(next.task_id, first.id);
    assert_eq!(next.at, at + TimeDelta::minutes(1));
    assert_eq!(
        running.occurrence.as_ref().unwrap().next,
        Some(next),
        "the claimer learns the next occurrence from the claim"
    );
    let next_task = store
        .get(next.task_id)
        .await
        .unwrap()
        .expect("written with the claim");
    assert_eq!(next_task.run_at, next.at);
    assert_eq!(occurrences(&store, &o, s.id).await.len(), 2);
    // A second claim of the same attempt is refused and writes nothing more.
    assert!(matches!(
        store.claim(first.id, 1, at).await.unwrap(),
        ClaimOutcome::Rejected(Some(_))
    ));
    assert_eq!(store.get_schedule(s.id).await.unwrap(), Some(moved.clone()));
    assert_eq!(occurrences(&store, &o, s.id).await.len(), 2);
    // The next one moves it on again: the chain does not break.
    let ClaimOutcome::Claimed(_) = store.claim(next.task_id, 1, next.at).await.unwrap() else {
        panic!("claimed")
    };
    let again = store.get_schedule(s.id).await.unwrap().unwrap();
    assert_eq!(again.pending.unwrap().at, next.at + TimeDelta::minutes(1));
    assert_eq!(occurrences(&store, &o, s.id).await.len(), 3);
}

pub(crate) async fn a_schedule_write_is_all_or_nothing(store: Store, _caps: Caps) {
    let o = owner();
    let (s, pending) = new_schedule(&o, None);
    store.create_schedule(&s, Some(&pending)).await.unwrap();
    let now = t0();
    let triggered = s.trigger(now);
    store
        .write_schedule(&ScheduleWrite {
            schedule: triggered.schedule.clone(),
            delete: false,
            update: vec![],
            insert: triggered.create.clone().into_iter().collect(),
        })
        .await
        .unwrap();
    // Written again from the same (stale) read: a conflict, and nothing of it is kept.
    let again = s.change(ScheduleChanges::default(), now);
    let new_task = again.create.clone().unwrap();
    let err = store
        .write_schedule(&ScheduleWrite {
            schedule: again.schedule,
            delete: false,
            update: vec![pending.cancel(now).unwrap()],
            insert: vec![new_task.clone()],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, PortError::Conflict), "{err:?}");
    assert_eq!(
        store.get(pending.id).await.unwrap().unwrap().status,
        Status::Scheduled
    );
    assert!(store.get(new_task.id).await.unwrap().is_none());
    // A stale task version fails the whole write, the schedule included.
    let current = store.get_schedule(s.id).await.unwrap().unwrap();
    let next = current.change(ScheduleChanges::default(), now);
    let mut stale = pending.cancel(now).unwrap();
    stale.version += 1;
    assert!(matches!(
        store
            .write_schedule(&ScheduleWrite {
                schedule: next.schedule,
                delete: false,
                update: vec![stale],
                insert: vec![],
            })
            .await,
        Err(PortError::Conflict)
    ));
    assert_eq!(store.get_schedule(s.id).await.unwrap(), Some(current));
}
