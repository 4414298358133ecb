//! Schedules in the tasks' table, so that one `TransactWriteItems` covers a schedule and
//! its occurrences.
//!
//! - A schedule is the item `pk = schedule#<id>`: its JSON document (`body`), its `version`
//!   (the write conditions test it) and the keys of the `by_owner_status` index:
//!   `owner_status = <owner>#schedules` (no task status is spelled so), `run_at_id = <id>`
//!   (ULIDs sort by creation). Listing an owner's schedules is one `Query` of that index;
//!   the item has no `owner` attribute, so it never shows in `by_owner` (tasks only).
//! - An idempotency key is the item `pk = schedule-idem#<owner>#<key>` naming the schedule,
//!   written with it (`attribute_not_exists(pk)`) and deleted with it.
//! - An occurrence carries `schedule_of` (its schedule's id), the partition key of the sparse
//!   GSI `by_schedule` (sort key `run_at_id`): `GET /tasks?schedule_id=` is a `Query` of it.

use super::*;
use crate::domain::{Schedule, ScheduleId};
use crate::ports::{ScheduleCreateOutcome, ScheduleStore, ScheduleWrite};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{CancellationReason, Delete};

pub(super) const INDEX_BY_SCHEDULE: &str = "by_schedule";

pub(super) fn schedule_pk(id: ScheduleId) -> String {
    format!("schedule#{id}")
}

fn schedules_of(owner: &Owner) -> String {
    format!("{owner}#schedules")
}

fn schedule_idem_pk(owner: &Owner, key: &IdempotencyKey) -> String {
    format!("schedule-{}", idem_pk(owner, key))
}

fn schedule_from_item(item: &Item) -> Result<Schedule, PortError> {
    let body = item
        .get("body")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| unavailable("decode", "schedule item without a body"))?;
    serde_json::from_str(body).map_err(|e| unavailable("decode", e))
}

/// The cancellation reasons of a cancelled transaction, or `None` for any other error.
fn cancellation(
    err: &SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Option<Vec<CancellationReason>> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
            Some(c.cancellation_reasons().to_vec())
        }
        _ => None,
    }
}

fn code(reasons: &[CancellationReason], i: usize) -> &str {
    reasons.get(i).and_then(|r| r.code()).unwrap_or_default()
}

fn failed_at(reasons: &[CancellationReason]) -> Option<usize> {
    reasons
        .iter()
        .position(|r| r.code() == Some("ConditionalCheckFailed"))
}

fn contended(reasons: &[CancellationReason]) -> bool {
    reasons
        .iter()
        .any(|r| r.code() == Some("TransactionConflict"))
}

impl DynamoStore {
    fn schedule_item(&self, schedule: &Schedule, token: &str) -> Result<Item, PortError> {
        let body = serde_json::to_string(schedule).map_err(|e| unavailable("encode", e))?;
        Ok(HashMap::from([
            ("pk".to_owned(), s(schedule_pk(schedule.id))),
            ("owner_status".to_owned(), s(schedules_of(&schedule.owner))),
            ("run_at_id".to_owned(), s(schedule.id.to_string())),
            ("version".to_owned(), n(schedule.version)),
            ("body".to_owned(), s(body)),
            (WRITE_TOKEN.to_owned(), s(token)),
        ]))
    }

    fn versioned_put(&self, item: Item, version: u64) -> Put {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("#version = :previous")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":previous", n(version.saturating_sub(1)))
            .build()
            .expect("put")
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>>
    {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
    }

    /// Whether the item under `pk` carries `token`; a failed read leaves it unknown.
    async fn carries(&self, pk: String, token: &str) -> Result<bool, PortError> {
        Ok(self
            .get_item(pk)
            .await
            .map_err(read_back_failed)?
            .is_some_and(|item| written_by(&item, token)))
    }

