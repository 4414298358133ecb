//! When a schedule's occurrences fall: a cron expression (croner) or a fixed period, in an
//! IANA time zone (chrono-tz), between an optional start and end.
//!
//! DST follows EventBridge Scheduler: the cron expression is matched against local wall-clock
//! times, a local time that does not exist (spring forward) is skipped, and a local time that
//! happens twice (fall back) runs once, at its first instance. croner alone would run a
//! wildcard-hour expression in both halves of a repeated hour, so it is used on civil
//! (naive) times only and chrono-tz resolves each match to an instant here. `every` is
//! absolute time and ignores DST.

use std::{cell::RefCell, collections::HashMap, fmt, str::FromStr, sync::Arc};

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

use super::{ValidationError, to_millis};

/// The most wall-clock matches one [`Plan::next_after`] looks at before it gives up (each
/// skipped match is a time in a DST gap, or before the caller's instant in a repeated hour).
const MAX_SKIPS: usize = 10_000;

/// A cron expression: 5 fields (minute first) or 6 (seconds first), with `L`, `#` and `W`,
/// month and weekday names and the `@hourly`-style nicknames croner supports. Day of month
/// and day of week combine with OR when both are restricted (Vixie cron).
#[derive(Clone)]
pub(crate) struct CronExpr {
    text: String,
    cron: Arc<Cron>,
}

/// Parsed expressions by text, per thread: every claim of a schedule's occurrence decodes the
/// schedule, and parsing its expression again cost more than the rest of the decoding
/// (`make bench`, schedules). Cleared when it holds [`PARSED_CAP`] expressions.
const PARSED_CAP: usize = 1024;

thread_local! {
    static PARSED: RefCell<HashMap<String, Arc<Cron>>> = RefCell::new(HashMap::new());
}

/// Each field's name and range, seconds first.
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12"),
    ("day-of-week", "0-7"),
];

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

impl CronExpr {
    pub(crate) const MAX_LEN: usize = 256;

    pub(crate) fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let text = s.trim();
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                field,
                "must be a cron expression of 5 fields, or 6 with seconds first",
            ));
        }
        if let Some(cron) = PARSED.with_borrow(|parsed| parsed.get(text).cloned()) {
            return Ok(Self {
                text: text.to_owned(),
                cron,
            });
        }
        match parser().parse(text) {
            Ok(cron) => {
                let cron = Arc::new(cron);
                PARSED.with_borrow_mut(|parsed| {
                    if parsed.len() >= PARSED_CAP {
                        parsed.clear();
                    }
                    parsed.insert(text.to_owned(), Arc::clone(&cron));
                });
                Ok(Self {
                    text: text.to_owned(),
                    cron,
                })
            }
            Err(e) => Err(ValidationError::new(field, Self::explain(text, &e))),
        }
    }

    /// Names the field croner refused: each field is tried alone in an otherwise all-`*`
    /// expression (croner's own message names a position, not a field).
    fn explain(text: &str, e: &croner::errors::CronError) -> String {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if !text.starts_with('@') && !(5..=6).contains(&parts.len()) {
            return format!(
                "has {} fields; expected 5 (minute hour day-of-month month day-of-week) \
                 or 6 (second first)",
                parts.len()
            );
        }
        let fields = &FIELDS[6 - parts.len().min(6)..];
        for (i, part) in parts.iter().enumerate() {
            let mut probe = vec!["*"; parts.len()];
            probe[i] = part;
            if let Err(err) = parser().parse(&probe.join(" ")) {
                let (name, range) = fields[i];
                let why = err.to_string();
                let detail = if why.contains("out of bounds") || why.contains("range (") {
                    format!("is out of range {range}")
                } else {
                    format!(
                        "is not valid ({})",
                        why.trim_start_matches("Component error: ")
                            .trim_end_matches('.')
                    )
                };
                return format!("{name} \"{part}\" {detail}");
            }
        }
        format!(
            "not a valid cron expression ({})",
            e.to_string().trim_end_matches('.')
        )
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The first wall-clock time matching the expression strictly after `t`.
    fn next_civil(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        self.cron.find_next_occurrence(&t, false).ok()
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.text)
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// A fixed period, `90s`, `15m`, `1h`, `1d`: at least a second, at most 366 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Every {
    seconds: i64,
}

impl Every {
    const MAX_SECONDS: i64 = 366 * 86_400;

