//! `run_at_local` + `timezone`: a wall-clock time in an IANA time zone, resolved to one UTC
//! instant with chrono-tz (the IANA database). No zone arithmetic is written here: every
//! offset comes from chrono-tz.
//!
//! - A local time that exists once is that instant.
//! - A local time that occurs twice (the clocks go back) is its earlier instance.
//! - A local time that does not exist (the clocks go forward over it) is the first instant
//!   after the gap: the transition itself (Europe/Paris 2027-03-28 02:30 is 03:00 CEST).

use chrono::{DateTime, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::ValidationError;

/// The local time and zone a client gave, kept beside the task's UTC `run_at` so a `GET`
/// shows what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalRunAt {
    /// `YYYY-MM-DDTHH:MM:SS`, with `.mmm` when the milliseconds are not zero.
    pub(crate) run_at_local: String,
    /// The IANA name, as given (names are matched exactly, case included).
    pub(crate) timezone: String,
}

impl LocalRunAt {
    /// Parses `run_at_local` (`YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS` or with a fraction,
    /// kept to the millisecond; no offset) and `timezone` (an IANA name), and resolves them
    /// to a UTC instant in whole milliseconds.
    pub(crate) fn parse(
        run_at_local: &str,
        timezone: &str,
    ) -> Result<(Self, DateTime<Utc>), ValidationError> {
        let naive = parse_naive(run_at_local)?;
        let tz: Tz = timezone.parse().map_err(|_| {
            ValidationError::new(
                "timezone",
                "not an IANA time zone name (e.g. Europe/Paris, America/New_York, UTC)",
            )
        })?;
        let at = resolve(tz, naive)
            .ok_or_else(|| ValidationError::new("run_at_local", "out of range"))?;
        let at = DateTime::from_timestamp_millis(at.timestamp_millis())
            .ok_or_else(|| ValidationError::new("run_at_local", "out of range"))?;
        Ok((
            Self {
                run_at_local: format_naive(naive),
                timezone: tz.name().to_owned(),
            },
            at,
        ))
    }
}

fn parse_naive(s: &str) -> Result<NaiveDateTime, ValidationError> {
    let bad = || {
        ValidationError::new(
            "run_at_local",
            "not a local date and time without offset (e.g. 2027-03-28T09:00:00)",
        )
    };
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .map_err(|_| bad())?;
    // A leap second (`:60`) names no instant of a time zone.
    if naive.nanosecond() >= 1_000_000_000 {
        return Err(bad());
    }
    // Whole milliseconds, like every other time of the API.
    naive
        .with_nanosecond(naive.nanosecond() / 1_000_000 * 1_000_000)
        .ok_or_else(bad)
}

fn format_naive(t: NaiveDateTime) -> String {
    if t.nanosecond() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    }
}

/// The instant `naive` names in `tz`: the earlier one when it is ambiguous, the first one
/// after the gap when it does not exist; `None` out of range.
pub(crate) fn resolve(tz: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    if let Some(t) = tz.from_local_datetime(&naive).earliest() {
        return Some(t.with_timezone(&Utc));
    }
    first_after_gap(tz, naive)
}

