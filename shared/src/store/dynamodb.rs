//! The AWS store: one DynamoDB table (the contract the CDK app provisions).
//!
//! # Table
//! - Partition key `pk` (S) = the task id; no sort key. Task ids are ULIDs and `pk` is
//!   hashed, so writes spread evenly over the table's partitions whatever the traffic shape.
//! - GSI `by_owner`: partition key `owner` (S), sort key `run_at_id` (S) =
//!   `run_at` as fixed-width RFC 3339 in milliseconds + `#` + task id, so it sorts exactly like
//!   the domain's `(run_at, task_id)` cursor. GSI `by_owner_status`: partition key
//!   `owner_status` (S) = owner + `#` + status, same sort key. Projection ALL: a listing
//!   needs the whole task and must not read the table item by item.
//! - TTL attribute `expires_at` (epoch seconds), set when a task finishes
//!   (`TASK_RETENTION_DAYS` after its last change) and removed again when `/retry` revives it.
//!
//! # Why the GSIs do not hot-spot
//! Wake-ups are carried by Scheduler and SQS, so nothing reads "all tasks due now" but the
//! sweeper, and its index is sharded (below): no index is keyed by time alone (the classic
//! hot partition of a scheduler table). The GSIs
//! are keyed by the *owner*, so load spreads over callers. Within one owner, items spread
//! over `run_at_id` (the caller's schedule plus a random ULID), which is what lets DynamoDB
//! split a busy owner's item collection by sort-key range (split for heat) instead of
//! throttling one partition. The remaining limit is honest: one owner's index writes go to
//! one partition until such a split, ~1,000 writes/s; each task writes 3-4 times in its life.
//!
//! # The pending index (the sweeper's)
//! GSI `pending`, sparse, projection KEYS_ONLY: partition key `pending_shard` (S, `"00"` to
//! `"15"`, the task id's low 4 bits, so a task always lands on one shard), sort key
//! `pending_at` (N, [`Task::sweep_at`] in epoch milliseconds, rounded up; index keys need
//! not be unique): the instant the task should be moving, pushed back by the sweeper's
//! backoff once it has re-armed the task there, so a sweep does not read again the tasks it
//! has just re-armed. The two attributes are on an item only while its task needs moving
//! (scheduled, running, or failed with its dead letter unsent): every `PutItem` writes the
//! whole item from [`Record::of`], so a write that finishes a task removes them, and the claim
//! sets them itself: `pending_at = lease_ms + now`, the very lease end DynamoDB computes for
//! `lease_until_ms`, so a running task is swept as soon as its lease has expired (plus the
//! grace), not later. The sweeper `Query`s each shard for keys at or before `now - grace`,
//! never scans.
//!
//! Why 16 shards: every write that moves a task in time rewrites its index entry, and a
//! time-ordered sort key concentrates writes at its newest end, where split-for-heat cannot
//! help; one partition key value takes about 1,000 writes/s. At 1,000 creates/s a task's
//! 3 to 4 index writes (create, claim, record) make ~4,000 writes/s: 16 shards keep each
//! under 250/s, a fourfold headroom, while a sweep stays 16 small `Query`s.
//!
//! # Items
//! The task is stored as attributes (serde_dynamo, [`Record`] stays private here). The
//! attributes conditions test (`status`, `attempt`, `next_attempt_ms`, `lease_until_ms`,
//! `version`) are top-level numbers and strings, so the claim can be ONE conditional
//! `UpdateItem` computed entirely by DynamoDB: it also copies `owner_running` (owner +
//! `#running`, written with the task) into `owner_status`, since an update expression cannot
//! concatenate strings, and derives the lease from `lease_ms` (the task's timeout + grace).
//!
//! An idempotency key is a second item, `pk = idem#<owner>#<key>`, written in the same
//! transaction as the task with `attribute_not_exists(pk)`: two racing creates cannot both
//! win, and no read comes before the write. A create whose transaction met a concurrent one
//! on the key (`TransactionConflict`) tries again, and then finds the winner's key: the
//! loser answers with the winner's task, never an error. The key item lives at least as
//! long as its task: it has no TTL while the task may still run, and gets one
//! [`KEY_OUTLIVES_TASK`] after the task's when the task finishes (removed again when `/retry`
//! revives it), in the same transaction. A key whose task is gone is removed by the next
//! create that meets it.
//!
//! # Lost responses
//! A conditional write whose response is lost after DynamoDB applied it is retried by the
//! SDK, and the retry fails its own condition. Every conditional write therefore stamps the
//! item with a fresh ULID (`write_token`; the SDK's retries of one call resend it) and asks
//! for the item back when the condition fails: when the item carries our token the write is
//! ours, and the store answers as if the first response had arrived. Two writers never share
//! a token, so two claimers at the same instant are still told apart.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    operation::update_item::UpdateItemError,
    types::{
        AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    },
};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Action, Attempt, Cursor, DeadLetter, IdempotencyKey, LocalRunAt, Owner, Rearmed, RetryPolicy,
    Status, Task, TaskId, TimeoutSeconds,
};
use crate::ports::{ClaimOutcome, CreateOutcome, ListQuery, Page, PortError, TaskScan, TaskStore};

