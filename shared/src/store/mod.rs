//! Task stores: SQLite for the local host (and the DynamoDB adapter for AWS).

pub mod sqlite;

pub use sqlite::SqliteStore;