/// `naive` falls in a gap: the first local time after it that exists, as an instant. Gaps
/// begin and end on whole seconds, so the search runs over whole seconds, by bisection
/// between a time in the gap and one two days later (no zone has two transitions that close,
/// and the longest gap, Samoa's skipped day in 2011, is shorter).
fn first_after_gap(tz: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    let exists = |t: NaiveDateTime| tz.from_local_datetime(&t).earliest();
    let lo_time = naive.with_nanosecond(0)?;
    let (mut lo, mut hi) = (0_i64, 2 * 86_400_i64);
    let at = |s: i64| lo_time.checked_add_signed(TimeDelta::seconds(s));
    exists(at(hi)?)?;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if exists(at(mid)?).is_some() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    exists(at(hi)?).map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::format_time;

    fn utc(local: &str, zone: &str) -> String {
        let (l, at) = LocalRunAt::parse(local, zone).unwrap();
        assert_eq!(l.timezone, zone);
        format_time(&at)
    }

    #[test]
    fn an_ordinary_local_time_is_its_one_instant() {
        assert_eq!(
            utc("2027-03-28T09:00:00", "Europe/Paris"),
            "2027-03-28T07:00:00Z"
        );
        assert_eq!(
            utc("2027-01-15T09:00:00", "Europe/Paris"),
            "2027-01-15T08:00:00Z"
        );
        assert_eq!(
            utc("2027-07-01T12:00:00", "America/New_York"),
            "2027-07-01T16:00:00Z"
        );
        assert_eq!(utc("2027-07-01T12:00:00", "UTC"), "2027-07-01T12:00:00Z");
    }

    #[test]
    fn spring_forward_is_the_first_instant_after_the_gap() {
        // Paris: 02:00 CET → 03:00 CEST on 2027-03-28; 02:30 does not exist.
        assert_eq!(
            utc("2027-03-28T02:30:00", "Europe/Paris"),
            "2027-03-28T01:00:00Z"
        );
        // The gap's first second and its last millisecond: the same instant.
        assert_eq!(
            utc("2027-03-28T02:00:00", "Europe/Paris"),
            "2027-03-28T01:00:00Z"
        );
        assert_eq!(
            utc("2027-03-28T02:59:59.999", "Europe/Paris"),
            "2027-03-28T01:00:00Z"
        );
        // Just outside the gap: ordinary times.
        assert_eq!(
            utc("2027-03-28T01:59:59", "Europe/Paris"),
            "2027-03-28T00:59:59Z"
        );
        assert_eq!(
            utc("2027-03-28T03:00:00", "Europe/Paris"),
            "2027-03-28T01:00:00Z"
        );
        // New York: 02:00 EST → 03:00 EDT on 2027-03-14.
        assert_eq!(
            utc("2027-03-14T02:30:00", "America/New_York"),
            "2027-03-14T07:00:00Z"
        );
    }

    #[test]
    fn fall_back_is_the_earlier_instance() {
        // Paris: 03:00 CEST → 02:00 CET on 2027-10-31; 02:30 happens twice, first in CEST.
        assert_eq!(
            utc("2027-10-31T02:30:00", "Europe/Paris"),
            "2027-10-31T00:30:00Z"
        );
        // New York: 02:00 EDT → 01:00 EST on 2027-11-07; 01:30 EDT is 05:30Z.
        assert_eq!(
            utc("2027-11-07T01:30:00", "America/New_York"),
            "2027-11-07T05:30:00Z"
        );
    }

    #[test]
    fn lord_howe_shifts_by_half_an_hour() {
        // Australia/Lord_Howe: +10:30 standard, +11:00 summer; changes at 02:00 local.
        // Spring forward 2027-10-03: 02:00 → 02:30, so 02:15 does not exist.
        assert_eq!(
            utc("2027-10-03T02:15:00", "Australia/Lord_Howe"),
            "2027-10-02T15:30:00Z"
        );
        assert_eq!(
            utc("2027-10-03T02:30:00", "Australia/Lord_Howe"),
            "2027-10-02T15:30:00Z"
        );
        // Fall back 2027-04-04: 02:00 → 01:30, so 01:45 happens twice; the first is +11:00.
        assert_eq!(
            utc("2027-04-04T01:45:00", "Australia/Lord_Howe"),
            "2027-04-03T14:45:00Z"
        );
    }

    #[test]
    fn seconds_are_optional_and_milliseconds_kept() {
        let (l, at) = LocalRunAt::parse("2027-03-28T09:00", "Europe/Paris").unwrap();
        assert_eq!(l.run_at_local, "2027-03-28T09:00:00");
        assert_eq!(format_time(&at), "2027-03-28T07:00:00Z");
        let (l, at) = LocalRunAt::parse("2027-03-28T09:00:00.123456", "Europe/Paris").unwrap();
        assert_eq!(l.run_at_local, "2027-03-28T09:00:00.123");
        assert_eq!(format_time(&at), "2027-03-28T07:00:00.123Z");
    }

    #[test]
    fn bad_input_names_its_field() {
        for bad in [
            "2027-03-28T09:00:00Z",
            "2027-03-28T09:00:00+01:00",
            "2027-03-28",
            "2027-03-28 09:00:00",
            "2027-02-30T09:00:00",
            "2027-03-28T23:59:60",
            "tomorrow at nine",
            "",
        ] {
            let e = LocalRunAt::parse(bad, "Europe/Paris").unwrap_err();
            assert_eq!(e.field, "run_at_local", "{bad}");
        }
        for bad in ["Europe/Atlantis", "europe/paris", "+01:00", "CEST", ""] {
            let e = LocalRunAt::parse("2027-03-28T09:00:00", bad).unwrap_err();
            assert_eq!(e.field, "timezone", "{bad}");
        }
    }
}