type Item = HashMap<String, AttributeValue>;

pub(crate) const INDEX_BY_OWNER: &str = "by_owner";

/// The attribute holding the token of the write that last changed an item.
const WRITE_TOKEN: &str = "write_token";

/// How much later than its finished task an idempotency key item expires: TTL deletes an
/// item some time (typically within days) after it expires, in no particular order, and the
/// key must not go first.
const KEY_OUTLIVES_TASK: TimeDelta = TimeDelta::days(7);

/// A token for one conditional write (and the SDK's retries of it).
fn write_token() -> String {
    ulid::Ulid::new().to_string()
}

/// Whether `item` was last written by the write carrying `token`.
fn written_by(item: &Item, token: &str) -> bool {
    item.get(WRITE_TOKEN)
        .and_then(|v| v.as_s().ok())
        .is_some_and(|t| t == token)
}

/// What a create with an idempotency key met.
enum KeyWrite {
    Written,
    /// The key item exists, naming this task.
    Taken(TaskId),
    /// A concurrent transaction on the same items: nothing was written; try again.
    Contended,
}

/// A task was revived by `/retry` and has not run since: its key loses its TTL again.
fn revived(task: &Task) -> bool {
    task.status == Status::Scheduled
        && !task.attempts.is_empty()
        && task.budget_start as usize == task.attempts.len()
}
pub(crate) const INDEX_BY_OWNER_STATUS: &str = "by_owner_status";
pub(crate) const INDEX_PENDING: &str = "pending";
/// Shards of the pending index: `"00"` to `"15"` (see the module documentation).
const PENDING_SHARDS: u8 = 16;

/// The task as DynamoDB holds it. Field names are the table's attribute names.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    pk: String,
    // The original schema's fields.
    task_id: TaskId,
    #[serde(flatten)]
    action: Action,
    status: Status,
    run_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    // Ownership and the index keys.
    owner: Owner,
    owner_status: String,
    owner_running: String,
    run_at_id: String,
    /// The pending index's keys, only while the task needs moving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_at: Option<i64>,
    // Delivery state.
    retry: RetryPolicy,
    timeout_seconds: TimeoutSeconds,
    attempts: Vec<Attempt>,
    /// The current attempt's number (attempts recorded + 1).
    attempt: u32,
    budget_start: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<DateTime<Utc>>,
    /// `next_attempt_at` rounded up to the millisecond, for the claim condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_attempt_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_until_ms: Option<i64>,
    /// Length of a claim's lease (webhook timeout + grace), so the claim computes the lease.
    lease_ms: i64,
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<IdempotencyKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dead_letter: Option<DeadLetter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    occurrence: Option<crate::domain::Occurrence>,
    /// An occurrence's schedule: the key of the sparse GSI `by_schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule_of: Option<String>,
    /// TTL (epoch seconds); only on finished tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    /// `run_at_local` and `timezone`, when the client gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<LocalRunAt>,
    /// The sweeper's note that it re-armed the task (its backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rearmed: Option<Rearmed>,
}

/// The idempotency-key item.
#[derive(Debug, Serialize, Deserialize)]
struct IdemRecord {
    pk: String,
    task_id: TaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

fn ceil_ms(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    if t.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        ms
    } else {
        ms + 1
    }
}

