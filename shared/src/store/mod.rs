//! Task stores: SQLite for the local host, DynamoDB for AWS. Both pass the same contract
//! cases ([`contract`]).

// Becomes plain `#[cfg(test)]` with the harness work; until then `test-support` compiles
// it into builds that never run it.
#[cfg(any(test, feature = "test-support"))]
#[allow(unreachable_pub, dead_code)]
pub(crate) mod contract;
#[cfg(feature = "aws")]
pub(crate) mod dynamodb;
pub(crate) mod sqlite;

#[cfg(feature = "aws")]
pub use dynamodb::DynamoStore;
pub(crate) use sqlite::SqliteStore;