    /// The claim of an occurrence (the condition of the plain claim excludes them). When it
    /// is its schedule's pending occurrence, ONE transaction writes the claim, the next
    /// occurrence and the schedule ([`Schedule::advance`]), each conditional on what was
    /// read, so the chain cannot break; a concurrent change to the schedule makes it read
    /// again. A lost response is recognised by the write token on the task item.
    pub(super) async fn claim_occurrence(
        &self,
        mut task: Task,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<ClaimOutcome, PortError> {
        for _ in 0..5 {
            let Ok(running) = task.claim(attempt, now) else {
                return Ok(ClaimOutcome::Rejected(Some(task)));
            };
            let schedule = match &task.occurrence {
                Some(o) if task.may_move_chain() => self.get_schedule(o.schedule_id).await?,
                _ => None,
            };
            let Some((next, marked)) = schedule.and_then(|s| s.advance(&running, now)) else {
                return match self.update(&running).await {
                    Ok(()) => Ok(ClaimOutcome::Claimed(running)),
                    Err(PortError::Conflict) => {
                        Ok(ClaimOutcome::Rejected(self.get(task.id).await?))
                    }
                    Err(e) => Err(e),
                };
            };
            let token = write_token();
            let mut items = vec![
                TransactWriteItem::builder()
                    .put(self.versioned_put(self.item_written_by(&marked, &token)?, marked.version))
                    .build(),
                TransactWriteItem::builder()
                    .put(self.versioned_put(
                        self.schedule_item(&next.schedule, &token)?,
                        next.schedule.version,
                    ))
                    .build(),
            ];
            if let Some(t) = &next.create {
                items.push(
                    TransactWriteItem::builder()
                        .put(self.put_new(self.item_written_by(t, &token)?))
                        .build(),
                );
            }
            let err = match self.transact(items).await {
                Ok(()) => return Ok(ClaimOutcome::Claimed(marked)),
                Err(e) => e,
            };
            // An earlier try of this call may have been applied (its answer lost).
            if self.carries(task.id.to_string(), &token).await? {
                return Ok(ClaimOutcome::Claimed(marked));
            }
            match cancellation(&err) {
                Some(reasons) if failed_at(&reasons) == Some(0) => {
                    return Ok(ClaimOutcome::Rejected(self.get(task.id).await?));
                }
                Some(reasons) if failed_at(&reasons).is_some() || contended(&reasons) => {
                    // The schedule moved on meanwhile (or a concurrent transaction): read again.
                    contention_pause().await;
                    match self.get(task.id).await? {
                        Some(t) => task = t,
                        None => return Ok(ClaimOutcome::Rejected(None)),
                    }
                }
                _ => return Err(sdk_error("TransactWriteItems", err)),
            }
        }
        Err(PortError::Unavailable(
            "dynamodb: the occurrence's schedule is changing concurrently".into(),
        ))
    }
}

#[async_trait]
impl ScheduleStore for DynamoStore {
    async fn create_schedule(
        &self,
        schedule: &Schedule,
        first: Option<&Task>,
    ) -> Result<ScheduleCreateOutcome, PortError> {
        let token = write_token();
        for _ in 0..5 {
            let mut items = vec![
                TransactWriteItem::builder()
                    .put(self.put_new(self.schedule_item(schedule, &token)?))
                    .build(),
            ];
            if let Some(t) = first {
                items.push(
                    TransactWriteItem::builder()
                        .put(self.put_new(self.item_written_by(t, &token)?))
                        .build(),
                );
            }
            let key_pk = schedule
                .idempotency_key
                .as_ref()
                .map(|k| schedule_idem_pk(&schedule.owner, k));
            if let Some(pk) = &key_pk {
                items.push(
                    TransactWriteItem::builder()
                        .put(self.put_new(HashMap::from([
                            ("pk".to_owned(), s(pk.clone())),
                            ("schedule_id".to_owned(), s(schedule.id.to_string())),
                        ])))
                        .build(),
                );
            }
            let err = match self.transact(items).await {
                Ok(()) => return Ok(ScheduleCreateOutcome::Created),
                Err(e) => e,
            };
            if self.carries(schedule_pk(schedule.id), &token).await? {
                return Ok(ScheduleCreateOutcome::Created);
            }
            let Some(reasons) = cancellation(&err) else {
                return Err(sdk_error("TransactWriteItems", err));
            };
            let key_at = if first.is_some() { 2 } else { 1 };
            match (&key_pk, code(&reasons, key_at)) {
                (Some(pk), "ConditionalCheckFailed") => {
                    let existing = self
                        .get_item(pk.clone())
                        .await?
                        .and_then(|item| item.get("schedule_id")?.as_s().ok()?.parse().ok());
                    if let Some(id) = existing
                        && let Some(found) = self.get_schedule(id).await?
                    {
                        return Ok(ScheduleCreateOutcome::Existing(Box::new(found)));
                    }
                    contention_pause().await;
                }
                _ if contended(&reasons) => contention_pause().await,
                _ => return Err(sdk_error("TransactWriteItems", err)),
            }
        }
        Err(PortError::Unavailable(
            "dynamodb: the schedule's idempotency key is being used concurrently".into(),
        ))
    }

