use std::{fmt, str::FromStr};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::ValidationError;

/// A task id: a ULID, so ids sort by creation time and carry no guessable sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct TaskId(Ulid);

impl TaskId {
    pub(crate) fn generate() -> Self {
        Self(Ulid::new())
    }

    /// The id's low 4 bits (random in a ULID, so uniform): a stable shard number, 0 to 15.
    #[cfg_attr(
        not(feature = "aws"),
        allow(dead_code, reason = "the DynamoDB store's")
    )]
    pub(crate) fn shard16(self) -> u8 {
        (u128::from(self.0) & 0xF) as u8
    }

    pub(crate) fn parse(s: &str) -> Result<Self, ValidationError> {
        // Ulid::from_string accepts lower case too; we keep the canonical upper-case form.
        if s.len() != 26 {
            return Err(ValidationError::new(
                "task_id",
                "not a task id (26-character ULID)",
            ));
        }
        // The round trip refuses spellings that overflow 128 bits (a first digit above 7),
        // which the decoder would otherwise wrap into another id.
        Ulid::from_string(s)
            .ok()
            .filter(|u| u.to_string().eq_ignore_ascii_case(s))
            .map(Self)
            .ok_or_else(|| ValidationError::new("task_id", "not a task id (26-character ULID)"))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TaskId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> Self {
        id.to_string()
    }
}

/// The principal a task belongs to: a token's name locally, an IAM principal ARN on AWS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct Owner(String);

impl Owner {
    pub(crate) fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() || s.len() > 2048 || s.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "owner",
                "must be 1 to 2048 printable characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Owner {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Owner> for String {
    fn from(o: Owner) -> Self {
        o.0
    }
}

/// The `Idempotency-Key` header: 1 to 64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct IdempotencyKey(String);

impl IdempotencyKey {
    pub(crate) const MAX_LEN: usize = 64;

    pub(crate) fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return Err(ValidationError::new(
                "Idempotency-Key",
                "must be 1 to 64 printable ASCII characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> Self {
        k.0
    }
}

/// Position in a listing ordered by `(run_at, task_id)`. Opaque to clients: base64url of
/// `"{run_at_ms}.{task_id}"`, so both stores can resume from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) run_at: DateTime<Utc>,
    pub(crate) task_id: TaskId,
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}.{}",
            self.run_at.timestamp_millis(),
            self.task_id
        ))
    }

    pub(crate) fn decode(s: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new("cursor", "not a cursor returned by this API");
        if s.len() > 128 {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (ms, id) = raw.split_once('.').ok_or_else(bad)?;
        let ms: i64 = ms.parse().map_err(|_| bad())?;
        Ok(Self {
            run_at: DateTime::from_timestamp_millis(ms).ok_or_else(bad)?,
            task_id: TaskId::parse(id).map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_round_trips_and_rejects_garbage() {
        let id = TaskId::generate();
        assert_eq!(TaskId::parse(&id.to_string()).unwrap(), id);
        for bad in [
            "",
            "nope",
            "01JF3Q8R5V2Z6X4W9YH7K1M0N",
            "01JF3Q8R5V2Z6X4W9YH7K1M0NBX",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
        ] {
            assert!(TaskId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursor_round_trips_and_rejects_tampering() {
        let c = Cursor {
            run_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            task_id: TaskId::generate(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("not-base64!").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("12.zz")).is_err());
    }

    #[test]
    fn idempotency_key_bounds() {
        assert!(IdempotencyKey::parse("order-42").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(64)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(65)).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
        assert!(IdempotencyKey::parse("é").is_err());
    }
}
