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

    proptest! {
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