/// The GSI sort key: fixed-width RFC 3339 to the millisecond (years 0000-9999 sort as text),
/// then the task id.
fn run_at_id(run_at: DateTime<Utc>, id: TaskId) -> String {
    format!("{}#{id}", run_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
}

fn pending_shard(id: TaskId) -> String {
    format!("{:02}", id.shard16() % PENDING_SHARDS)
}

fn owner_status(owner: &Owner, status: Status) -> String {
    format!("{owner}#{status}")
}

/// `idem#<owner>#<key>`; `%` and `#` in the owner are escaped so no two (owner, key) pairs
/// share an item (IAM ARNs contain neither, so real keys read naturally).
fn idem_pk(owner: &Owner, key: &IdempotencyKey) -> String {
    let owner = owner.as_str().replace('%', "%25").replace('#', "%23");
    format!("idem#{owner}#{}", key.as_str())
}

/// The version an item is at.
fn item_version(item: &Item) -> Option<u64> {
    item.get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// A write failed and reading back what it did failed too.
fn outcome_unknown(err: &PortError, read: &PortError) -> PortError {
    PortError::OutcomeUnknown(format!("{err}; reading it back: {read}"))
}

/// Reading back a write whose answer was lost failed: it may have been applied.
fn read_back_failed(read: PortError) -> PortError {
    PortError::OutcomeUnknown(format!(
        "a write's answer was lost; reading it back: {read}"
    ))
}

fn unavailable(op: &str, e: impl std::fmt::Display) -> PortError {
    PortError::Unavailable(format!("dynamodb {op}: {e}"))
}

fn sdk_error<E, R>(op: &str, e: SdkError<E, R>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    crate::aws_error::sdk_error(&format!("dynamodb {op}"), &e)
}

impl Record {
    fn of(task: &Task, retention: TimeDelta) -> Self {
        let lease_ms = (task.lease_for(task.updated_at) - task.updated_at).num_milliseconds();
        let next_attempt_ms = match task.status {
            Status::Scheduled => Some(ceil_ms(task.next_attempt_at.unwrap_or(task.run_at))),
            _ => task.next_attempt_at.map(ceil_ms),
        };
        Self {
            pk: task.id.to_string(),
            task_id: task.id,
            action: task.action.clone(),
            status: task.status,
            run_at: task.run_at,
            created_at: task.created_at,
            updated_at: task.updated_at,
            owner: task.owner.clone(),
            owner_status: owner_status(&task.owner, task.status),
            owner_running: owner_status(&task.owner, Status::Running),
            run_at_id: run_at_id(task.run_at, task.id),
            pending_shard: task.pending_at().map(|_| pending_shard(task.id)),
            pending_at: task.sweep_at().map(ceil_ms),
            retry: task.retry,
            timeout_seconds: task.timeout,
            attempts: task.attempts.clone(),
            attempt: task.attempt_number(),
            budget_start: task.budget_start,
            next_attempt_at: task.next_attempt_at,
            next_attempt_ms,
            lease_until_ms: task.lease_until.map(ceil_ms),
            lease_ms,
            version: task.version,
            idempotency_key: task.idempotency_key.clone(),
            request_hash: task.request_hash.clone(),
            dead_letter: task.dead_letter.clone(),
            occurrence: task.occurrence.clone(),
            schedule_of: task.occurrence.as_ref().map(|o| o.schedule_id.to_string()),
            expires_at: task
                .status
                .is_finished()
                .then(|| (task.updated_at + retention).timestamp()),
            local: task.local.clone(),
            rearmed: task.rearmed,
        }
    }

    fn into_task(self) -> Task {
        Task {
            id: self.task_id,
            owner: self.owner,
            action: self.action,
            run_at: self.run_at,
            retry: self.retry,
            timeout: self.timeout_seconds,
            status: self.status,
            attempts: self.attempts,
            budget_start: self.budget_start,
            next_attempt_at: self.next_attempt_at,
            lease_until: self
                .lease_until_ms
                .and_then(DateTime::from_timestamp_millis),
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            idempotency_key: self.idempotency_key,
            request_hash: self.request_hash,
            dead_letter: self.dead_letter,
            local: self.local,
            occurrence: self.occurrence,
            rearmed: self.rearmed,
        }
    }
}

/// A short random pause before a transaction that met a concurrent one tries again.
async fn contention_pause() {
    let ms = 5 + rand::random::<u64>() % 45;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

fn to_item<T: Serialize>(value: &T) -> Result<Item, PortError> {
    serde_dynamo::to_item(value).map_err(|e| unavailable("encode", e))
}

fn task_from_item(item: Item) -> Result<Task, PortError> {
    serde_dynamo::from_item::<_, Record>(item)
        .map(Record::into_task)
        .map_err(|e| unavailable("decode", e))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// [`TaskStore`] on DynamoDB.
#[derive(Clone)]
pub(crate) struct DynamoStore {
    client: Client,
    table: String,
    retention: TimeDelta,
}

impl DynamoStore {
    pub(crate) const DEFAULT_RETENTION_DAYS: u32 = 30;

    pub(crate) fn new(client: Client, table: impl Into<String>, retention_days: u32) -> Self {
        Self {
            client,
            table: table.into(),
            retention: TimeDelta::days(retention_days.into()),
        }
    }

    fn key(&self, pk: String) -> Item {
        HashMap::from([("pk".to_owned(), s(pk))])
    }

    async fn get_item(&self, pk: String) -> Result<Option<Item>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(pk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(out.item)
    }

    /// The item of `task`, stamped with the write's token.
    fn item_written_by(&self, task: &Task, token: &str) -> Result<Item, PortError> {
        let mut item = to_item(&Record::of(task, self.retention))?;
        item.insert(WRITE_TOKEN.to_owned(), s(token));
        Ok(item)
    }

    /// The item as a failed condition found it: returned with the failure, else read
    /// consistently (emulators may not return it; a missing item returns nothing).
    async fn item_at_failure(
        &self,
        returned: Option<&Item>,
        pk: String,
    ) -> Result<Option<Item>, PortError> {
        match returned {
            Some(item) if !item.is_empty() => Ok(Some(item.clone())),
            _ => self.get_item(pk).await,
        }
    }

    /// A conditional write's condition failed: the write is ours (its response was lost
    /// and the SDK retried it) when the item carries its token.
    async fn ours(
        &self,
        returned: Option<&Item>,
        pk: String,
        token: &str,
    ) -> Result<bool, PortError> {
        Ok(self
            .item_at_failure(returned, pk)
            .await
            .map_err(read_back_failed)?
            .is_some_and(|item| written_by(&item, token)))
    }

    /// A create whose call failed (after the SDK's retries): an earlier try may have been
    /// applied and lost its answer. The task id is new, so an item under it is this
    /// create's; no item means nothing was written. A read that fails too leaves the
    /// outcome unknown, never "nothing was changed".
    async fn created_after_error(
        &self,
        task: &Task,
        err: PortError,
    ) -> Result<CreateOutcome, PortError> {
        match self.get_item(task.id.to_string()).await {
            Ok(Some(_)) => Ok(CreateOutcome::Created),
            Ok(None) => Err(err),
            Err(read) => Err(outcome_unknown(&err, &read)),
        }
    }

    /// An update (a versioned `PutItem`, or the transaction with its key item) whose call
    /// failed: applied when the item carries its token; not applied when the item is still
    /// at an older version, or another writer holds this version (a lost race: `Conflict`);
    /// unknown when the item moved on past it or cannot be read.
    async fn updated_after_error(
        &self,
        task: &Task,
        token: &str,
        err: PortError,
    ) -> Result<(), PortError> {
        match self.get_item(task.id.to_string()).await {
            Ok(Some(item)) if written_by(&item, token) => Ok(()),
            Ok(Some(item)) => match item_version(&item) {
                Some(v) if v < task.version => Err(err),
                Some(v) if v == task.version => Err(PortError::Conflict),
                _ => Err(PortError::OutcomeUnknown(format!(
                    "{err}; the task has changed since, perhaps after this write"
                ))),
            },
            Ok(None) => Err(err),
            Err(read) => Err(outcome_unknown(&err, &read)),
        }
    }

    /// The task's write together with its key item's TTL (the task's own plus
    /// [`KEY_OUTLIVES_TASK`] when it finished, none when it was revived). `Ok(None)` when the
    /// key item no longer names this task (it is left alone, and the task is written alone).
    async fn update_with_key(
        &self,
        task: &Task,
        key: &IdempotencyKey,
        token: &str,
    ) -> Result<Option<()>, PortError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.item_written_by(task, token)?))
            .condition_expression("#version = :previous")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":previous", n(task.version.saturating_sub(1)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("put");
        let key_update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.key(idem_pk(&task.owner, key))))
            .condition_expression("task_id = :id")
            .expression_attribute_values(":id", s(task.id.to_string()));
        let key_update = match Record::of(task, self.retention).expires_at {
            Some(at) => key_update
                .update_expression("SET expires_at = :at")
                .expression_attribute_values(":at", n(at + KEY_OUTLIVES_TASK.num_seconds())),
            None => key_update.update_expression("REMOVE expires_at"),
        }
        .build()
        .expect("update");
        for _ in 0..5 {
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put.clone()).build())
                .transact_items(
                    TransactWriteItem::builder()
                        .update(key_update.clone())
                        .build(),
                )
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Some(())),
                Err(e) => e,
            };
            let reasons = match err.as_service_error() {
                Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) => {
                    c.cancellation_reasons().to_vec()
                }
                _ => {
                    return self
                        .updated_after_error(task, token, sdk_error("TransactWriteItems", err))
                        .await
                        .map(Some);
                }
            };
            let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or_default();
            if code(0) == "ConditionalCheckFailed" {
                let returned = reasons[0].item.as_ref();
                return if self.ours(returned, task.id.to_string(), token).await? {
                    Ok(Some(()))
                } else {
                    Err(PortError::Conflict)
                };
            }
            if code(1) == "ConditionalCheckFailed" {
                return Ok(None);
            }
            if code(0) != "TransactionConflict" && code(1) != "TransactionConflict" {
                return self
                    .updated_after_error(task, token, sdk_error("TransactWriteItems", err))
                    .await
                    .map(Some);
            }
            contention_pause().await;
        }
        Err(PortError::Unavailable(
            "dynamodb: the task's idempotency key is changing concurrently".into(),
        ))
    }

    fn put_new(&self, item: Item) -> Put {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("put")
    }

    /// Task and key item in one transaction; `Taken` when the key item already exists
    /// (its task id is returned by DynamoDB with the cancellation reason, or read back).
    async fn create_with_key(
        &self,
        task: &Task,
        key: &IdempotencyKey,
        token: &str,
    ) -> Result<KeyWrite, PortError> {
        let pk = idem_pk(&task.owner, key);
        // No TTL while the task may run: it gets one when the task finishes (`update`).
        let idem = IdemRecord {
            pk: pk.clone(),
            task_id: task.id,
            expires_at: None,
        };
        let mut idem_put = self.put_new(to_item(&idem)?);
        idem_put.return_values_on_condition_check_failure =
            Some(ReturnValuesOnConditionCheckFailure::AllOld);
        let result = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .put(self.put_new(self.item_written_by(task, token)?))
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().put(idem_put).build())
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(KeyWrite::Written),
            Err(e) => e,
        };
        let reasons = match err.as_service_error() {
            Some(
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c),
            ) => c.cancellation_reasons().to_vec(),
            _ => return Err(sdk_error("TransactWriteItems", err)),
        };
        let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or_default();
        if code(1) != "ConditionalCheckFailed" {
            if code(0) == "TransactionConflict" || code(1) == "TransactionConflict" {
                return Ok(KeyWrite::Contended);
            }
            return Err(sdk_error("TransactWriteItems", err));
        }
        // Emulators may not return the old item; then it is read (consistently).
        let Some(item) = self
            .item_at_failure(reasons[1].item.as_ref(), pk)
            .await
            .map_err(read_back_failed)?
        else {
            // Removed meanwhile (an orphaned key cleared by a concurrent create).
            return Ok(KeyWrite::Contended);
        };
        let idem: IdemRecord =
            serde_dynamo::from_item(item).map_err(|e| unavailable("decode", e))?;
        Ok(KeyWrite::Taken(idem.task_id))
    }
}

