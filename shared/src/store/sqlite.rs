//! The local store: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time, so all writes go through one thread that takes
//! whatever jobs are queued (up to [`MAX_BATCH`]) and commits them in one transaction:
//! group commit. A caller's write is acknowledged only after that commit is on disk
//! (`synchronous=FULL`), so a task answered with 201 survives `kill -9` and power loss, and
//! one fsync is shared by every request that arrived meanwhile. Reads use their own
//! connections and never wait for the writer (WAL).
//!
//! Every write waits for that one thread, so it only writes: a claim is decided (read,
//! checked, the schedule's next occurrence planned, encoded) on a planner thread with its
//! own connection, and written on the condition that nothing it read changed since
//! ([`SqliteStore::claim_decided`]); other rows are encoded before they reach the writer.
//!
//! No answer lies, whatever fails mid-batch (see [`run_batch`]): a job answered `Ok` is in a
//! committed transaction, a job answered `Err` left nothing behind.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, ToSql, params};
use tokio::sync::oneshot;

use crate::domain::{Cursor, Owner, Schedule, ScheduleId, Task, TaskId, WakeUp};
use crate::ports::{
    ClaimOutcome, CreateOutcome, LeaseScan, ListQuery, Page, PortError, ScheduleCreateOutcome,
    ScheduleStore, ScheduleWrite, TaskScan, TaskStore,
};

const MAX_BATCH: usize = 1024;

/// Answers a job's caller. `Some(why)`: the transaction holding the job's writes was lost,
/// so an `Ok` becomes an error; `None`: they are committed (or there were none).
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;
/// A write. Given `Err(why)` when it cannot be run at all, so that its caller is told why.
type Job = Box<dyn FnOnce(Result<&Connection, &str>) -> Ran + Send>;

/// How a job's writes are kept all or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// In a savepoint of its own, rolled back if the job fails.
    Savepoint,
    /// By SQLite: the job writes with at most one statement, and a statement that fails
    /// leaves nothing. No savepoint, whose first write to each page copies the page
    /// (`subjournalPage`: 18% of the writer thread's time in the schedules bench).
    OneStatement,
}

/// Work for the planner thread, on its connection.
type Plan = Box<dyn FnOnce(&Connection) + Send>;

/// A job that has run: whether its writes are to be kept, and how to answer it.
struct Ran {
    ok: bool,
    reply: Reply,
}

/// The key a wake-up due at `at` has in the `tasks_wake` index, and so in the local timer:
/// `at` rounded *up* to the millisecond. One key for both, so the timer's horizon means the
/// same in memory and on disk; rounded up, so a wake-up never fires before its due time
/// (a claim a fraction of a millisecond early would be refused and re-armed at the same
/// instant, over and over).
pub(crate) fn wake_key(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = crate::domain::to_millis(at);
    if floor == at {
        at
    } else {
        floor + chrono::TimeDelta::milliseconds(1)
    }
}

/// A task that needs the timer: its wake-up and when ([`wake_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DueEntry {
    pub(crate) at: DateTime<Utc>,
    pub(crate) wake: WakeUp,
}

#[derive(Clone)]
pub(crate) struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    jobs: mpsc::Sender<(Job, Unit)>,
    /// The planner thread's queue: claims to decide (read, decide, encode) on its own
    /// connection, so that the writer thread, which every write waits for, only writes.
    plans: mpsc::Sender<Plan>,
    readers: Mutex<Vec<Connection>>,
    /// Held while any handle to the store lives; released when the last one drops.
    _lock: std::fs::File,
}

