//! What people read: tables of tasks and a task's detail. Every value shown comes from the
//! API and may be anyone's text (URLs, headers, receivers' error bodies): control
//! characters are escaped, so nothing printed can move the cursor or recolour the terminal.

use comfy_table::{Table, presets};
use serde_json::Value;

/// `s` with control characters escaped (`\u{1b}`), at most `max` characters (`…` after).
pub(crate) fn clean(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => clean(s, 200),
        other => clean(&other.to_string(), 200),
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_header(header.iter().copied());
    t
}

/// The table's text: columns two spaces apart, no margin, no trailing blanks.
fn render(t: &Table) -> String {
    t.lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(&l).trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last error of a task: its dead letter's, else its last failed attempt's.
fn last_error(task: &Value) -> Value {
    if let Some(e) = task.pointer("/dead_letter/last_error") {
        return e.clone();
    }
    task["attempts"]
        .as_array()
        .and_then(|a| a.last())
        .map(|a| a["error"].clone())
        .unwrap_or(Value::Null)
}

fn attempts(task: &Value) -> String {
    let n = task["attempts"].as_array().map_or(0, Vec::len);
    match task.pointer("/retry/max_attempts").and_then(Value::as_u64) {
        Some(max) => format!("{n}/{max}"),
        None => n.to_string(),
    }
}

/// One row per task: id, status, run_at, next attempt, method and URL, attempts, last error.
pub(crate) fn tasks(list: &[Value]) -> String {
    let mut t = table(&[
        "ID",
        "STATUS",
        "RUN AT",
        "NEXT",
        "METHOD",
        "URL",
        "ATTEMPTS",
        "LAST ERROR",
    ]);
    for task in list {
        t.add_row(vec![
            text(&task["task_id"]),
            text(&task["status"]),
            text(&task["run_at"]),
            text(&task["next_attempt_at"]),
            text(&task.pointer("/payload/method").cloned().unwrap_or_default()),
            clean(
                task.pointer("/payload/url")
                    .and_then(Value::as_str)
                    .unwrap_or("-"),
                60,
            ),
            attempts(task),
            match last_error(task) {
                Value::String(s) => clean(&s, 60),
                _ => "-".into(),
            },
        ]);
    }
    render(&t)
}

/// A task in full: its fields, its payload's headers and data, and every attempt.
pub(crate) fn task(task: &Value) -> String {
    let mut out = table(&["FIELD", "VALUE"]);
    let fields: [(&str, &str); 15] = [
        ("id", "/task_id"),
        ("status", "/status"),
        ("run_at", "/run_at"),
        ("run_at_local", "/run_at_local"),
        ("timezone", "/timezone"),
        ("next_attempt_at", "/next_attempt_at"),
        ("created_at", "/created_at"),
        ("updated_at", "/updated_at"),
        ("method", "/payload/method"),
        ("url", "/payload/url"),
        ("data", "/payload/data"),
        ("retry", "/retry"),
        ("timeout_seconds", "/timeout_seconds"),
        ("idempotency_key", "/idempotency_key"),
        ("dead_letter", "/dead_letter"),
    ];
    for (name, pointer) in fields {
        if let Some(v) = task.pointer(pointer) {
            out.add_row(vec![name.to_owned(), text(v)]);
        }
    }
    if let Some(headers) = task.pointer("/payload/headers").and_then(Value::as_object) {
        for (k, v) in headers {
            out.add_row(vec![format!("header {}", clean(k, 100)), text(v)]);
        }
    }
    let mut s = render(&out);
    let list = task["attempts"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        s.push_str("\n\nno attempts yet");
    } else {
        let mut a = table(&["#", "STARTED", "OUTCOME", "STATUS", "DURATION MS", "ERROR"]);
        for at in &list {
            a.add_row(vec![
                text(&at["number"]),
                text(&at["started_at"]),
                text(&at["outcome"]),
                text(&at["status_code"]),
                text(&at["duration_ms"]),
                text(&at["error"]),
            ]);
        }
        s.push_str("\n\n");
        s.push_str(&render(&a));
    }
    s
}

/// The plan of a schedule: `cron EXPR` or `every PERIOD`.
fn plan(s: &Value) -> String {
    match (s["cron"].as_str(), s["every"].as_str()) {
        (Some(c), _) => format!("cron {}", clean(c, 60)),
        (_, Some(e)) => format!("every {}", clean(e, 20)),
        _ => "-".into(),
    }
}

/// One row per schedule: id, plan, zone, paused, next run (UTC), method and URL.
pub(crate) fn schedules(list: &[Value]) -> String {
    let mut t = table(&[
        "ID", "PLAN", "TIMEZONE", "PAUSED", "NEXT RUN", "METHOD", "URL",
    ]);
    for s in list {
        t.add_row(vec![
            text(&s["schedule_id"]),
            plan(s),
            text(&s["timezone"]),
            text(&s["paused"]),
            text(&s.pointer("/next_runs/0/utc").cloned().unwrap_or_default()),
            text(
                &s.pointer("/task/payload/method")
                    .cloned()
                    .unwrap_or_default(),
            ),
            clean(
                s.pointer("/task/payload/url")
                    .and_then(Value::as_str)
                    .unwrap_or("-"),
                60,
            ),
        ]);
    }
    render(&t)
}

/// A schedule in full: its fields and template, its next runs in its zone and in UTC, and
/// its last occurrence.
pub(crate) fn schedule(s: &Value) -> String {
    let mut out = table(&["FIELD", "VALUE"]);
    out.add_row(vec!["id".to_owned(), text(&s["schedule_id"])]);
    out.add_row(vec!["plan".to_owned(), plan(s)]);
    let fields: [(&str, &str); 12] = [
        ("timezone", "/timezone"),
        ("start_at", "/start_at"),
        ("end_at", "/end_at"),
        ("paused", "/paused"),
        ("pending_task_id", "/pending_task_id"),
        ("created_at", "/created_at"),
        ("updated_at", "/updated_at"),
        ("method", "/task/payload/method"),
        ("url", "/task/payload/url"),
        ("data", "/task/payload/data"),
        ("retry", "/task/retry"),
        ("timeout_seconds", "/task/timeout_seconds"),
    ];
    for (name, pointer) in fields {
        if let Some(v) = s.pointer(pointer) {
            out.add_row(vec![name.to_owned(), text(v)]);
        }
    }
    if let Some(headers) = s
        .pointer("/task/payload/headers")
        .and_then(Value::as_object)
    {
        for (k, v) in headers {
            out.add_row(vec![format!("header {}", clean(k, 100)), text(v)]);
        }
    }
    let mut text_out = render(&out);
    let runs = s["next_runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        text_out.push_str("\n\nno next runs");
    } else {
        let mut r = table(&["NEXT RUN (LOCAL)", "NEXT RUN (UTC)"]);
        for run in &runs {
            r.add_row(vec![text(&run["local"]), text(&run["utc"])]);
        }
        text_out.push_str("\n\n");
        text_out.push_str(&render(&r));
    }
    match s.get("last_occurrence") {
        Some(o) if o.is_object() => {
            let mut l = table(&["LAST OCCURRENCE", "STATUS", "PLANNED AT"]);
            l.add_row(vec![
                text(&o["task_id"]),
                text(&o["status"]),
                text(&o["planned_at"]),
            ]);
            text_out.push_str("\n\n");
            text_out.push_str(&render(&l));
        }
        _ => text_out.push_str("\n\nno occurrence yet"),
    }
    text_out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn control_characters_are_escaped_and_long_values_cut() {
        assert_eq!(clean("a\u{1b}[31mb\n", 100), "a\\u{1b}[31mb\\n");
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(clean("été", 10), "été");
    }

    #[test]
    fn a_row_per_task_with_its_last_error() {
        let t = json!({
            "task_id": "01JF3Q8R5V2Z6X4W9YH7K1M0NB", "status": "failed",
            "run_at": "2026-05-17T15:00:00Z", "next_attempt_at": null,
            "payload": {"url": "http://127.0.0.1:8080/hook", "method": "PUT"},
            "retry": {"max_attempts": 3},
            "attempts": [{"error": "HTTP 503 Service Unavailable: \u{1b}[2J"}],
            "dead_letter": {"last_error": "HTTP 503 Service Unavailable: \u{1b}[2J"}
        });
        let s = tasks(&[t]);
        assert!(s.contains("01JF3Q8R5V2Z6X4W9YH7K1M0NB"), "{s}");
        assert!(
            s.contains("failed") && s.contains("PUT") && s.contains("1/3"),
            "{s}"
        );
        assert!(
            s.contains("HTTP 503 Service Unavailable: \\u{1b}[2J"),
            "{s}"
        );
        assert!(!s.contains('\u{1b}'), "{s}");
    }
}