impl DynamoStore {
    /// Up to `limit` task ids of one shard of the pending index with a key at or before
    /// `cutoff_ms`, paged.
    async fn overdue_in_shard(
        &self,
        shard: u8,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<TaskId>, PortError> {
        let mut ids = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(INDEX_PENDING)
                .key_condition_expression("#shard = :shard AND #at <= :cut")
                .expression_attribute_names("#shard", "pending_shard")
                .expression_attribute_names("#at", "pending_at")
                .expression_attribute_values(":shard", s(format!("{shard:02}")))
                .expression_attribute_values(":cut", n(cutoff_ms))
                .set_exclusive_start_key(start.take())
                .limit(i32::try_from(limit - ids.len()).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in out.items.unwrap_or_default() {
                let id = item
                    .get("pk")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|pk| TaskId::parse(pk).ok())
                    .ok_or_else(|| unavailable("Query", "pending index item without a task id"))?;
                ids.push(id);
            }
            match out.last_evaluated_key {
                Some(k) if ids.len() < limit => start = Some(k),
                _ => return Ok(ids),
            }
        }
    }
}

/// The sweeper's read: one `Query` per shard of the pending index (never a `Scan`), each
/// bounded by an even share of `limit`, then each task read afresh (the index is eventually
/// consistent; the table read is not).
#[async_trait]
impl TaskScan for DynamoStore {
    async fn overdue(&self, cutoff: DateTime<Utc>, limit: usize) -> Result<Vec<Task>, PortError> {
        use futures::StreamExt;
        let per_shard = limit.div_ceil(usize::from(PENDING_SHARDS)).max(1);
        let cutoff_ms = cutoff.timestamp_millis();
        let shards = futures::future::try_join_all(
            (0..PENDING_SHARDS).map(|shard| self.overdue_in_shard(shard, cutoff_ms, per_shard)),
        )
        .await?;
        let reads: Vec<Result<Option<Task>, PortError>> =
            futures::stream::iter(shards.into_iter().flatten().take(limit))
                .map(|id| self.get(id))
                .buffer_unordered(16)
                .collect()
                .await;
        let mut tasks = Vec::new();
        for read in reads {
            tasks.extend(read?);
        }
        tasks.sort_by_key(|t| (t.sweep_at(), t.id));
        Ok(tasks)
    }
}