    async fn get_schedule(&self, id: ScheduleId) -> Result<Option<Schedule>, PortError> {
        self.get_item(schedule_pk(id))
            .await?
            .map(|item| schedule_from_item(&item))
            .transpose()
    }

    async fn list_schedules(
        &self,
        owner: &Owner,
        limit: u32,
        after: Option<ScheduleId>,
    ) -> Result<(Vec<Schedule>, bool), PortError> {
        let key = schedules_of(owner);
        let mut start = after.map(|a| {
            HashMap::from([
                ("pk".to_owned(), s(schedule_pk(a))),
                ("owner_status".to_owned(), s(key.clone())),
                ("run_at_id".to_owned(), s(a.to_string())),
            ])
        });
        let want = limit as usize + 1;
        let mut out = Vec::new();
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(INDEX_BY_OWNER_STATUS)
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", "owner_status")
                .expression_attribute_values(":k", s(key.clone()))
                .set_exclusive_start_key(start.take())
                .limit(i32::try_from(want - out.len()).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                out.push(schedule_from_item(&item)?);
            }
            match page.last_evaluated_key {
                Some(k) if out.len() < want => start = Some(k),
                _ => break,
            }
        }
        let more = out.len() > limit as usize;
        out.truncate(limit as usize);
        Ok((out, more))
    }

    async fn write_schedule(&self, write: &ScheduleWrite) -> Result<(), PortError> {
        let token = write_token();
        let schedule = &write.schedule;
        let mut items = Vec::new();
        if write.delete {
            items.push(
                TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(self.key(schedule_pk(schedule.id))))
                            .condition_expression("#version = :previous")
                            .expression_attribute_names("#version", "version")
                            .expression_attribute_values(
                                ":previous",
                                n(schedule.version.saturating_sub(1)),
                            )
                            .build()
                            .expect("delete"),
                    )
                    .build(),
            );
            if let Some(k) = &schedule.idempotency_key {
                items.push(
                    TransactWriteItem::builder()
                        .delete(
                            Delete::builder()
                                .table_name(&self.table)
                                .set_key(Some(self.key(schedule_idem_pk(&schedule.owner, k))))
                                .build()
                                .expect("delete"),
                        )
                        .build(),
                );
            }
        } else {
            items.push(
                TransactWriteItem::builder()
                    .put(
                        self.versioned_put(self.schedule_item(schedule, &token)?, schedule.version),
                    )
                    .build(),
            );
        }
        for t in &write.update {
            items.push(
                TransactWriteItem::builder()
                    .put(self.versioned_put(self.item_written_by(t, &token)?, t.version))
                    .build(),
            );
        }
        for t in &write.insert {
            items.push(
                TransactWriteItem::builder()
                    .put(self.put_new(self.item_written_by(t, &token)?))
                    .build(),
            );
        }
        let err = match self.transact(items).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // An earlier try may have been applied and lost its answer: every item it wrote
        // carries its token (a deleted schedule carries none; its occurrences do).
        let witness = if write.delete {
            write
                .update
                .first()
                .or(write.insert.first())
                .map(|t| t.id.to_string())
        } else {
            Some(schedule_pk(schedule.id))
        };
        if let Some(pk) = witness
            && self.carries(pk, &token).await?
        {
            return Ok(());
        }
        match cancellation(&err) {
            Some(reasons) if failed_at(&reasons).is_some() || contended(&reasons) => {
                Err(PortError::Conflict)
            }
            _ => Err(sdk_error("TransactWriteItems", err)),
        }
    }
}
