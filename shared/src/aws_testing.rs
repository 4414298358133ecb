//! Test support for the AWS adapters: the emulator (moto server) endpoint from the
//! environment, SDK configuration for it, fresh tables.
//!
//! Tests that need moto read `AWS_ENDPOINT_URL`. Without it they print a skip notice and
//! pass, unless `REQUIRE_EMULATORS=1` (what `make test-aws` sets), where they fail.

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::domain::TaskId;
use crate::store::{DynamoStore, contract::Store};

/// The emulator endpoint, or `None` (after a notice) when tests should skip.
pub fn emulator_endpoint(test: &str) -> Option<String> {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(e) if !e.is_empty() => Some(e),
        _ if std::env::var("REQUIRE_EMULATORS").is_ok_and(|v| v == "1") => {
            panic!(
                "{test}: REQUIRE_EMULATORS=1 but AWS_ENDPOINT_URL is not set (run `make test-aws`)"
            )
        }
        _ => {
            eprintln!(
                "SKIPPED {test}: needs moto server; set AWS_ENDPOINT_URL or run `make test-aws`"
            );
            None
        }
    }
}

/// SDK configuration for the emulator: its endpoint, us-east-1, dummy credentials.
pub async fn sdk_config(test: &str) -> Option<SdkConfig> {
    let endpoint = emulator_endpoint(test)?;
    Some(
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .test_credentials()
            .load()
            .await,
    )
}

/// A unique name, so tests share one emulator without a reset.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", TaskId::generate().to_string().to_lowercase())
}

/// A DynamoDB store on a fresh table shaped like the CDK app's.
pub async fn dynamo_store() -> Option<Store> {
    let config = sdk_config("dynamodb store").await?;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = unique("tasks");
    DynamoStore::create_table(&client, &table)
        .await
        .expect("create table");
    Some(Arc::new(DynamoStore::new(client, table, 30)))
}