#[async_trait]
impl TaskStore for DynamoStore {
    async fn create(&self, task: &Task) -> Result<CreateOutcome, PortError> {
        let token = write_token();
        let Some(key) = &task.idempotency_key else {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(self.item_written_by(task, &token)?))
                .condition_expression("attribute_not_exists(pk)")
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            return match result {
                Ok(_) => Ok(CreateOutcome::Created),
                Err(e) => match e.as_service_error() {
                    Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c))
                        if self.ours(c.item(), task.id.to_string(), &token).await? =>
                    {
                        Ok(CreateOutcome::Created)
                    }
                    Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(_)) => {
                        Err(sdk_error("PutItem", e))
                    }
                    _ => self.created_after_error(task, sdk_error("PutItem", e)).await,
                },
            };
        };
        // A few rounds: another runs only after a concurrent transaction on the key, or
        // after an orphaned key item (its task expired by TTL before the key did) was removed.
        for _ in 0..6 {
            let written = match self.create_with_key(task, key, &token).await {
                Err(PortError::Unavailable(m)) => {
                    return self
                        .created_after_error(task, PortError::Unavailable(m))
                        .await;
                }
                other => other?,
            };
            let existing = match written {
                KeyWrite::Written => return Ok(CreateOutcome::Created),
                // Our own write, whose response was lost: created by this call.
                KeyWrite::Taken(id) if id == task.id => return Ok(CreateOutcome::Created),
                KeyWrite::Taken(id) => id,
                KeyWrite::Contended => {
                    contention_pause().await;
                    continue;
                }
            };
            if let Some(found) = self.get(existing).await? {
                return Ok(CreateOutcome::Existing(Box::new(found)));
            }
            let _ = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(self.key(idem_pk(&task.owner, key))))
                .condition_expression("task_id = :id")
                .expression_attribute_values(":id", s(existing.to_string()))
                .send()
                .await;
        }
        Err(PortError::Unavailable(
            "dynamodb: idempotency key is being reused concurrently".into(),
        ))
    }

    async fn get(&self, id: TaskId) -> Result<Option<Task>, PortError> {
        self.get_item(id.to_string())
            .await?
            .map(task_from_item)
            .transpose()
    }

    async fn list(&self, q: &ListQuery) -> Result<Page, PortError> {
        let (index, key_attr, key_value) = match (q.schedule_id, q.status) {
            // The occurrences' own index; owner and status are filtered on it.
            (Some(id), _) => (schedules::INDEX_BY_SCHEDULE, "schedule_of", id.to_string()),
            (None, None) => (INDEX_BY_OWNER, "owner", q.owner.to_string()),
            (None, Some(st)) => (
                INDEX_BY_OWNER_STATUS,
                "owner_status",
                owner_status(&q.owner, st),
            ),
        };
        let filter = q.schedule_id.map(|_| match q.status {
            Some(st) => ("#owner = :owner AND #status = :status", Some(st)),
            None => ("#owner = :owner", None),
        });
        // The cursor names the last task returned; a GSI's start key is its full key
        // (table key + index keys).
        let mut start = q.after.map(|c: Cursor| {
            HashMap::from([
                ("pk".to_owned(), s(c.task_id.to_string())),
                (key_attr.to_owned(), s(key_value.clone())),
                ("run_at_id".to_owned(), s(run_at_id(c.run_at, c.task_id))),
            ])
        });
        let want = q.limit as usize + 1;
        let mut tasks = Vec::new();
        // A page may stop early (1 MB per Query): keep going until one more than asked for
        // is known, which is what tells whether there is a next page.
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", key_attr)
                .expression_attribute_values(":k", s(key_value.clone()))
                .set_exclusive_start_key(start.take())
                .limit(i32::try_from(want - tasks.len()).unwrap_or(i32::MAX));
            let query = match filter {
                Some((expr, status)) => {
                    let query = query
                        .filter_expression(expr)
                        .expression_attribute_names("#owner", "owner")
                        .expression_attribute_values(":owner", s(q.owner.to_string()));
                    match status {
                        Some(st) => query
                            .expression_attribute_names("#status", "status")
                            .expression_attribute_values(":status", s(st.as_str())),
                        None => query,
                    }
                }
                None => query,
            };
            let out = query.send().await.map_err(|e| sdk_error("Query", e))?;
            for item in out.items.unwrap_or_default() {
                tasks.push(task_from_item(item)?);
            }
            match out.last_evaluated_key {
                Some(k) if tasks.len() < want => start = Some(k),
                _ => break,
            }
        }
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
    }

    async fn claim(
        &self,
        id: TaskId,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, PortError> {
        // Mirrors `Task::claim`: the current attempt, and either scheduled and due, or
        // running with an expired lease (its holder died). Rounding is conservative: due
        // and lease times are stored rounded up, `now` is rounded down.
        let now_ms = now.timestamp_millis();
        let now_attr =
            serde_dynamo::to_attribute_value(now).map_err(|e| unavailable("encode", e))?;
        let token = write_token();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(id.to_string())))
            .condition_expression(
                "#attempt = :attempt AND attribute_not_exists(#occurrence) \
                 AND ((#status = :scheduled AND #next <= :now_ms) \
                 OR (#status = :running AND #lease_until <= :now_ms))",
            )
            // An occurrence may move its schedule's chain on: `claim_occurrence`.
            .expression_attribute_names("#occurrence", "occurrence")
            .update_expression(
                "SET #status = :running, #owner_status = #owner_running, \
                 #version = #version + :one, #updated_at = :now, \
                 #lease_until = #lease_ms + :now_ms, #token = :token, \
                 #pending_shard = :pending_shard, #pending_at = #lease_ms + :now_ms",
            )
            // The pending index: the lease's end, as DynamoDB computes it.
            .expression_attribute_names("#pending_shard", "pending_shard")
            .expression_attribute_names("#pending_at", "pending_at")
            .expression_attribute_values(":pending_shard", s(pending_shard(id)))
            .expression_attribute_names("#token", WRITE_TOKEN)
            .expression_attribute_values(":token", s(&token))
            .expression_attribute_names("#attempt", "attempt")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#next", "next_attempt_ms")
            .expression_attribute_names("#lease_until", "lease_until_ms")
            .expression_attribute_names("#lease_ms", "lease_ms")
            .expression_attribute_names("#owner_status", "owner_status")
            .expression_attribute_names("#owner_running", "owner_running")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#updated_at", "updated_at")
            .expression_attribute_values(":attempt", n(attempt))
            .expression_attribute_values(":scheduled", s(Status::Scheduled.as_str()))
            .expression_attribute_values(":running", s(Status::Running.as_str()))
            .expression_attribute_values(":now_ms", n(now_ms))
            .expression_attribute_values(":now", now_attr)
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out
                    .attributes
                    .ok_or_else(|| unavailable("UpdateItem", "no attributes returned"))?;
                Ok(ClaimOutcome::Claimed(task_from_item(item)?))
            }
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    // A missing task returns no item; so may an emulator. Read to be sure.
                    let current = self
                        .item_at_failure(c.item(), id.to_string())
                        .await
                        .map_err(read_back_failed)?;
                    match current {
                        // Our claim, applied before its response was lost.
                        Some(item) if written_by(&item, &token) => {
                            Ok(ClaimOutcome::Claimed(task_from_item(item)?))
                        }
                        Some(item) if item.contains_key("occurrence") => {
                            self.claim_occurrence(task_from_item(item)?, attempt, now)
                                .await
                        }
                        current => Ok(ClaimOutcome::Rejected(
                            current.map(task_from_item).transpose()?,
                        )),
                    }
                }
                // An earlier try may have been applied and lost its answer: ours if the
                // item carries our token.
                _ => {
                    let err = sdk_error("UpdateItem", e);
                    match self.get_item(id.to_string()).await {
                        Ok(Some(item)) if written_by(&item, &token) => {
                            Ok(ClaimOutcome::Claimed(task_from_item(item)?))
                        }
                        Ok(_) => Err(err),
                        Err(read) => Err(outcome_unknown(&err, &read)),
                    }
                }
            },
        }
    }

    async fn update(&self, task: &Task) -> Result<(), PortError> {
        let token = write_token();
        if let Some(key) = &task.idempotency_key
            && (task.status.is_finished() || revived(task))
            && self.update_with_key(task, key, &token).await?.is_some()
        {
            return Ok(());
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.item_written_by(task, &token)?))
            .condition_expression("#version = :previous")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":previous", n(task.version.saturating_sub(1)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c)) => {
                    if self.ours(c.item(), task.id.to_string(), &token).await? {
                        Ok(())
                    } else {
                        Err(PortError::Conflict)
                    }
                }
                _ => self.updated_after_error(task, &token, sdk_error("PutItem", e)).await,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_key_sorts_like_the_cursor() {
        let a = TaskId::generate();
        let t1 = DateTime::from_timestamp_millis(1_700_000_000_005).unwrap();
        let t2 = DateTime::from_timestamp_millis(1_700_000_000_010).unwrap();
        assert!(run_at_id(t1, a) < run_at_id(t2, a));
        assert_eq!(
            run_at_id(t1, a),
            format!("2023-11-14T22:13:20.005Z#{a}"),
            "fixed width, milliseconds"
        );
        let early = DateTime::from_timestamp(-1, 0).unwrap();
        assert!(run_at_id(early, a) < run_at_id(t1, a));
    }

    #[test]
    fn idempotency_items_cannot_collide() {
        let k = |s: &str| IdempotencyKey::parse(s).unwrap();
        let o = |s: &str| Owner::parse(s).unwrap();
        assert_ne!(idem_pk(&o("a#b"), &k("c")), idem_pk(&o("a"), &k("b#c")));
        assert_eq!(
            idem_pk(&o("arn:aws:iam::1:user/x"), &k("k1")),
            "idem#arn:aws:iam::1:user/x#k1"
        );
    }

    #[test]
    fn rounding_is_conservative() {
        let t = DateTime::from_timestamp_nanos(1_700_000_000_000_000_001);
        assert_eq!(ceil_ms(t), 1_700_000_000_001);
        assert_eq!(t.timestamp_millis(), 1_700_000_000_000);
    }
}

