use super::*;

fn plan(recurrence: Recurrence, tz: &str, anchor: DateTime<Utc>) -> Plan {
    Plan {
        recurrence,
        timezone: parse_timezone("timezone", tz).unwrap(),
        start_at: None,
        end_at: None,
        anchor,
    }
}

fn cron(s: &str) -> Recurrence {
    Recurrence::Cron(CronExpr::parse("cron", s).unwrap())
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// The next `expected.len()` runs after `from`, written in the zone's offset.
fn runs(p: &Plan, from: &str, n: usize) -> Vec<String> {
    p.next_runs(at(from), n)
        .into_iter()
        .map(|t| {
            t.with_timezone(&p.timezone)
                .format("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        })
        .collect()
}

const HOURLY: &str = "0 * * * *";
const QUARTER: &str = "*/15 * * * *";

/// (zone, expression, from, the runs expected after it). Derived by hand from the rule
/// (a local time in a gap is skipped, a repeated one runs at its first instance only), not
/// from the code.
const DST_TABLE: &[(&str, &str, &str, &[&str])] = &[
    // Europe/Paris, spring forward: 02:00 CET -> 03:00 CEST.
    (
        "Europe/Paris",
        HOURLY,
        "2026-03-29T00:30:00+01:00",
        &[
            "2026-03-29T01:00:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T04:00:00+02:00",
        ],
    ),
    (
        "Europe/Paris",
        "30 2 * * *",
        "2026-03-28T03:00:00+01:00",
        &["2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"],
    ),
    (
        "Europe/Paris",
        QUARTER,
        "2026-03-29T01:30:00+01:00",
        &[
            "2026-03-29T01:45:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:15:00+02:00",
        ],
    ),
    (
        "Europe/Paris",
        HOURLY,
        "2027-03-28T00:30:00+01:00",
        &["2027-03-28T01:00:00+01:00", "2027-03-28T03:00:00+02:00"],
    ),
    (
        "Europe/Paris",
        "30 2 * * *",
        "2027-03-27T03:00:00+01:00",
        &["2027-03-29T02:30:00+02:00"],
    ),
    (
        "Europe/Paris",
        QUARTER,
        "2027-03-28T01:50:00+01:00",
        &["2027-03-28T03:00:00+02:00"],
    ),
    // Europe/Paris, fall back: 03:00 CEST -> 02:00 CET, 02:00-02:59 twice.
    (
        "Europe/Paris",
        HOURLY,
        "2026-10-25T01:30:00+02:00",
        &[
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T03:00:00+01:00",
            "2026-10-25T04:00:00+01:00",
        ],
    ),
    (
        "Europe/Paris",
        "30 2 * * *",
        "2026-10-24T12:00:00+02:00",
        &["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
    ),
    (
        "Europe/Paris",
        QUARTER,
        "2026-10-25T02:40:00+02:00",
        &["2026-10-25T02:45:00+02:00", "2026-10-25T03:00:00+01:00"],
    ),
    // Starting in the second half of the repeated hour: its times already ran.
    (
        "Europe/Paris",
        QUARTER,
        "2026-10-25T02:10:00+01:00",
        &["2026-10-25T03:00:00+01:00"],
    ),
    (
        "Europe/Paris",
        HOURLY,
        "2027-10-31T01:30:00+02:00",
        &["2027-10-31T02:00:00+02:00", "2027-10-31T03:00:00+01:00"],
    ),
    (
        "Europe/Paris",
        "30 2 * * *",
        "2027-10-30T12:00:00+02:00",
        &["2027-10-31T02:30:00+02:00", "2027-11-01T02:30:00+01:00"],
    ),
    (
        "Europe/Paris",
        QUARTER,
        "2027-10-31T02:40:00+02:00",
        &["2027-10-31T02:45:00+02:00", "2027-10-31T03:00:00+01:00"],
    ),
    // America/New_York, spring forward: 02:00 EST -> 03:00 EDT.
    (
        "America/New_York",
        HOURLY,
        "2026-03-08T00:30:00-05:00",
        &[
            "2026-03-08T01:00:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T04:00:00-04:00",
        ],
    ),
    (
        "America/New_York",
        "30 2 * * *",
        "2026-03-07T12:00:00-05:00",
        &["2026-03-09T02:30:00-04:00"],
    ),
    (
        "America/New_York",
        QUARTER,
        "2026-03-08T01:40:00-05:00",
        &["2026-03-08T01:45:00-05:00", "2026-03-08T03:00:00-04:00"],
    ),
    (
        "America/New_York",
        HOURLY,
        "2027-03-14T00:30:00-05:00",
        &["2027-03-14T01:00:00-05:00", "2027-03-14T03:00:00-04:00"],
    ),
    (
        "America/New_York",
        "30 2 * * *",
        "2027-03-13T12:00:00-05:00",
        &["2027-03-15T02:30:00-04:00"],
    ),
    (
        "America/New_York",
        QUARTER,
        "2027-03-14T01:40:00-05:00",
        &["2027-03-14T01:45:00-05:00", "2027-03-14T03:00:00-04:00"],
    ),
    // America/New_York, fall back: 02:00 EDT -> 01:00 EST, 01:00-01:59 twice.
    (
        "America/New_York",
        HOURLY,
        "2026-11-01T00:30:00-04:00",
        &[
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T03:00:00-05:00",
        ],
    ),
    (
        "America/New_York",
        "30 1 * * *",
        "2026-10-31T12:00:00-04:00",
        &["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
    ),
    (
        "America/New_York",
        QUARTER,
        "2026-11-01T01:50:00-04:00",
        &["2026-11-01T02:00:00-05:00"],
    ),
    (
        "America/New_York",
        HOURLY,
        "2027-11-07T00:30:00-04:00",
        &["2027-11-07T01:00:00-04:00", "2027-11-07T02:00:00-05:00"],
    ),
    (
        "America/New_York",
        "30 1 * * *",
        "2027-11-06T12:00:00-04:00",
        &["2027-11-07T01:30:00-04:00", "2027-11-08T01:30:00-05:00"],
    ),
    (
        "America/New_York",
        QUARTER,
        "2027-11-07T01:50:00-04:00",
        &["2027-11-07T02:00:00-05:00"],
    ),
    // Australia/Lord_Howe, DST ends (a 30-minute shift): 02:00 +11 -> 01:30 +10:30,
    // 01:30-01:59 twice.
    (
        "Australia/Lord_Howe",
        HOURLY,
        "2026-04-05T00:30:00+11:00",
        &[
            "2026-04-05T01:00:00+11:00",
            "2026-04-05T02:00:00+10:30",
            "2026-04-05T03:00:00+10:30",
        ],
    ),
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2026-04-04T12:00:00+11:00",
        &["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"],
    ),
    (
        "Australia/Lord_Howe",
        QUARTER,
        "2026-04-05T01:20:00+11:00",
        &[
            "2026-04-05T01:30:00+11:00",
            "2026-04-05T01:45:00+11:00",
            "2026-04-05T02:00:00+10:30",
        ],
    ),
    (
        "Australia/Lord_Howe",
        HOURLY,
        "2027-04-04T00:30:00+11:00",
        &["2027-04-04T01:00:00+11:00", "2027-04-04T02:00:00+10:30"],
    ),
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2027-04-03T12:00:00+11:00",
        &["2027-04-04T01:45:00+11:00", "2027-04-05T01:45:00+10:30"],
    ),
    (
        "Australia/Lord_Howe",
        QUARTER,
        "2027-04-04T01:20:00+11:00",
        &[
            "2027-04-04T01:30:00+11:00",
            "2027-04-04T01:45:00+11:00",
            "2027-04-04T02:00:00+10:30",
        ],
    ),
    // Australia/Lord_Howe, DST starts: 02:00 +10:30 -> 02:30 +11, 02:00-02:29 missing.
    (
        "Australia/Lord_Howe",
        HOURLY,
        "2026-10-04T01:30:00+10:30",
        &["2026-10-04T03:00:00+11:00", "2026-10-04T04:00:00+11:00"],
    ),
    (
        "Australia/Lord_Howe",
        "15 2 * * *",
        "2026-10-03T12:00:00+10:30",
        &["2026-10-05T02:15:00+11:00"],
    ),
    (
        "Australia/Lord_Howe",
        QUARTER,
        "2026-10-04T01:50:00+10:30",
        &["2026-10-04T02:30:00+11:00", "2026-10-04T02:45:00+11:00"],
    ),
    (
        "Australia/Lord_Howe",
        HOURLY,
        "2027-10-03T01:30:00+10:30",
        &["2027-10-03T03:00:00+11:00"],
    ),
    (
        "Australia/Lord_Howe",
        "15 2 * * *",
        "2027-10-02T12:00:00+10:30",
        &["2027-10-04T02:15:00+11:00"],
    ),
    (
        "Australia/Lord_Howe",
        QUARTER,
        "2027-10-03T01:50:00+10:30",
        &["2027-10-03T02:30:00+11:00", "2027-10-03T02:45:00+11:00"],
    ),
];

#[test]
fn dst_transitions_follow_eventbridge_scheduler() {
    let mut wrong = Vec::new();
    for (tz, expr, from, expected) in DST_TABLE {
        let p = plan(cron(expr), tz, at(from));
        let got = runs(&p, from, expected.len());
        if got != *expected {
            wrong.push(format!(
                "{tz} {expr:?} after {from}: got {got:?}, expected {expected:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_ignores_dst() {
    // 15 minutes of absolute time across each transition, whatever the wall clock does.
    for (tz, from) in [
        ("Europe/Paris", "2026-03-29T01:30:00+01:00"),
        ("Europe/Paris", "2026-10-25T02:30:00+02:00"),
        ("America/New_York", "2027-03-14T01:30:00-05:00"),
        ("America/New_York", "2027-11-07T01:30:00-04:00"),
        ("Australia/Lord_Howe", "2026-04-05T01:30:00+11:00"),
        ("Australia/Lord_Howe", "2027-10-03T01:30:00+10:30"),
    ] {
        let p = plan(
            Recurrence::Every(Every::parse("every", "15m").unwrap()),
            tz,
            at(from),
        );
        let got = p.next_runs(at(from), 8);
        for (k, t) in got.iter().enumerate() {
            assert_eq!(
                *t,
                at(from) + TimeDelta::minutes(15 * (k as i64 + 1)),
                "{tz}"
            );
        }
    }
    // Written in the zone's offset, the Paris fall-back run shows the repeated hour.
    let p = plan(
        Recurrence::Every(Every::parse("every", "30m").unwrap()),
        "Europe/Paris",
        at("2026-10-25T02:00:00+02:00"),
    );
    assert_eq!(
        runs(&p, "2026-10-25T02:00:00+02:00", 3),
        [
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:30:00+01:00"
        ]
    );
}

#[test]
fn six_fields_put_seconds_first_and_l_hash_w_work() {
    let utc = |e: &str, from: &str, n| runs(&plan(cron(e), "UTC", at(from)), from, n);
    assert_eq!(
        utc("*/20 * * * * *", "2026-05-17T10:00:05Z", 3),
        [
            "2026-05-17T10:00:20+00:00",
            "2026-05-17T10:00:40+00:00",
            "2026-05-17T10:01:00+00:00"
        ]
    );
    // The last day of the month.
    assert_eq!(
        utc("0 12 L * *", "2026-02-01T00:00:00Z", 2),
        ["2026-02-28T12:00:00+00:00", "2026-03-31T12:00:00+00:00"]
    );
    // The second Tuesday (June 9 and July 14, 2026).
    assert_eq!(
        utc("0 9 * * 2#2", "2026-06-01T00:00:00Z", 2),
        ["2026-06-09T09:00:00+00:00", "2026-07-14T09:00:00+00:00"]
    );
    // The weekday closest to the 15th: Aug 15, 2026 is a Saturday, so Friday the 14th.
    assert_eq!(
        utc("0 9 15W * *", "2026-08-01T00:00:00Z", 1),
        ["2026-08-14T09:00:00+00:00"]
    );
    // Weekdays at 09:00 Europe/Paris: Saturday and Sunday are skipped.
    let p = plan(
        cron("0 9 * * MON-FRI"),
        "Europe/Paris",
        at("2026-05-15T10:00:00Z"),
    );
    assert_eq!(
        runs(&p, "2026-05-15T10:00:00Z", 2),
        ["2026-05-18T09:00:00+02:00", "2026-05-19T09:00:00+02:00"]
    );
}

#[test]
fn start_and_end_bound_the_plan() {
    let mut p = plan(cron("0 * * * *"), "UTC", at("2026-01-01T00:00:00Z"));
    p.start_at = Some(at("2026-05-17T12:00:00Z"));
    p.end_at = Some(at("2026-05-17T14:00:00Z"));
    // start_at itself is an occurrence when it matches; end_at too (both inclusive).
    assert_eq!(
        p.next_runs(at("2026-05-01T00:00:00Z"), 10),
        [
            at("2026-05-17T12:00:00Z"),
            at("2026-05-17T13:00:00Z"),
            at("2026-05-17T14:00:00Z")
        ]
    );
    // `every` counts from start_at.
    let mut p = plan(
        Recurrence::Every(Every::parse("every", "90s").unwrap()),
        "UTC",
        at("2026-05-17T12:00:00Z"),
    );
    p.start_at = Some(at("2026-05-17T12:00:00Z"));
    assert_eq!(
        p.next_runs(at("2026-05-17T11:00:00Z"), 2),
        [at("2026-05-17T12:00:00Z"), at("2026-05-17T12:01:30Z")]
    );
    assert_eq!(
        p.next_after(at("2026-05-17T12:00:00.001Z")),
        Some(at("2026-05-17T12:01:30Z"))
    );
    assert_eq!(
        p.catch_up(at("2026-05-17T12:00:00Z"), at("2026-05-17T12:06:00Z"), 100),
        (4, Some(at("2026-05-17T12:07:30Z")))
    );
    // At the cap, the next occurrence is still the first after `now`.
    assert_eq!(
        p.catch_up(at("2026-05-17T12:00:00Z"), at("2026-05-17T12:06:00Z"), 2),
        (2, Some(at("2026-05-17T12:07:30Z")))
    );
    // On time: nothing missed, the next one.
    assert_eq!(
        p.catch_up(
            at("2026-05-17T12:00:00Z"),
            at("2026-05-17T12:00:00.004Z"),
            100
        ),
        (0, Some(at("2026-05-17T12:01:30Z")))
    );
}

#[test]
fn bad_expressions_name_the_field_and_the_problem() {
    let msg = |s: &str| CronExpr::parse("cron", s).unwrap_err().to_string();
    assert_eq!(
        msg("0 9 * * 8"),
        "cron: day-of-week \"8\" is out of range 0-7"
    );
    assert_eq!(msg("0 24 * * *"), "cron: hour \"24\" is out of range 0-23");
    assert_eq!(
        msg("61 0 9 * * *"),
        "cron: second \"61\" is out of range 0-59"
    );
    assert_eq!(
        msg("0 9 32 * *"),
        "cron: day-of-month \"32\" is out of range 1-31"
    );
    assert!(
        msg("0 9 * *").starts_with("cron: has 4 fields; expected 5"),
        "{}",
        msg("0 9 * *")
    );
    assert!(msg("0 9 * * * * *").starts_with("cron: has 7 fields"));
    assert!(
        msg("x 9 * * *").starts_with("cron: minute \"x\" is not valid"),
        "{}",
        msg("x 9 * * *")
    );
    assert!(msg("").starts_with("cron: must be a cron expression"));
    for bad in [
        "0s",
        "1",
        "s",
        "1.5m",
        "-1m",
        "1w",
        "367d",
        "99999999999999999999d",
        " 1m",
    ] {
        let e = Every::parse("every", bad).unwrap_err();
        assert_eq!(e.field, "every", "{bad}");
        assert!(e.message.contains("is not a period"), "{bad}");
    }
    for (ok, secs) in [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("1d", 86_400),
        ("366d", 366 * 86_400),
    ] {
        assert_eq!(
            Every::parse("every", ok).unwrap().period().num_seconds(),
            secs
        );
    }
    assert_eq!(Every::parse("every", "120s").unwrap().to_string(), "2m");
    assert_eq!(
        parse_timezone("timezone", "Mars/Olympus")
            .unwrap_err()
            .to_string(),
        "timezone: \"Mars/Olympus\" is not an IANA time zone name (e.g. Europe/Paris, UTC)"
    );
}

#[test]
fn an_expression_that_never_matches_again_has_no_next_run() {
    // February 30th.
    let p = plan(cron("0 0 30 2 *"), "UTC", at("2026-01-01T00:00:00Z"));
    assert_eq!(p.next_after(at("2026-01-01T00:00:00Z")), None);
}

/// The oracle (`make test-cron-oracle`): cases written by `scripts/cron_oracle.py` from
/// Python's croniter and zoneinfo, with the same DST rule applied; every next run must match.
#[test]
#[ignore = "needs the croniter oracle: make test-cron-oracle"]
fn croniter_oracle_agrees() {
    #[derive(serde::Deserialize)]
    struct Case {
        cron: String,
        timezone: String,
        from: String,
        next: Vec<String>,
    }
    // Written by `make test-cron-oracle` (scripts/cron_oracle.py) before it runs this test.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/cron-oracle.json");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (make test-cron-oracle writes it)"));
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 10_000, "only {} cases", cases.len());
    let mut disagreements = Vec::new();
    for c in &cases {
        let p = plan(cron(&c.cron), &c.timezone, at(&c.from));
        let got: Vec<DateTime<Utc>> = p.next_runs(at(&c.from), c.next.len());
        let expected: Vec<DateTime<Utc>> = c.next.iter().map(|s| at(s)).collect();
        if got != expected {
            let first = got.iter().zip(&expected).position(|(g, e)| g != e);
            disagreements.push(format!(
                "{:?} in {} after {}: first difference at run {:?}: got {:?}, croniter {:?}",
                c.cron,
                c.timezone,
                c.from,
                first,
                first.and_then(|i| got.get(i)),
                first.and_then(|i| expected.get(i)),
            ));
        }
    }
    let runs: usize = cases.iter().map(|c| c.next.len()).sum();
    println!(
        "cron oracle: {} cases, {runs} runs compared, {} disagreements",
        cases.len(),
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree with croniter:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
