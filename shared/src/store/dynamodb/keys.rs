//! The idempotency key item's lifetime: at least its task's (the TTLs moto stores but does
//! not act on are read back).

use super::*;
use crate::domain::RetryHint;
use crate::store::contract::{claimed, delivery, owner, t0, task};

async fn expires_at(client: &Client, table: &str, pk: String) -> Option<i64> {
    let item = client
        .get_item()
        .table_name(table)
        .key("pk", s(pk))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the item exists");
    item.get("expires_at")
        .map(|v| v.as_n().unwrap().parse().unwrap())
}

#[tokio::test]
#[ignore = "needs moto: make test-aws"]
async fn a_key_expires_only_after_its_task() {
    let (store, client, table) = super::dynamo_store().await;
    let o = owner();
    let t = task(&o, t0(), Some("ttl"));
    store.create(&t).await.unwrap();
    let key = || idem_pk(&o, t.idempotency_key.as_ref().unwrap());
    let task_ttl = |id: TaskId| expires_at(&client, &table, id.to_string());
    // Pending (however long it waits, or backs off): neither expires.
    assert_eq!(expires_at(&client, &table, key()).await, None, "pending");
    // Failed: the key expires a week after the task.
    let running = claimed(store.claim(t.id, 1, t0()).await.unwrap());
    let (failed, _) = running
        .record(1, &delivery(RetryHint::Permanent, t0()), t0(), 0.5)
        .unwrap();
    store.update(&failed).await.unwrap();
    let failed_ttl = task_ttl(t.id).await.expect("a failed task expires");
    assert_eq!(
        expires_at(&client, &table, key()).await,
        Some(failed_ttl + KEY_OUTLIVES_TASK.num_seconds())
    );
    // Revived by /retry long after the key's old lifetime: neither expires again.
    let later = t0() + TimeDelta::days(90);
    let revived = failed.retry_failed(later).unwrap();
    store.update(&revived).await.unwrap();
    assert_eq!(task_ttl(t.id).await, None);
    assert_eq!(expires_at(&client, &table, key()).await, None, "revived");
    // Backing off keeps it so.
    let running = claimed(store.claim(t.id, 2, later).await.unwrap());
    let (waiting, _) = running
        .record(
            2,
            &delivery(RetryHint::Retryable { after: None }, later),
            later,
            0.5,
        )
        .unwrap();
    store.update(&waiting).await.unwrap();
    assert_eq!(
        expires_at(&client, &table, key()).await,
        None,
        "backing off"
    );
    // Cancelled (another task): the key follows too.
    let c = task(&o, t0(), Some("ttl-cancel"));
    store.create(&c).await.unwrap();
    store.update(&c.cancel(later).unwrap()).await.unwrap();
    let cancelled_ttl = task_ttl(c.id).await.expect("a cancelled task expires");
    assert_eq!(
        expires_at(
            &client,
            &table,
            idem_pk(&o, c.idempotency_key.as_ref().unwrap())
        )
        .await,
        Some(cancelled_ttl + KEY_OUTLIVES_TASK.num_seconds())
    );
    // Once the task is gone (TTL), the key is new again.
    client
        .delete_item()
        .table_name(&table)
        .key("pk", s(c.id.to_string()))
        .send()
        .await
        .unwrap();
    let fresh = task(&o, t0(), Some("ttl-cancel"));
    assert!(matches!(
        store.create(&fresh).await.unwrap(),
        CreateOutcome::Created
    ));
}