/// A DynamoDB store on moto server, on a fresh table shaped like the CDK app's.
#[cfg(test)]
async fn dynamo_store() -> (DynamoStore, Client, String) {
    let client = Client::new(&testkit::sdk_config().await);
    let table = testkit::unique("tasks");
    testkit::create_table(&client, &table)
        .await
        .expect("create table");
    (DynamoStore::new(client.clone(), &table, 30), client, table)
}

/// The contract cases against DynamoDB on moto server (`make test-aws`).
#[cfg(test)]
mod contract_on_moto {
    async fn store() -> crate::store::contract::Store {
        std::sync::Arc::new(super::dynamo_store().await.0)
    }

    // moto does not serialize conditional writes to one item (real DynamoDB does): the
    // races run in both orders instead of truly concurrently. See `contract::Caps`.
    crate::store::contract::store_contract_tests!(
        store(),
        crate::store::contract::Caps { atomic: false },
        #[ignore = "needs moto: make test-aws"]
    );
}

/// What only DynamoDB has: the TTL attribute, and the old item returned with a failed claim.
#[cfg(test)]
mod on_moto {
    use super::*;
    use crate::domain::RetryHint;
    use crate::store::contract::{delivery, owner, t0, task};

    async fn raw(client: &Client, table: &str, id: TaskId) -> Item {
        client
            .get_item()
            .table_name(table)
            .key("pk", s(id.to_string()))
            .send()
            .await
            .unwrap()
            .item
            .unwrap()
    }

