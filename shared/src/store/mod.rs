//! Task stores: SQLite for the local host, DynamoDB for AWS. Both pass the same contract
//! cases ([`contract`]).

#[cfg(test)]
pub(crate) mod contract;
#[cfg(feature = "aws")]
pub mod dynamodb;
pub mod sqlite;

#[cfg(feature = "aws")]
pub use dynamodb::DynamoStore;
pub use sqlite::SqliteStore;