fn unavailable(e: impl std::fmt::Display) -> PortError {
    PortError::Unavailable(format!("sqlite: {e}"))
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA temp_store=MEMORY;",
    )?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 1 {
        // The task itself is one JSON document; the columns beside it exist to be indexed.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS tasks (
                 id              TEXT PRIMARY KEY,
                 owner           TEXT NOT NULL,
                 status          TEXT NOT NULL,
                 run_at          INTEGER NOT NULL,
                 wake_at         INTEGER,
                 attempt         INTEGER NOT NULL,
                 idempotency_key TEXT,
                 version         INTEGER NOT NULL,
                 body            TEXT NOT NULL
             ) STRICT;
             CREATE UNIQUE INDEX IF NOT EXISTS tasks_idempotency
                 ON tasks(owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
             CREATE INDEX IF NOT EXISTS tasks_wake ON tasks(wake_at, id) WHERE wake_at IS NOT NULL;
             CREATE INDEX IF NOT EXISTS tasks_owner ON tasks(owner, run_at, id);
             CREATE INDEX IF NOT EXISTS tasks_owner_status ON tasks(owner, status, run_at, id);
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    if version < 2 {
        // Start-up looks for claims a dead process left behind; with a million finished or
        // pending tasks that must not be a table scan.
        conn.execute_batch(
            "BEGIN;
             CREATE INDEX IF NOT EXISTS tasks_running ON tasks(id) WHERE status = 'running';
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    if version < 3 {
        // The sweeper's other query: failed tasks whose dead letter is not sent yet (the
        // scheduled and running ones it finds on `tasks_wake`). Partial, so it holds only them.
        conn.execute_batch(&format!(
            "BEGIN;
             CREATE INDEX IF NOT EXISTS tasks_dead_letter_unsent ON tasks(id) WHERE {DEAD_LETTER_UNSENT};
             PRAGMA user_version = 3;
             COMMIT;"
        ))?;
    }
    if version < 4 {
        // Schedules: one JSON document each, beside the tasks, so that one transaction
        // covers a schedule and its occurrences. Occurrences are found by their schedule
        // (`GET /tasks?schedule_id=`) on an index of the id inside the task's body.
        conn.execute_batch(&format!(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS schedules (
                 id              TEXT PRIMARY KEY,
                 owner           TEXT NOT NULL,
                 idempotency_key TEXT,
                 version         INTEGER NOT NULL,
                 body            TEXT NOT NULL
             ) STRICT;
             CREATE UNIQUE INDEX IF NOT EXISTS schedules_idempotency
                 ON schedules(owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
             CREATE INDEX IF NOT EXISTS schedules_owner ON schedules(owner, id);
             CREATE INDEX IF NOT EXISTS tasks_schedule ON tasks({SCHEDULE_OF}, run_at, id)
                 WHERE {SCHEDULE_OF} IS NOT NULL;
             PRAGMA user_version = 4;
             COMMIT;"
        ))?;
    }
    if version < 5 {
        // The schedule of an occurrence in a column of its own: an index on an expression
        // of the body made SQLite parse the JSON of every task on every write (`make
        // bench`, schedules). Filled from the body, on the old index.
        conn.execute_batch(&format!(
            "BEGIN;
             ALTER TABLE tasks ADD COLUMN schedule_id TEXT;
             UPDATE tasks SET schedule_id = {SCHEDULE_OF} WHERE {SCHEDULE_OF} IS NOT NULL;
             DROP INDEX IF EXISTS tasks_schedule;
             CREATE INDEX IF NOT EXISTS tasks_by_schedule ON tasks(schedule_id, run_at, id)
                 WHERE schedule_id IS NOT NULL;
             PRAGMA user_version = 5;
             COMMIT;"
        ))?;
    }
    Ok(())
}

/// The schedule a task is an occurrence of, in its body: store version 4 indexed it; version 5
/// copies it into the `schedule_id` column.
const SCHEDULE_OF: &str = "json_extract(body, '$.occurrence.schedule_id')";

/// A failed task whose dead letter is not sent yet; the index and its query use this exact
/// text, so that SQLite can match the query to the partial index.
const DEAD_LETTER_UNSENT: &str =
    "status = 'failed' AND json_extract(body, '$.dead_letter.sent') = 0";

fn decode(body: String) -> rusqlite::Result<Task> {
    serde_json::from_str(&body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn get_task(conn: &Connection, id: TaskId) -> rusqlite::Result<Option<Task>> {
    conn.prepare_cached("SELECT body FROM tasks WHERE id = ?1")?
        .query_row([id.to_string()], |r| r.get::<_, String>(0))
        .optional()?
        .map(decode)
        .transpose()
}

/// The indexed columns of a task, stored beside its JSON body: the row to write, encoded.
struct Columns {
    id: String,
    owner: String,
    status: &'static str,
    run_at: i64,
    wake_at: Option<i64>,
    attempt: u32,
    key: Option<String>,
    schedule_id: Option<String>,
    version: i64,
    body: String,
}

impl Columns {
    fn of(task: &Task) -> Result<Self, PortError> {
        Ok(Self {
            id: task.id.to_string(),
            owner: task.owner.to_string(),
            status: task.status.as_str(),
            run_at: task.run_at.timestamp_millis(),
            wake_at: task.wake().map(|(at, _)| wake_key(at).timestamp_millis()),
            attempt: task.attempt_number(),
            key: task.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            schedule_id: task.occurrence.as_ref().map(|o| o.schedule_id.to_string()),
            version: version_of(task.version)?,
            body: encode(task)?,
        })
    }
}

/// A task or schedule as its JSON body, in a buffer the size of a typical one (serde_json's
/// own starts at 128 bytes and is copied as it doubles).
fn encode(value: &impl serde::Serialize) -> Result<String, PortError> {
    let mut body = Vec::with_capacity(1024);
    serde_json::to_writer(&mut body, value).map_err(unavailable)?;
    String::from_utf8(body).map_err(unavailable)
}

/// Writes with one statement (the insert; a conflicting key only reads).
fn insert_row(conn: &Connection, row: &Columns) -> Result<CreateOutcome, PortError> {
    let Columns {
        id,
        owner,
        status,
        run_at,
        wake_at,
        attempt,
        key,
        schedule_id,
        version,
        body,
    } = row;
    let res = conn
        .prepare_cached(
            "INSERT INTO tasks (id, owner, status, run_at, wake_at, attempt, idempotency_key, version, body,
                                schedule_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .and_then(|mut st| {
            st.execute(params![id, owner, status, run_at, wake_at, attempt, key, version, body,
                               schedule_id])
        });
    match res {
        Ok(_) => Ok(CreateOutcome::Created),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation && key.is_some() =>
        {
            let existing = conn
                .prepare_cached("SELECT body FROM tasks WHERE owner = ?1 AND idempotency_key = ?2")
                .and_then(|mut st| st.query_row(params![owner, key], |r| r.get::<_, String>(0)))
                .and_then(decode)
                .map_err(unavailable)?;
            Ok(CreateOutcome::Existing(Box::new(existing)))
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// Replaces the task if its stored version is `row.version - 1`. Writes with one statement:
/// the second runs only when the first changed nothing.
fn replace_row(conn: &Connection, row: &Columns) -> Result<(), PortError> {
    let Columns {
        id,
        status,
        run_at,
        wake_at,
        attempt,
        version,
        body,
        ..
    } = row;
    // Most writes (claim, outcome) keep `run_at`: leaving it out of the SET clause spares
    // SQLite the rewrite of the two indexes ordered by it (`make bench`, schedules). A move
    // (`PATCH`, `/run`) changes it, and lists are ordered by it: then the second statement.
    let mut changed = conn
        .prepare_cached(
            "UPDATE tasks SET status = ?2, wake_at = ?3, attempt = ?4, version = ?5, body = ?6
             WHERE id = ?1 AND version = ?5 - 1 AND run_at = ?7",
        )
        .and_then(|mut st| st.execute(params![id, status, wake_at, attempt, version, body, run_at]))
        .map_err(unavailable)?;
    if changed == 0 {
        changed = conn
            .prepare_cached(
                "UPDATE tasks SET status = ?2, wake_at = ?3, attempt = ?4, version = ?5, body = ?6,
                                  run_at = ?7
                 WHERE id = ?1 AND version = ?5 - 1",
            )
            .and_then(|mut st| {
                st.execute(params![id, status, wake_at, attempt, version, body, run_at])
            })
            .map_err(unavailable)?;
    }
    one_row(changed)
}

/// What a claim found, decided on one connection and written on the writer's.
enum Decision {
    /// No such task.
    Unknown,
    /// The task as read, which refuses the claim.
    Refused(Box<Task>),
    Claim(Box<ClaimPlan>),
}

/// A claim decided: the rows to write, encoded, each written on the condition that the
/// stored version is still the one it was decided on. When the task is its schedule's pending
/// occurrence, the chain moves on in the claim's transaction: the next occurrence is inserted
/// and the schedule points at it ([`Schedule::advance`]); the claimed task carries its
/// catch-up mark.
struct ClaimPlan {
    /// Whether the conditional writes cover everything the decision read: not when it read
    /// a schedule and left it as it was (gone, or this task no longer its pending
    /// occurrence).
    covered: bool,
    claimed: Columns,
    schedule: Option<ScheduleRow>,
    create: Option<Columns>,
    outcome: Task,
}

fn decide_claim(
    conn: &Connection,
    id: TaskId,
    attempt: u32,
    now: DateTime<Utc>,
) -> Result<Decision, PortError> {
    let Some(task) = get_task(conn, id).map_err(unavailable)? else {
        return Ok(Decision::Unknown);
    };
    let Ok(running) = task.claim(attempt, now) else {
        return Ok(Decision::Refused(Box::new(task)));
    };
    let (mut covered, mut schedule, mut create) = (true, None, None);
    let outcome = match task.occurrence.as_ref().filter(|_| task.may_move_chain()) {
        None => running,
        Some(occurrence) => {
            let found = get_schedule(conn, occurrence.schedule_id).map_err(unavailable)?;
            match found.and_then(|s| s.advance(&running, now)) {
                None => {
                    covered = false;
                    running
                }
                Some((next, marked)) => {
                    schedule = Some(ScheduleRow::of(&next.schedule)?);
                    create = next.create.as_ref().map(Columns::of).transpose()?;
                    marked
                }
            }
        }
    };
    Ok(Decision::Claim(Box::new(ClaimPlan {
        covered,
        claimed: Columns::of(&outcome)?,
        schedule,
        create,
        outcome,
    })))
}

impl ClaimPlan {
    /// Writes the claim; `Conflict` when the task or its schedule changed since it was
    /// decided (the task first, so that its conflict leaves nothing written).
    fn write(self, conn: &Connection) -> Result<ClaimOutcome, PortError> {
        replace_row(conn, &self.claimed)?;
        if let Some(schedule) = &self.schedule {
            update_schedule_row(conn, schedule)?;
        }
        if let Some(next) = &self.create {
            insert_row(conn, next)?;
        }
        Ok(ClaimOutcome::Claimed(self.outcome))
    }
}

/// A claim decided and written on the writer, where nothing can interleave.
fn claim_on(
    conn: &Connection,
    id: TaskId,
    attempt: u32,
    now: DateTime<Utc>,
) -> Result<ClaimOutcome, PortError> {
    match decide_claim(conn, id, attempt, now)? {
        Decision::Unknown => Ok(ClaimOutcome::Rejected(None)),
        Decision::Refused(task) => Ok(ClaimOutcome::Rejected(Some(*task))),
        Decision::Claim(plan) => plan.write(conn),
    }
}

fn version_of(version: u64) -> Result<i64, PortError> {
    i64::try_from(version).map_err(unavailable)
}

fn decode_schedule(body: String) -> rusqlite::Result<Schedule> {
    serde_json::from_str(&body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn get_schedule(conn: &Connection, id: ScheduleId) -> rusqlite::Result<Option<Schedule>> {
    conn.prepare_cached("SELECT body FROM schedules WHERE id = ?1")?
        .query_row([id.to_string()], |r| r.get::<_, String>(0))
        .optional()?
        .map(decode_schedule)
        .transpose()
}

/// A schedule's row to write, encoded.
struct ScheduleRow {
    id: String,
    version: i64,
    body: String,
}

impl ScheduleRow {
    fn of(schedule: &Schedule) -> Result<Self, PortError> {
        Ok(Self {
            id: schedule.id.to_string(),
            version: version_of(schedule.version)?,
            body: encode(schedule)?,
        })
    }
}

/// Deletes the schedule if its stored version is `row.version - 1`.
fn delete_schedule_row(conn: &Connection, row: &ScheduleRow) -> Result<(), PortError> {
    let changed = conn
        .prepare_cached("DELETE FROM schedules WHERE id = ?1 AND version = ?2 - 1")
        .and_then(|mut st| st.execute(params![row.id, row.version]))
        .map_err(unavailable)?;
    one_row(changed)
}

/// Replaces the schedule if its stored version is `row.version - 1`.
fn update_schedule_row(conn: &Connection, row: &ScheduleRow) -> Result<(), PortError> {
    let changed = conn
        .prepare_cached(
            "UPDATE schedules SET version = ?2, body = ?3 WHERE id = ?1 AND version = ?2 - 1",
        )
        .and_then(|mut st| st.execute(params![row.id, row.version, row.body]))
        .map_err(unavailable)?;
    one_row(changed)
}

/// A conditional write's outcome: it changed its one row, or the condition failed.
fn one_row(changed: usize) -> Result<(), PortError> {
    if changed == 1 {
        Ok(())
    } else {
        Err(PortError::Conflict)
    }
}

/// An exclusive lock on the data directory, so two processes never share one store: the
/// single-writer design (group commit on one thread) holds only within one process.
fn lock_dir(dir: &Path) -> Result<std::fs::File, PortError> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| PortError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    file.try_lock().map_err(|_| {
        PortError::Unavailable(format!(
            "{} is in use by another task-scheduler process",
            dir.display()
        ))
    })?;
    Ok(file)
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/tasks.db` and starts the writer thread. The store
    /// owns `dir`: it holds an exclusive lock on `dir/lock` (see [`lock_dir`]).
    pub(crate) fn open(dir: &Path) -> Result<Self, PortError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| PortError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let lock = lock_dir(dir)?;
        let path = dir.join("tasks.db");
        let writer = open(&path).map_err(unavailable)?;
        migrate(&writer).map_err(unavailable)?;
        let (jobs, rx) = mpsc::channel::<(Job, Unit)>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(unavailable)?;
        let planner = open(&path).map_err(unavailable)?;
        let (plans, plan_rx) = mpsc::channel::<Plan>();
        std::thread::Builder::new()
            .name("sqlite-planner".into())
            .spawn(move || {
                while let Ok(plan) = plan_rx.recv() {
                    plan(&planner);
                }
            })
            .map_err(unavailable)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                jobs,
                plans,
                readers: Mutex::new(Vec::new()),
                _lock: lock,
            }),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer thread inside the current group-commit transaction, in a
    /// savepoint of its own, and answers once that transaction is committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, PortError> + Send + 'static,
    ) -> Result<T, PortError> {
        self.write_as(Unit::Savepoint, f).await
    }

    /// [`write`](Self::write) for an `f` that writes with at most one statement.
    async fn write_one<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, PortError> + Send + 'static,
    ) -> Result<T, PortError> {
        self.write_as(Unit::OneStatement, f).await
    }

    async fn write_as<T: Send + 'static>(
        &self,
        unit: Unit,
        f: impl FnOnce(&Connection) -> Result<T, PortError> + Send + 'static,
    ) -> Result<T, PortError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => f(conn),
                Err(why) => Err(PortError::Unavailable(why.to_owned())),
            };
            Ran {
                ok: result.is_ok(),
                reply: Box::new(move |lost: Option<&str>| {
                    let result = match lost {
                        Some(why) if result.is_ok() => Err(PortError::Unavailable(why.to_owned())),
                        _ => result,
                    };
                    let _ = tx.send(result);
                }),
            }
        });
        self.inner
            .jobs
            .send((job, unit))
            .map_err(|_| PortError::Unavailable("sqlite writer stopped".into()))?;
        rx.await
            .map_err(|_| PortError::Unavailable("sqlite writer stopped".into()))?
    }

    /// Writes a claim decided off the writer, on the condition that the task and its
    /// schedule did not change since. Anything else (a change in between, a refusal, a
    /// failed read) is decided again on the writer, where nothing can interleave.
    async fn claim_decided(
        &self,
        decided: Option<Decision>,
        id: TaskId,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, PortError> {
        if let Some(Decision::Claim(plan)) = decided
            && plan.covered
        {
            match self.write(move |conn| plan.write(conn)).await {
                Err(PortError::Conflict) => {}
                written => return written,
            }
        }
        self.write(move |conn| claim_on(conn, id, attempt, now))
            .await
    }

    /// Runs `f` on the planner thread's connection; `None` if that thread is gone.
    async fn plan<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let plan: Plan = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.inner.plans.send(plan).ok()?;
        rx.await.ok()
    }

    /// Runs `f` on a pooled read connection on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, PortError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().expect("reader pool poisoned").pop();
            let conn = match pooled {
                Some(c) => c,
                None => open(&inner.path).map_err(unavailable)?,
            };
            let result = f(&conn).map_err(unavailable);
            inner
                .readers
                .lock()
                .expect("reader pool poisoned")
                .push(conn);
            result
        })
        .await
        .map_err(unavailable)?
    }

    /// Tasks the timer must look at (scheduled, or running under a lease), in wake-up
    /// order, strictly after `after`. Pages the timer's horizon in from disk.
    pub(crate) async fn due_after(
        &self,
        after: Option<(DateTime<Utc>, TaskId)>,
        limit: usize,
    ) -> Result<Vec<DueEntry>, PortError> {
        let (ms, id) = after.map_or((i64::MIN, String::new()), |(t, id)| {
            (t.timestamp_millis(), id.to_string())
        });
        self.read(move |conn| {
            let mut st = conn.prepare_cached(
                "SELECT wake_at, id, attempt FROM tasks
                 WHERE wake_at IS NOT NULL AND (wake_at, id) > (?1, ?2)
                 ORDER BY wake_at, id LIMIT ?3",
            )?;
            let rows = st.query_map(params![ms, id, limit as i64], |r| {
                let at: i64 = r.get(0)?;
                let id: String = r.get(1)?;
                Ok((at, id, r.get::<_, u32>(2)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (at, id, attempt) = row?;
                let task_id = TaskId::parse(&id).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        1,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?;
                out.push(DueEntry {
                    at: DateTime::from_timestamp_millis(at).unwrap_or_default(),
                    wake: WakeUp { task_id, attempt },
                });
            }
            Ok(out)
        })
        .await
    }

    /// Tasks waiting for the timer (scheduled, or running under a lease), counted on the
    /// wake-up index alone.
    pub(crate) async fn pending(&self) -> Result<u64, PortError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT count(*) FROM tasks INDEXED BY tasks_wake WHERE wake_at IS NOT NULL",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Counts tasks by status (for tests).
    #[cfg(test)]
    pub(crate) async fn count(
        &self,
        status: Option<crate::domain::Status>,
    ) -> Result<u64, PortError> {
        self.read(move |conn| match status {
            Some(s) => conn.query_row(
                "SELECT count(*) FROM tasks WHERE status = ?1",
                [s.as_str()],
                |r| r.get(0),
            ),
            None => conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0)),
        })
        .await
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<(Job, Unit)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch);
    }
}

/// Runs `batch` in as few transactions as it can (one, unless something fails) and answers
/// every job truthfully:
///
/// - each job runs inside its own savepoint; a job that fails is rolled back to it, so it
///   leaves nothing behind, and the others go on (a job of one statement needs none: SQLite
///   undoes a statement that fails);
/// - when SQLite rolls the whole transaction back by itself (`SQLITE_FULL`, `SQLITE_IOERR`,
///   `SQLITE_BUSY`, seen as the connection back in autocommit), every job of that
///   transaction is answered with an error, and the jobs after it run in a new transaction,
///   never in autocommit;
/// - when `COMMIT` fails, the transaction is rolled back and every job in it is answered
///   with an error.
fn run_batch(conn: &Connection, batch: Vec<(Job, Unit)>) {
    // The answers of the jobs in the open transaction, given once its fate is known.
    let mut open: Vec<Reply> = Vec::new();
    let mut jobs = batch.into_iter();
    while let Some((job, unit)) = jobs.next() {
        if conn.is_autocommit()
            && let Err(e) = conn.execute_batch("BEGIN IMMEDIATE")
        {
            tracing::error!(error = %e, "sqlite could not begin a transaction");
            let why = format!("sqlite could not begin a transaction: {e}");
            for (job, _) in std::iter::once((job, unit)).chain(jobs) {
                (job(Err(&why)).reply)(None);
            }
            return;
        }
        if unit == Unit::Savepoint
            && let Err(e) = savepoint(conn, "SAVEPOINT job")
        {
            (job(Err(&format!("sqlite savepoint: {e}"))).reply)(None);
            continue;
        }
        let ran = job(Ok(conn));
        let settled = if conn.is_autocommit() {
            Err("sqlite rolled the transaction back (disk full, I/O error or busy)".to_owned())
        } else if unit == Unit::OneStatement {
            Ok(())
        } else if ran.ok {
            savepoint(conn, "RELEASE job").map_err(|e| format!("sqlite release: {e}"))
        } else {
            savepoint(conn, "ROLLBACK TO job")
                .and_then(|()| savepoint(conn, "RELEASE job"))
                .map_err(|e| format!("sqlite rollback to savepoint: {e}"))
        };
        match settled {
            Ok(()) => open.push(ran.reply),
            Err(why) => {
                // Whatever this transaction held is gone, or cannot be told apart from the
                // failed job: give it all up.
                tracing::error!(error = %why, jobs = open.len() + 1, "sqlite batch rolled back");
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                for reply in open.drain(..).chain(std::iter::once(ran.reply)) {
                    reply(Some(&why));
                }
            }
        }
    }
    if conn.is_autocommit() {
        return;
    }
    let lost = conn.execute_batch("COMMIT").err().map(|e| {
        tracing::error!(error = %e, "sqlite commit failed");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        format!("sqlite commit: {e}")
    });
    for reply in open {
        reply(lost.as_deref());
    }
}

fn savepoint(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// The sweeper reads two indexes, never the table: `tasks_wake` for scheduled and running
/// tasks (its key is [`Task::pending_at`] rounded up, as [`wake_key`] makes it), and the
/// partial `tasks_dead_letter_unsent` for failed tasks whose dead letter waits. A task the
/// sweeper re-armed recently ([`Task::sweep_at`] later than the cutoff) is read and left out:
/// the index key is also the local timer's, which the backoff must not move. (So, unlike
/// DynamoDB's index, a backlog of more than `limit` such tasks hides the ones behind it
/// until their backoff ends; on the local host, whose timer loses no wake-up, a re-arm is
/// rare.)
#[async_trait]
impl TaskScan for SqliteStore {
    async fn overdue(&self, cutoff: DateTime<Utc>, limit: usize) -> Result<Vec<Task>, PortError> {
        let cutoff_ms = cutoff.timestamp_millis();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut tasks = conn
                .prepare_cached(&format!(
                    "SELECT body FROM tasks INDEXED BY tasks_dead_letter_unsent
                     WHERE {DEAD_LETTER_UNSENT} LIMIT ?1"
                ))?
                .query_map([limit], |r| r.get::<_, String>(0))?
                .map(|b| b.and_then(decode))
                .filter(|t| {
                    t.as_ref().map_or(true, |t| {
                        t.pending_at()
                            .is_some_and(|at| wake_key(at).timestamp_millis() <= cutoff_ms)
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let room = limit - tasks.len() as i64;
            let mut st = conn.prepare_cached(
                "SELECT body FROM tasks INDEXED BY tasks_wake
                 WHERE wake_at IS NOT NULL AND wake_at <= ?1 ORDER BY wake_at, id LIMIT ?2",
            )?;
            for body in st.query_map(params![cutoff_ms, room], |r| r.get::<_, String>(0))? {
                // The index holds the pending instant; the sweeper's backoff is in the body.
                let task = decode(body?)?;
                if task
                    .sweep_at()
                    .is_some_and(|at| wake_key(at).timestamp_millis() <= cutoff_ms)
                {
                    tasks.push(task);
                }
            }
            Ok(tasks)
        })
        .await
    }
}

#[async_trait]
impl LeaseScan for SqliteStore {
    async fn running(&self) -> Result<Vec<Task>, PortError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT body FROM tasks INDEXED BY tasks_running WHERE status = 'running'",
            )?;
            st.query_map([], |r| r.get::<_, String>(0))?
                .map(|b| b.and_then(decode))
                .collect()
        })
        .await
    }
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn create(&self, task: &Task) -> Result<CreateOutcome, PortError> {
        let row = Columns::of(task)?;
        self.write_one(move |conn| insert_row(conn, &row)).await
    }

    async fn get(&self, id: TaskId) -> Result<Option<Task>, PortError> {
        self.read(move |conn| get_task(conn, id)).await
    }

    async fn list(&self, q: &ListQuery) -> Result<Page, PortError> {
        let q = q.clone();
        self.read(move |conn| {
            let (ms, id) = q.after.map_or((i64::MIN, String::new()), |c| {
                (c.run_at.timestamp_millis(), c.task_id.to_string())
            });
            let limit = i64::from(q.limit) + 1;
            let owner = q.owner.to_string();
            let status = q.status.map(|s| s.as_str());
            let schedule = q.schedule_id.map(|s| s.to_string());
            let mut sql =
                "SELECT body FROM tasks WHERE owner = ?1 AND (run_at, id) > (?2, ?3)".to_owned();
            let mut args: Vec<&dyn ToSql> = vec![&owner, &ms, &id, &limit];
            if let Some(s) = &status {
                args.push(s);
                sql.push_str(&format!(" AND status = ?{}", args.len()));
            }
            if let Some(s) = &schedule {
                args.push(s);
                sql.push_str(&format!(" AND schedule_id = ?{}", args.len()));
            }
            sql.push_str(" ORDER BY run_at, id LIMIT ?4");
            let mut st = conn.prepare_cached(&sql)?;
            let mut tasks = st
                .query_map(args.as_slice(), |r| r.get::<_, String>(0))?
                .map(|b| b.and_then(decode))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let next = if tasks.len() > q.limit as usize {
                tasks.truncate(q.limit as usize);
                tasks.last().map(|t| Cursor {
                    run_at: t.run_at,
                    task_id: t.id,
                })
            } else {
                None
            };
            Ok(Page { tasks, next })
        })
        .await
    }

    async fn claim(
        &self,
        id: TaskId,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, PortError> {
        // Decided on the planner thread, off the writer: reading, deciding and encoding
        // cost more than the writes, and every write waits for the writer.
        let decided = self
            .plan(move |conn| decide_claim(conn, id, attempt, now))
            .await
            .and_then(Result::ok);
        self.claim_decided(decided, id, attempt, now).await
    }

    async fn update(&self, task: &Task) -> Result<(), PortError> {
        // Encoded here, off the writer thread.
        let row = Columns::of(task)?;
        self.write_one(move |conn| replace_row(conn, &row)).await
    }
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn create_schedule(
        &self,
        schedule: &Schedule,
        first: Option<&Task>,
    ) -> Result<ScheduleCreateOutcome, PortError> {
        // Encoded here, off the writer thread.
        let row = ScheduleRow::of(schedule)?;
        let owner = schedule.owner.to_string();
        let key = schedule
            .idempotency_key
            .as_ref()
            .map(|k| k.as_str().to_owned());
        let first = first.map(Columns::of).transpose()?;
        self.write(move |conn| {
            let res = conn
                .prepare_cached(
                    "INSERT INTO schedules (id, owner, idempotency_key, version, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut st| st.execute(params![row.id, owner, key, row.version, row.body]));
            match res {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation && key.is_some() =>
                {
                    let existing = conn
                        .prepare_cached(
                            "SELECT body FROM schedules WHERE owner = ?1 AND idempotency_key = ?2",
                        )
                        .and_then(|mut st| {
                            st.query_row(params![owner, key], |r| r.get::<_, String>(0))
                        })
                        .and_then(decode_schedule)
                        .map_err(unavailable)?;
                    return Ok(ScheduleCreateOutcome::Existing(Box::new(existing)));
                }
                Err(e) => return Err(unavailable(e)),
            }
            if let Some(t) = &first {
                insert_row(conn, t)?;
            }
            Ok(ScheduleCreateOutcome::Created)
        })
        .await
    }

    async fn get_schedule(&self, id: ScheduleId) -> Result<Option<Schedule>, PortError> {
        self.read(move |conn| get_schedule(conn, id)).await
    }

    async fn list_schedules(
        &self,
        owner: &Owner,
        limit: u32,
        after: Option<ScheduleId>,
    ) -> Result<(Vec<Schedule>, bool), PortError> {
        let owner = owner.to_string();
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        self.read(move |conn| {
            let mut st = conn.prepare_cached(
                "SELECT body FROM schedules WHERE owner = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let mut out = st
                .query_map(params![owner, after, i64::from(limit) + 1], |r| {
                    r.get::<_, String>(0)
                })?
                .map(|b| b.and_then(decode_schedule))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = out.len() > limit as usize;
            out.truncate(limit as usize);
            Ok((out, more))
        })
        .await
    }

    async fn write_schedule(&self, write: &ScheduleWrite) -> Result<(), PortError> {
        // Encoded here, off the writer thread.
        let (schedule, delete) = (ScheduleRow::of(&write.schedule)?, write.delete);
        let rows = |tasks: &[Task]| tasks.iter().map(Columns::of).collect::<Result<Vec<_>, _>>();
        let (update, insert) = (rows(&write.update)?, rows(&write.insert)?);
        // One job: its savepoint makes the whole write one unit (a failed condition rolls
        // back whatever the job wrote before it).
        self.write(move |conn| {
            if delete {
                delete_schedule_row(conn, &schedule)?;
            } else {
                update_schedule_row(conn, &schedule)?;
            }
            for t in &update {
                replace_row(conn, t)?;
            }
            for t in &insert {
                match insert_row(conn, t)? {
                    CreateOutcome::Created => {}
                    CreateOutcome::Existing(_) => return Err(PortError::Conflict),
                }
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! The group commit never lies: a job told "ok" is on disk, a job told "error" changed
    //! nothing, whichever statement, transaction or commit failed. Each case queues several
    //! jobs behind a gate so they land in one batch, then reads the file afresh.

    use std::{future::Future, pin::Pin};

    use super::*;
    use crate::domain::Action;
    use crate::ports::ScheduleWrite;
    use crate::store::contract::schedules::new_schedule;
    use crate::store::contract::{owner, t0, task};

    type Answer = Pin<Box<dyn Future<Output = Result<(), PortError>> + Send>>;

    /// A task whose body takes most of a page, so a few of them fill a capped file.
    fn big_task() -> Task {
        let mut t = task(&owner(), t0(), None);
        let Action::Webhook(w) = &mut t.action;
        w.data = Some(serde_json::json!({ "pad": "x".repeat(3000) }));
        t
    }

    fn create(store: &SqliteStore, t: &Task) -> Answer {
        let (store, t) = (store.clone(), t.clone());
        Box::pin(async move { store.create(&t).await.map(|_| ()) })
    }

    /// Runs `jobs` as one batch: the writer is held inside a gate job until every one of
    /// them is queued, so the next batch takes them all, in order.
    async fn one_batch(store: &SqliteStore, jobs: Vec<Answer>) -> Vec<Result<(), PortError>> {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let gate = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .write(move |_| {
                        let _ = started_tx.send(());
                        let _ = go_rx.recv();
                        Ok(())
                    })
                    .await
            }
        });
        started.await.unwrap();
        let mut queued = Vec::new();
        for mut job in jobs {
            // The first poll sends the job to the writer; the answer waits for the commit.
            assert!(futures::poll!(job.as_mut()).is_pending());
            queued.push(job);
        }
        go.send(()).unwrap();
        // The gate's own batch may fail (a commit fault left armed); only the jobs matter.
        let _ = gate.await.unwrap();
        futures::future::join_all(queued).await
    }

    /// Closes the store and reports which of `ids` a fresh connection finds on disk.
    async fn on_disk(store: SqliteStore, ids: &[TaskId]) -> Vec<bool> {
        let path = store.path().to_owned();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        ids.iter()
            .map(|id| {
                conn.query_row(
                    "SELECT count(*) FROM tasks WHERE id = ?1",
                    [id.to_string()],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                    == 1
            })
            .collect()
    }

    fn assert_truthful(answers: &[Result<(), PortError>], present: &[bool]) {
        for (i, (answer, present)) in answers.iter().zip(present).enumerate() {
            assert_eq!(
                answer.is_ok(),
                *present,
                "job {i} was answered {answer:?} but is {} on disk",
                if *present { "present" } else { "absent" }
            );
        }
    }

    #[test]
    fn wake_keys_are_due_times_rounded_up_to_the_millisecond() {
        let whole = t0() + chrono::TimeDelta::milliseconds(7);
        assert_eq!(wake_key(whole), whole);
        for sub in [1, 400_000, 999_999] {
            let at = whole + chrono::TimeDelta::nanoseconds(sub);
            assert_eq!(
                wake_key(at),
                whole + chrono::TimeDelta::milliseconds(1),
                "{at}"
            );
        }
    }

    #[tokio::test]
    async fn a_disk_that_fills_mid_batch_never_makes_an_answer_lie() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        // Room for a few big tasks, not for the twelve of the batch: SQLITE_FULL partway,
        // which SQLite answers by rolling the whole transaction back.
        store
            .write(|conn| {
                let pages: i64 = conn
                    .query_row("PRAGMA page_count", [], |r| r.get(0))
                    .map_err(unavailable)?;
                conn.pragma_update(None, "max_page_count", pages + 8)
                    .map_err(unavailable)
            })
            .await
            .unwrap();
        let tasks: Vec<Task> = (0..12).map(|_| big_task()).collect();
        let answers = one_batch(&store, tasks.iter().map(|t| create(&store, t)).collect()).await;
        let ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
        let present = on_disk(store, &ids).await;
        assert_truthful(&answers, &present);
        assert!(
            answers.iter().any(Result::is_ok) && answers.iter().any(Result::is_err),
            "the store was meant to fill partway through the batch: {answers:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_job_leaves_nothing_behind_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let (a, b, c) = (big_task(), big_task(), big_task());
        // A job whose first statement succeeds and whose second fails.
        let failing: Answer = {
            let (store, b) = (store.clone(), b.clone());
            Box::pin(async move {
                store
                    .write(move |conn| {
                        insert_row(conn, &Columns::of(&b)?)?;
                        Err(PortError::Unavailable("the second statement failed".into()))
                    })
                    .await
            })
        };
        let answers = one_batch(
            &store,
            vec![create(&store, &a), failing, create(&store, &c)],
        )
        .await;
        let present = on_disk(store, &[a.id, b.id, c.id]).await;
        assert_eq!(
            answers.iter().map(Result::is_ok).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert_truthful(&answers, &present);
    }

    /// Makes every COMMIT on `conn` fail (SQLite turns it into a rollback), or stops that.
    fn fail_commits(conn: &Connection, fail: bool) {
        extern "C" fn refuse(_: *mut std::ffi::c_void) -> std::ffi::c_int {
            1
        }
        // SAFETY: the handle is the live writer connection, used on its own thread; the hook
        // captures nothing.
        unsafe {
            rusqlite::ffi::sqlite3_commit_hook(
                conn.handle(),
                fail.then_some(refuse as extern "C" fn(_) -> _),
                std::ptr::null_mut(),
            );
        }
    }

    #[tokio::test]
    async fn a_failed_commit_answers_every_job_with_an_error_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let (a, c) = (big_task(), big_task());
        let arm_fault: Answer = {
            let store = store.clone();
            Box::pin(async move {
                store
                    .write(|conn| {
                        fail_commits(conn, true);
                        Ok(())
                    })
                    .await
            })
        };
        let answers = one_batch(
            &store,
            vec![create(&store, &a), arm_fault, create(&store, &c)],
        )
        .await;
        assert!(answers.iter().all(Result::is_err), "{answers:?}");
        // The next batch commits again.
        let d = big_task();
        let next = one_batch(
            &store,
            vec![
                Box::pin({
                    let store = store.clone();
                    async move {
                        store
                            .write(|conn| {
                                fail_commits(conn, false);
                                Ok(())
                            })
                            .await
                    }
                }),
                create(&store, &d),
            ],
        )
        .await;
        assert!(next.iter().all(Result::is_ok), "{next:?}");
        let present = on_disk(store, &[a.id, c.id, d.id]).await;
        assert_eq!(present, [false, false, true]);
    }

    /// The sweeper's query reads the two indexes, never the table.
    #[tokio::test]
    async fn the_sweepers_query_reads_indexes_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let plans = store
            .read(|conn| {
                let plan = |sql: &str| -> rusqlite::Result<String> {
                    let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let rows = st.query_map([], |r| r.get::<_, String>(3))?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                        .map(|v| v.join("; "))
                };
                Ok([
                    plan(&format!(
                        "SELECT body FROM tasks WHERE {DEAD_LETTER_UNSENT} LIMIT 10"
                    ))?,
                    plan(
                        "SELECT body FROM tasks WHERE wake_at IS NOT NULL AND wake_at <= 5 \
                         ORDER BY wake_at, id LIMIT 10",
                    )?,
                ])
            })
            .await
            .unwrap();
        assert!(
            plans[0].contains("USING INDEX tasks_dead_letter_unsent"),
            "{}",
            plans[0]
        );
        assert!(plans[1].contains("USING INDEX tasks_wake"), "{}", plans[1]);
        for plan in &plans {
            assert!(
                !plan.contains("SCAN tasks") || plan.contains("INDEX"),
                "{plan}"
            );
        }
    }

    /// A store written by version 4 (the schedule only inside the body, on an expression
    /// index) still lists a schedule's occurrences after the upgrade, on the new index.
    #[tokio::test]
    async fn a_version_4_store_lists_its_occurrences_after_the_upgrade() {
        use crate::ports::{ListQuery, ScheduleStore};
        use crate::store::contract::schedules::new_schedule;
        let dir = tempfile::tempdir().unwrap();
        let o = owner();
        let (s, first) = new_schedule(&o, None);
        let store = SqliteStore::open(dir.path()).unwrap();
        store.create_schedule(&s, Some(&first)).await.unwrap();
        store.create(&task(&o, t0(), None)).await.unwrap();
        let path = store.path().to_owned();
        drop(store);
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "DROP INDEX tasks_by_schedule;
                 ALTER TABLE tasks DROP COLUMN schedule_id;
                 CREATE INDEX tasks_schedule ON tasks({SCHEDULE_OF}, run_at, id)
                     WHERE {SCHEDULE_OF} IS NOT NULL;
                 PRAGMA user_version = 4;"
            ))
            .unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let listed = store
            .list(&ListQuery {
                owner: o,
                status: None,
                schedule_id: Some(s.id),
                limit: 10,
                after: None,
            })
            .await
            .unwrap();
        assert_eq!(
            listed.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
            [first.id]
        );
        let plan = store
            .read(|conn| {
                conn.query_row(
                    "EXPLAIN QUERY PLAN SELECT body FROM tasks WHERE owner = 'o' \
                     AND schedule_id = 'x' ORDER BY run_at, id",
                    [],
                    |r| r.get::<_, String>(3),
                )
            })
            .await
            .unwrap();
        assert!(plan.contains("tasks_by_schedule"), "{plan}");
    }

    /// A claim decided on the planner thread is written only if neither the task nor its
    /// schedule changed since; else it writes nothing, and the claim is decided again on the
    /// writer from what is stored then.
    #[tokio::test]
    async fn a_claim_decided_before_a_change_writes_nothing_and_is_decided_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let decide = |store: &SqliteStore, id: TaskId, at: DateTime<Utc>| {
            let store = store.clone();
            async move {
                match store.plan(move |c| decide_claim(c, id, 1, at)).await {
                    Some(Ok(Decision::Claim(plan))) if plan.covered => plan,
                    _ => panic!("a claim its writes cover"),
                }
            }
        };

        // The schedule changes in between (a trigger; its pending occurrence stays as it was).
        let (s, first) = new_schedule(&owner(), None);
        store.create_schedule(&s, Some(&first)).await.unwrap();
        let (id, at) = (first.id, first.run_at);
        let plan = decide(&store, id, at).await;
        let triggered = s.trigger(at);
        store
            .write_schedule(&ScheduleWrite {
                schedule: triggered.schedule.clone(),
                delete: false,
                update: vec![],
                insert: triggered.create.into_iter().collect(),
            })
            .await
            .unwrap();
        let decided = Some(Decision::Claim(plan));
        let ClaimOutcome::Claimed(running) = store.claim_decided(decided, id, 1, at).await.unwrap()
        else {
            panic!("decided again on the writer, and claimed")
        };
        let moved = store.get_schedule(s.id).await.unwrap().unwrap();
        assert_eq!(
            moved.version,
            triggered.schedule.version + 1,
            "moved on from the stored schedule, its trigger kept"
        );
        assert_eq!(moved.last_task_id, Some(id));
        assert_eq!(running.occurrence.as_ref().unwrap().next, moved.pending);
        assert_eq!(store.get(id).await.unwrap(), Some(running));

        // The task alone changes in between (the sweeper's note): nothing is written.
        let (s, first) = new_schedule(&owner(), None);
        store.create_schedule(&s, Some(&first)).await.unwrap();
        let (id, at) = (first.id, first.run_at);
        let plan = decide(&store, id, at).await;
        let next = plan.create.as_ref().map(|c| c.id.clone()).unwrap();
        let noted = first.rearmed_now(at).unwrap();
        store.update(&noted).await.unwrap();
        let err = store.write(move |c| plan.write(c)).await.unwrap_err();
        assert!(matches!(err, PortError::Conflict), "{err:?}");
        assert_eq!(store.get(id).await.unwrap(), Some(noted));
        assert_eq!(store.get_schedule(s.id).await.unwrap(), Some(s));
        assert!(store.get(next.parse().unwrap()).await.unwrap().is_none());
    }

    #[test]
    fn one_store_per_directory_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = SqliteStore::open(dir.path()).unwrap();
        let again = SqliteStore::open(dir.path())
            .err()
            .expect("the directory is locked");
        assert!(again.to_string().contains("in use by another"), "{again}");
        // Every handle shares the lock; it goes with the last one.
        let second_handle = first.clone();
        drop(first);
        assert!(SqliteStore::open(dir.path()).is_err());
        drop(second_handle);
        SqliteStore::open(dir.path()).unwrap();
    }
}
