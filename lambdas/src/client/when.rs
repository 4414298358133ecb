//! The times and durations a person types: `--at 2026-12-01T09:00:00+01:00`, `--in 1h30m`,
//! `--at-local 2027-03-28T09:00 --tz Europe/Paris`. Each parser is a clap value parser, so a
//! bad value is a usage error (exit 2) naming the option.

use chrono::{DateTime, FixedOffset, NaiveDateTime, SecondsFormat};

/// An RFC 3339 time with an offset, as the API takes it.
pub(crate) fn at(s: &str) -> Result<String, String> {
    DateTime::<FixedOffset>::parse_from_rfc3339(s.trim())
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .map_err(|e| format!("{e}: give an RFC 3339 time with an offset, e.g. 2026-12-01T09:00:00+01:00 or 2026-12-01T08:00:00Z"))
}

/// A duration (`90s`, `10m`, `1h30m`, `2d`, or plain seconds) in whole seconds.
pub(crate) fn seconds(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}: give a duration such as 90s, 10m, 1h30m or 2d"))?;
    if d.subsec_nanos() != 0 {
        return Err("whole seconds only".into());
    }
    Ok(d.as_secs())
}

/// A wall-clock time without offset (`2027-03-28T09:00` or `...T09:00:00`), sent with
/// seconds; the server resolves it in `--tz`.
pub(crate) fn local(s: &str) -> Result<String, String> {
    let s = s.trim();
    let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .map_err(|e| format!("{e}: give a local time without offset, e.g. 2027-03-28T09:00"))?;
    Ok(t.format("%Y-%m-%dT%H:%M:%S").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_people_type() {
        assert_eq!(seconds("90s"), Ok(90));
        assert_eq!(seconds("10m"), Ok(600));
        assert_eq!(seconds("1h30m"), Ok(5400));
        assert_eq!(seconds("1h 30m"), Ok(5400));
        assert_eq!(seconds("2d"), Ok(172_800));
        assert_eq!(seconds("45"), Ok(45));
        assert_eq!(seconds("0s"), Ok(0));
        assert!(seconds("1500ms").is_err(), "not whole seconds");
        assert!(seconds("10 parsecs").is_err());
        assert!(seconds("-5s").is_err());
        assert!(seconds("").is_err());
    }

    #[test]
    fn times_with_an_offset_only() {
        assert_eq!(
            at("2026-12-01T09:00:00+01:00").as_deref(),
            Ok("2026-12-01T09:00:00+01:00")
        );
        assert_eq!(
            at("2026-12-01T08:00:00.250Z").as_deref(),
            Ok("2026-12-01T08:00:00.250Z")
        );
        assert!(at("2026-12-01T09:00:00").is_err(), "no offset");
        assert!(at("tomorrow").is_err());
    }

    #[test]
    fn local_times_get_seconds() {
        assert_eq!(
            local("2027-03-28T09:00").as_deref(),
            Ok("2027-03-28T09:00:00")
        );
        assert_eq!(
            local("2027-03-28T09:00:30").as_deref(),
            Ok("2027-03-28T09:00:30")
        );
        assert!(local("2027-03-28T09:00:00+01:00").is_err(), "an offset");
        assert!(local("09:00").is_err());
    }
}