    fn expires_at(item: &Item) -> Option<i64> {
        item.get("expires_at")
            .map(|v| v.as_n().unwrap().parse().unwrap())
    }

    #[tokio::test]
    #[ignore = "needs moto: make test-aws"]
    async fn finished_tasks_get_a_ttl_and_a_revived_one_loses_it() {
        let (store, client, table) = super::dynamo_store().await;
        let t = task(&owner(), t0(), None);
        store.create(&t).await.unwrap();
        assert_eq!(expires_at(&raw(&client, &table, t.id).await), None);
        let running = match store.claim(t.id, 1, t0()).await.unwrap() {
            ClaimOutcome::Claimed(r) => r,
            other => panic!("{other:?}"),
        };
        let item = raw(&client, &table, t.id).await;
        assert_eq!(expires_at(&item), None);
        assert_eq!(
            item["owner_status"].as_s().unwrap(),
            &format!("{}#running", t.owner),
            "the claim moves the task in the status index"
        );
        let (failed, _) = running
            .record(1, &delivery(RetryHint::Permanent, t0()), t0(), 0.5)
            .unwrap();
        store.update(&failed).await.unwrap();
        let item = raw(&client, &table, t.id).await;
        assert_eq!(
            expires_at(&item),
            Some((failed.updated_at + TimeDelta::days(30)).timestamp())
        );
        // The original schema's fields are plain attributes.
        for attr in [
            "task_id",
            "action",
            "payload",
            "status",
            "run_at",
            "created_at",
            "updated_at",
        ] {
            assert!(item.contains_key(attr), "{attr}");
        }
        assert_eq!(item["action"].as_s().unwrap(), "webhook");
        assert_eq!(item["status"].as_s().unwrap(), "failed");
        let revived = failed.retry_failed(t0() + TimeDelta::hours(1)).unwrap();
        store.update(&revived).await.unwrap();
        assert_eq!(expires_at(&raw(&client, &table, t.id).await), None);
        // A cancelled task expires too.
        let c = task(&owner(), t0(), None);
        store.create(&c).await.unwrap();
        let cancelled = c.cancel(t0()).unwrap();
        store.update(&cancelled).await.unwrap();
        assert_eq!(
            expires_at(&raw(&client, &table, c.id).await),
            Some((t0() + TimeDelta::days(30)).timestamp())
        );
    }

