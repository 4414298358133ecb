use chrono::{DateTime, SecondsFormat, Utc};

use super::ValidationError;

/// Parses an RFC 3339 timestamp with an explicit offset, truncated to the millisecond
/// (the precision both stores keep).
pub(crate) fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, ValidationError> {
    let dt = DateTime::parse_from_rfc3339(s).map_err(|_| {
        ValidationError::new(
            field,
            "not an RFC 3339 timestamp with offset (e.g. 2026-05-17T15:00:00Z)",
        )
    })?;
    DateTime::from_timestamp_millis(dt.timestamp_millis())
        .ok_or_else(|| ValidationError::new(field, "out of range"))
}

/// `t` truncated to the millisecond. Every instant a claim compares (due times, leases) is
/// kept at this precision, so a store that compares whole milliseconds (DynamoDB's
/// conditions) decides exactly as `Task::claim` does, even at the due instant itself.
pub(crate) fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// `2026-05-17T15:00:00Z`, with milliseconds only when they are not zero.
pub(crate) fn format_time(t: &DateTime<Utc>) -> String {
    let format = if t.timestamp_subsec_millis() == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Millis
    };
    t.to_rfc3339_opts(format, true)
}

/// Instants as the stores keep them, in task and schedule bodies: RFC 3339 in UTC with
/// milliseconds (`2026-05-17T15:00:00.000Z`), formatted by humantime in one piece where
/// chrono's `Serialize` writes one character at a time (a body holds about ten instants, and
/// a schedule's occurrence writes three bodies: `make bench`, schedules). Read by chrono, so
/// anything RFC 3339 reads back as it was written. An instant that is not a whole number
/// of milliseconds in 1970..=9999 is left to chrono (none is: they are kept to the
/// millisecond, [`to_millis`]).
pub(crate) mod stored {
    use chrono::{DateTime, Datelike, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        if t.timestamp() >= 0
            && t.year() <= 9999
            && t.timestamp_subsec_nanos().is_multiple_of(1_000_000)
        {
            s.collect_str(&humantime::format_rfc3339_millis((*t).into()))
        } else {
            t.serialize(s)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::deserialize(d)
    }

    /// The same for an optional instant.
    pub(crate) mod option {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&Stored(t)),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::deserialize(d)
        }

        struct Stored<'a>(&'a DateTime<Utc>);

        impl Serialize for Stored<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::serialize(self.0, s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_offsets_and_normalises_to_utc() {
        let t = parse_time("run_at", "2026-05-17T17:00:00+02:00").unwrap();
        assert_eq!(format_time(&t), "2026-05-17T15:00:00Z");
        let t = parse_time("run_at", "2026-05-17T15:00:00.123456Z").unwrap();
        assert_eq!(format_time(&t), "2026-05-17T15:00:00.123Z");
        let now = DateTime::parse_from_rfc3339("2026-05-17T15:00:00.000456789Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            format_time(&now),
            "2026-05-17T15:00:00Z",
            "shown to the millisecond"
        );
    }

    #[test]
    fn rejects_times_without_offset_or_garbage() {
        for bad in [
            "2026-05-17T15:00:00",
            "2026-05-17",
            "tomorrow",
            "",
            "2026-13-01T00:00:00Z",
            "2026-05-17 15:00:00Z x",
        ] {
            let e = parse_time("run_at", bad).unwrap_err();
            assert_eq!(e.field, "run_at", "{bad}");
        }
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Body {
        #[serde(with = "stored")]
        at: DateTime<Utc>,
        #[serde(with = "stored::option")]
        maybe: Option<DateTime<Utc>>,
    }

    #[test]
    fn stored_instants_are_utc_with_milliseconds_and_read_back_any_rfc_3339() {
        let at = parse_time("t", "2026-05-17T15:00:00Z").unwrap();
        let body = Body { at, maybe: None };
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(json, r#"{"at":"2026-05-17T15:00:00.000Z","maybe":null}"#);
        let later = Body {
            at,
            maybe: Some(at + chrono::TimeDelta::milliseconds(1)),
        };
        assert_eq!(
            serde_json::to_value(&later).unwrap()["maybe"],
            "2026-05-17T15:00:00.001Z"
        );
        // What chrono wrote before (no fraction, or nanoseconds), and other offsets.
        let old: Body = serde_json::from_str(
            r#"{"at":"2026-05-17T17:00:00+02:00","maybe":"2026-05-17T15:00:00.001000000Z"}"#,
        )
        .unwrap();
        assert_eq!(old, later);
    }

    proptest! {
        #[test]
        fn any_stored_instant_round_trips(ns in i64::MIN..i64::MAX) {
            let t = DateTime::from_timestamp_nanos(ns);
            for t in [t, to_millis(t)] {
                let body = Body { at: t, maybe: Some(t) };
                let back: Body = serde_json::from_str(&serde_json::to_string(&body).unwrap()).unwrap();
                prop_assert_eq!(back, body);
            }
        }

        #[test]
        fn any_millisecond_instant_round_trips(ms in -62_135_596_800_000i64..253_402_300_799_000i64) {
            let t = DateTime::from_timestamp_millis(ms).unwrap();
            prop_assert_eq!(parse_time("run_at", &format_time(&t)).unwrap(), t);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = parse_time("run_at", &s);
        }
    }
}
