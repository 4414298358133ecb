//! The times and durations a person types: `--at 2026-12-01T09:00:00+01:00`, `--in 1h30m`,
//! `--at-local 2027-03-28T09:00 --tz Europe/Paris`, or `--at-local 09:00 --tz Europe/Paris` (the
//! next 09:00 there). Each parser is a clap value parser, so a
//! bad value is a usage error (exit 2) naming the option.

use chrono::{DateTime, FixedOffset, NaiveDateTime, NaiveTime, SecondsFormat, TimeDelta, Utc};

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

/// `--at-local`: a wall-clock date and time, or a time of day (the next one in `--tz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Local {
    At(NaiveDateTime),
    Next(NaiveTime),
}

impl Local {
    /// The `run_at_local` to send: with a date as given; a time of day on today's date in
    /// `tz` if that is still ahead, else tomorrow's. The server resolves it in the zone (a
    /// time in a DST gap moves past it, as the API documents). A zone chrono-tz does not
    /// know is left to the server, which names `timezone` in its 400.
    pub(crate) fn resolve(&self, tz: &str, now: DateTime<Utc>) -> String {
        let at = match *self {
            Local::At(t) => t,
            Local::Next(time) => {
                let here = match tz.parse::<chrono_tz::Tz>() {
                    Ok(zone) => now.with_timezone(&zone).naive_local(),
                    Err(_) => now.naive_utc(),
                };
                let today = here.date().and_time(time);
                if today > here {
                    today
                } else {
                    today + TimeDelta::days(1)
                }
            }
        };
        at.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

/// A wall-clock time without offset: `2027-03-28T09:00` or `...T09:00:00`, or a time of day
/// `09:00` / `09:00:30`.
pub(crate) fn local(s: &str) -> Result<Local, String> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .map(Local::At)
        .or_else(|_| {
            NaiveTime::parse_from_str(s, "%H:%M:%S")
                .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
                .map(Local::Next)
        })
        .map_err(|e| {
            format!("{e}: give a local time without offset, e.g. 2027-03-28T09:00, or a time of day such as 09:00")
        })
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

    fn sent(s: &str, tz: &str, now: &str) -> String {
        let now = DateTime::parse_from_rfc3339(now)
            .unwrap()
            .with_timezone(&Utc);
        local(s).unwrap().resolve(tz, now)
    }

    #[test]
    fn local_times_get_seconds() {
        let now = "2026-11-29T12:00:00Z";
        assert_eq!(
            sent("2027-03-28T09:00", "Europe/Paris", now),
            "2027-03-28T09:00:00"
        );
        assert_eq!(
            sent("2027-03-28T09:00:30", "UTC", now),
            "2027-03-28T09:00:30"
        );
        assert!(local("2027-03-28T09:00:00+01:00").is_err(), "an offset");
        assert!(local("25:00").is_err());
        assert!(local("tomorrow").is_err());
    }

    #[test]
    fn a_time_of_day_is_the_next_one_in_the_zone() {
        // 12:00Z is 13:00 in Paris: 14:00 is still today there, 09:00 is tomorrow.
        let now = "2026-11-29T12:00:00Z";
        assert_eq!(sent("14:00", "Europe/Paris", now), "2026-11-29T14:00:00");
        assert_eq!(sent("09:00", "Europe/Paris", now), "2026-11-30T09:00:00");
        assert_eq!(
            sent("13:00", "Europe/Paris", now),
            "2026-11-30T13:00:00",
            "now is not ahead"
        );
        // 23:30Z is already the 30th in Tokyo (08:30): its 09:00 is that day's.
        assert_eq!(
            sent("09:00:15", "Asia/Tokyo", "2026-11-29T23:30:00Z"),
            "2026-11-30T09:00:15"
        );
        // A zone chrono-tz does not know: the date is UTC's, and the server names `timezone`.
        assert_eq!(sent("14:00", "Mars/Olympus", now), "2026-11-29T14:00:00");
    }
}