    /// The pending index's keys, as the CDK app's GSI `pending` expects them: present while
    /// the task needs moving, removed when it is finished.
    #[tokio::test]
    #[ignore = "needs moto: make test-aws"]
    async fn pending_keys_follow_the_task() {
        let (store, client, table) = super::dynamo_store().await;
        let keys = |item: &Item| {
            (
                item.get("pending_shard").map(|v| v.as_s().unwrap().clone()),
                item.get("pending_at").map(|v| v.as_n().unwrap().clone()),
            )
        };
        let t = task(&owner(), t0(), None);
        store.create(&t).await.unwrap();
        let shard = format!("{:02}", t.id.shard16());
        assert!(("00".."16").contains(&shard.as_str()), "{shard}");
        assert_eq!(
            keys(&raw(&client, &table, t.id).await),
            (Some(shard.clone()), Some("1800000000000".to_owned()))
        );
        let ClaimOutcome::Claimed(running) = store.claim(t.id, 1, t0()).await.unwrap() else {
            panic!("claimed")
        };
        assert_eq!(
            keys(&raw(&client, &table, t.id).await),
            (
                Some(shard),
                Some(running.lease_until.unwrap().timestamp_millis().to_string())
            ),
            "exactly the lease's end, computed by DynamoDB in the claim"
        );
        let (done, _) = running
            .record(1, &delivery(RetryHint::Success, t0()), t0(), 0.5)
            .unwrap();
        store.update(&done).await.unwrap();
        assert_eq!(keys(&raw(&client, &table, t.id).await), (None, None));
    }

    #[tokio::test]
    #[ignore = "needs moto: make test-aws"]
    async fn a_failed_claim_returns_the_current_item_without_a_read() {
        let (store, client, table) = super::dynamo_store().await;
        let t = task(&owner(), t0(), None);
        store.create(&t).await.unwrap();
        let err = client
            .update_item()
            .table_name(&table)
            .key("pk", s(t.id.to_string()))
            .condition_expression("#a = :a")
            .update_expression("SET #a = :a")
            .expression_attribute_names("#a", "attempt")
            .expression_attribute_values(":a", n(7))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
            .unwrap_err();
        match err.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                let item = c.item().expect("ALL_OLD item with the failure").clone();
                assert_eq!(task_from_item(item).unwrap(), t);
            }
            other => panic!("{other:?}"),
        }
    }
}

mod schedules;

/// Lost responses and transaction conflicts, injected by a proxy in front of moto server.
#[cfg(test)]
mod faults;

/// The idempotency key item's lifetime.
#[cfg(test)]
mod keys;