    pub(crate) fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let bad = || {
            ValidationError::new(
                field,
                format!(
                    "\"{s}\" is not a period: a whole number and one unit (s, m, h, d), \
                     such as 90s, 15m, 1h or 1d, from 1s to 366d"
                ),
            )
        };
        let unit = s.chars().last().ok_or_else(bad)?;
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let digits = &s[..s.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        let seconds = n.checked_mul(scale).ok_or_else(bad)?;
        if !(1..=Self::MAX_SECONDS).contains(&seconds) {
            return Err(bad());
        }
        Ok(Self { seconds })
    }

    pub(crate) fn period(self) -> TimeDelta {
        TimeDelta::seconds(self.seconds)
    }
}

impl fmt::Display for Every {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds;
        match () {
            () if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            () if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            () if s % 60 == 0 => write!(f, "{}m", s / 60),
            () => write!(f, "{s}s"),
        }
    }
}

/// How a schedule recurs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Recurrence {
    Cron(CronExpr),
    Every(Every),
}

/// Parses an IANA time zone name (`Europe/Paris`, `UTC`).
pub(crate) fn parse_timezone(field: &str, s: &str) -> Result<Tz, ValidationError> {
    Tz::from_str(s).map_err(|_| {
        ValidationError::new(
            field,
            format!("\"{s}\" is not an IANA time zone name (e.g. Europe/Paris, UTC)"),
        )
    })
}

/// A recurrence in a time zone, between `start_at` and `end_at` (both inclusive), with the
/// anchor `every` counts from (`start_at`, or the schedule's creation).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub(crate) recurrence: Recurrence,
    pub(crate) timezone: Tz,
    pub(crate) start_at: Option<DateTime<Utc>>,
    pub(crate) end_at: Option<DateTime<Utc>>,
    pub(crate) anchor: DateTime<Utc>,
}

impl Plan {
    /// The first occurrence strictly after `t`, or `None` when the plan has ended (or the
    /// expression never matches again).
    pub(crate) fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Occurrences start at `start_at`: look from just before it.
        let from = match self.start_at {
            Some(start) if start - TimeDelta::milliseconds(1) > t => {
                start - TimeDelta::milliseconds(1)
            }
            _ => t,
        };
        let next = match &self.recurrence {
            Recurrence::Every(every) => self.next_every(*every, from),
            Recurrence::Cron(cron) => self.next_cron(cron, from),
        }?;
        let next = to_millis(next);
        match self.end_at {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    fn next_every(&self, every: Every, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let period = every.period().num_milliseconds();
        let anchor = to_millis(self.anchor);
        if t < anchor {
            return Some(anchor);
        }
        let since = (t - anchor).num_milliseconds();
        let k = since / period + 1;
        anchor.checked_add_signed(TimeDelta::milliseconds(k.checked_mul(period)?))
    }

    /// Walks the expression's wall-clock matches from `t`'s local time: a match in a DST gap
    /// does not exist and is skipped; a repeated one means its first instance, which is
    /// skipped too when it lies at or before `t` (the walk started in the second half).
    fn next_cron(&self, cron: &CronExpr, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut cursor = t.with_timezone(&self.timezone).naive_local();
        for _ in 0..MAX_SKIPS {
            cursor = cron.next_civil(cursor)?;
            let instant = match self.timezone.from_local_datetime(&cursor) {
                LocalResult::Single(x) => x,
                LocalResult::Ambiguous(first, _) => first,
                LocalResult::None => continue,
            }
            .with_timezone(&Utc);
            if instant > t {
                return Some(instant);
            }
        }
        None
    }

    /// The next `n` occurrences after `t`.
    pub(crate) fn next_runs(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// One walk from `after` for a chain that moves on at `now`: how many occurrences fell
    /// in `(after, now]` (counting at most `cap`), and the first occurrence after
    /// `max(after, now)` (`None` when the plan has ended).
    pub(crate) fn catch_up(
        &self,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
        cap: u32,
    ) -> (u32, Option<DateTime<Utc>>) {
        let mut missed = 0;
        let mut at = after;
        loop {
            match self.next_after(at) {
                Some(next) if next <= now => {
                    if missed == cap {
                        return (missed, self.next_after(now));
                    }
                    missed += 1;
                    at = next;
                }
                next => return (missed, next),
            }
        }
    }
}

#[cfg(test)]
#[path = "recurrence_tests.rs"]
mod tests;
