//! Task stores: SQLite for the local host, DynamoDB for AWS. Both pass the same contract
//! cases ([`contract`]).

#[cfg(test)]
pub(crate) mod contract;
#[cfg(feature = "aws")]
pub(crate) mod dynamodb;
pub(crate) mod sqlite;

#[cfg(feature = "aws")]
pub(crate) use dynamodb::DynamoStore;
pub(crate) use sqlite::SqliteStore;
