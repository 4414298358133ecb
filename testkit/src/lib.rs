//! Test support for the AWS path, never part of a product build: the emulator (moto server)
//! endpoint from the environment, SDK configuration for it, unique names and fresh tables.
//!
//! Tests that need moto are `#[ignore = "needs moto: make test-aws"]`; `make test-aws` runs
//! them with `--ignored` under scripts/with-moto.sh, which sets `AWS_ENDPOINT_URL`. Without
//! it they fail here: an ignored test that was asked for is required.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

/// The emulator endpoint (`AWS_ENDPOINT_URL`). Panics without it.
pub fn emulator_endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(e) if !e.is_empty() => e,
        _ => panic!(
            "this test needs moto server and AWS_ENDPOINT_URL is not set: run `make test-aws`"
        ),
    }
}

/// SDK configuration for the emulator: its endpoint, us-east-1, dummy credentials.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(emulator_endpoint())
        .region(Region::new("us-east-1"))
        .test_credentials()
        .load()
        .await
}

/// A unique name, so tests share one emulator without a reset.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A fresh SQS queue named `prefix-<unique>`: its URL.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, prefix: &str) -> String {
    sqs.create_queue()
        .queue_name(unique(prefix))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

/// A fresh FIFO queue named `prefix-<unique>.fifo` (no content-based deduplication: the
/// sender gives each message its deduplication id): its URL.
pub async fn create_fifo_queue(sqs: &aws_sdk_sqs::Client, prefix: &str) -> String {
    sqs.create_queue()
        .queue_name(format!("{}.fifo", unique(prefix)))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("create FIFO queue")
        .queue_url
        .expect("queue url")
}

/// A fresh EventBridge Scheduler schedule group named `prefix-<unique>`: its name.
pub async fn create_schedule_group(scheduler: &aws_sdk_scheduler::Client, prefix: &str) -> String {
    let group = unique(prefix);
    scheduler
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .expect("create schedule group");
    group
}

/// The table's key and index names, as `TABLE_KEYS` in `cdk/lib/task-scheduler-stack.ts`
/// declares them (the store's queries name the same indexes: the store contract on moto
/// fails if they drift).
pub const PARTITION_KEY: &str = "pk";
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// `(index name, partition key)`; every index is sorted by `run_at_id` and projects all.
/// `by_schedule` is sparse: only a schedule's occurrences carry `schedule_of`.
pub const INDEXES: [(&str, &str); 3] = [
    ("by_owner", "owner"),
    ("by_owner_status", "owner_status"),
    ("by_schedule", "schedule_of"),
];
pub const INDEX_SORT_KEY: &str = "run_at_id";
/// The sweeper's sparse index of pending tasks: `(name, partition key, sort key)`,
/// projection KEYS_ONLY; the sort key is a number (epoch milliseconds).
pub const PENDING_INDEX: (&str, &str, &str) = ("pending", "pending_shard", "pending_at");

/// Creates `table` exactly as the CDK app does (the deployed table belongs to the stack).
/// Real DynamoDB would need a wait for ACTIVE after this; moto's tables are active at once.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<()> {
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let mut create = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
        .attribute_definitions(attr(PARTITION_KEY)?)
        .attribute_definitions(attr(INDEX_SORT_KEY)?);
    for (name, pk) in INDEXES {
        create = create
            .attribute_definitions(attr(pk)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(name)
                    .key_schema(key(pk, KeyType::Hash)?)
                    .key_schema(key(INDEX_SORT_KEY, KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()?,
            );
    }
    let (name, pk, sk) = PENDING_INDEX;
    create = create
        .attribute_definitions(attr(pk)?)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(sk)
                .attribute_type(ScalarAttributeType::N)
                .build()?,
        )
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(pk, KeyType::Hash)?)
                .key_schema(key(sk, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()?,
        );
    create.send().await?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TTL_ATTRIBUTE)
                .enabled(true)
                .build()?,
        )
        .send()
        .await?;
    Ok(())
}
