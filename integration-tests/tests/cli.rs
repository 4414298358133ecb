//! Black-box tests of the command-line client (`task-scheduler tasks ...`) and the console
//! proxy (`task-scheduler console`): the real binary against a real `task-scheduler serve`,
//! a real webhook receiver, and (feature `aws`) a stub of API Gateway that verifies SigV4.
//!
//! Build the binary first: `cargo build -p task-scheduler` (`make test` does).

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use integration_tests::{
    App, Receiver, Reply, binary_path,
    launcher::{self, Inherit},
    parse_time,
};
use serde_json::{Value, json};

/// A task id that is a valid ULID but was never created.
const UNKNOWN_ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789abc";
/// Every variable of the AWS credential chain a developer's shell may carry.
const AWS_ENV: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

/// What one run of the client did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "exit code; {self:#?}");
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// The binary as a child with none of the caller's product or AWS variables (no instance
/// metadata either), plus `env`.
fn command(env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = launcher::command(
        &binary_path(),
        Inherit::AllButProduct,
        "build it with `cargo build -p task-scheduler` (or set TASK_SCHEDULER_BIN)",
    )
    .expect("the binary");
    for k in AWS_ENV {
        cmd.env_remove(k);
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws/credentials",
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `task-scheduler ARGS` with `env`, to its exit.
async fn cli(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = command(env);
    cmd.args(args);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the client exits within 60 s")
        .expect("the client runs");
    Run {
        code: out.status.code().expect("an exit code, not a signal"),
        stdout: String::from_utf8(out.stdout).expect("UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8"),
    }
}

/// `task-scheduler tasks --endpoint URL ARGS` as Alice.
async fn tasks(app: &App, args: &[&str]) -> Run {
    let endpoint = app.base_url();
    let mut all = vec!["tasks", "--endpoint", endpoint.as_str()];
    all.extend_from_slice(args);
    cli(&all, &[("TASK_SCHEDULER_TOKEN", ALICE)]).await
}

async fn server() -> App {
    App::builder()
        .env("SCHEDULER_API_TOKENS", format!("alice:{ALICE},bob:{BOB}"))
        .token(ALICE)
        .spawn()
        .await
        .expect("server starts")
}

fn id_of(task: &Value) -> String {
    task["task_id"].as_str().expect("task_id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_list_cancel_for_people_and_scripts() {
    let recv = Receiver::start().await;
    let app = server().await;
    let url = recv.url("/invoices");

    // Create, for scripts: the API's task, with every option carried.
    let run = tasks(
        &app,
        &[
            "create",
            "--url",
            &url,
            "-X",
            "put",
            "-H",
            "X-Tenant: acme",
            "-H",
            "X-Trace: a:b",
            "--data",
            r#"{"invoice":42}"#,
            "--in",
            "1h30m",
            "--max-attempts",
            "5",
            "--backoff",
            "20s",
            "--max-backoff",
            "2h",
            "--timeout",
            "15s",
            "--idempotency-key",
            "invoice-42",
            "--json",
        ],
    )
    .await
    .ok();
    let task = run.json();
    let id = id_of(&task);
    assert_eq!(task["status"], "scheduled");
    assert_eq!(task["payload"]["url"], url);
    assert_eq!(task["payload"]["method"], "PUT");
    assert_eq!(
        task["payload"]["headers"],
        json!({"X-Tenant": "acme", "X-Trace": "a:b"})
    );
    assert_eq!(task["payload"]["data"], json!({"invoice": 42}));
    assert_eq!(
        task["retry"],
        json!({"max_attempts": 5, "initial_backoff_seconds": 20, "max_backoff_seconds": 7200})
    );
    assert_eq!(task["timeout_seconds"], 15);
    assert_eq!(task["idempotency_key"], "invoice-42");
    let due = parse_time(task["run_at"].as_str().unwrap())
        - parse_time(task["created_at"].as_str().unwrap());
    assert!(
        (TimeDelta::seconds(5399)..=TimeDelta::seconds(5401)).contains(&due),
        "--in 1h30m: due {due} after creation"
    );
    // It is what the API holds, as Alice.
    assert_eq!(app.api().get(&id).await.expect(200), task);

    // The same create again: the same task (200), said on stderr for people.
    let again = tasks(
        &app,
        &[
            "create",
            "--url",
            &url,
            "-X",
            "put",
            "-H",
            "X-Tenant: acme",
            "-H",
            "X-Trace: a:b",
            "--data",
            r#"{"invoice":42}"#,
            "--in",
            "1h30m",
            "--max-attempts",
            "5",
            "--backoff",
            "20s",
            "--max-backoff",
            "2h",
            "--timeout",
            "15s",
            "--idempotency-key",
            "invoice-42",
        ],
    )
    .await
    .ok();
    assert!(again.stdout.contains(&id), "{again:#?}");
    assert!(again.stderr.contains("idempotency key"), "{again:#?}");

    // --at with an offset, and a body from a file; for people, a table row.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, r#"{"from":"file"}"#).unwrap();
    let at = (Utc::now() + TimeDelta::days(2))
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let data = format!("@{}", file.display());
    let run = tasks(
        &app,
        &["create", "--url", &url, "--at", &at, "--data", &data],
    )
    .await
    .ok();
    let header = run.stdout.lines().next().unwrap_or_default();
    for col in [
        "ID",
        "STATUS",
        "RUN AT",
        "NEXT",
        "METHOD",
        "URL",
        "ATTEMPTS",
        "LAST ERROR",
    ] {
        assert!(header.contains(col), "column {col}: {run:#?}");
    }
    let row = run.stdout.lines().nth(1).expect("a row");
    let second = row.split_whitespace().next().unwrap().to_owned();
    assert_eq!(second.len(), 26, "{run:#?}");
    assert!(
        row.contains("scheduled")
            && row.contains("POST")
            && row.contains(&url)
            && row.contains("0/3"),
        "{row}"
    );
    let stored = app.api().get(&second).await.expect(200);
    assert_eq!(
        parse_time(stored["run_at"].as_str().unwrap()),
        parse_time(&at)
    );
    assert_eq!(stored["payload"]["data"], json!({"from": "file"}));
    assert!(row.contains(stored["run_at"].as_str().unwrap()), "{row}");

    // get: the fields and the headers, for people; the API's JSON for scripts.
    let run = tasks(&app, &["get", &id]).await.ok();
    for needle in [
        &id,
        "scheduled",
        "PUT",
        &url,
        "header X-Tenant",
        "acme",
        "invoice-42",
        "no attempts yet",
    ] {
        assert!(run.stdout.contains(needle), "{needle}: {run:#?}");
    }
    let run = tasks(&app, &["get", &id, "--json"]).await.ok();
    assert_eq!(run.json(), task);

    // list: both, by run_at; a page with a cursor; --all follows it.
    let run = tasks(&app, &["list"]).await.ok();
    let rows: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{run:#?}");
    assert!(
        rows[0].starts_with(&id) && rows[1].starts_with(&second),
        "{run:#?}"
    );
    let run = tasks(&app, &["list", "--limit", "1", "--json"]).await.ok();
    let page = run.json();
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let run = tasks(&app, &["list", "--limit", "1"]).await.ok();
    assert!(
        run.stderr.contains(&format!("more: --cursor {cursor}")),
        "{run:#?}"
    );
    let run = tasks(
        &app,
        &["list", "--limit", "1", "--cursor", &cursor, "--json"],
    )
    .await
    .ok();
    assert_eq!(id_of(&run.json()["tasks"][0]), second);
    let run = tasks(&app, &["list", "--limit", "1", "--all", "--json"])
        .await
        .ok();
    let all: Vec<String> = run.json()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(all, [id.clone(), second.clone()]);

    // cancel: a row for people, then the task as JSON; again is the API's 409, exit 1.
    let run = tasks(&app, &["cancel", &second]).await.ok();
    assert!(
        run.stdout.contains(&second) && run.stdout.contains("cancelled"),
        "{run:#?}"
    );
    let run = tasks(&app, &["cancel", &id, "--json"]).await.ok();
    assert_eq!(run.json()["status"], "cancelled");
    let run = tasks(&app, &["cancel", &id]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr
            .starts_with("error: 409 conflict: task is cancelled"),
        "{run:#?}"
    );
    assert!(run.stdout.is_empty(), "{run:#?}");
    let run = tasks(&app, &["list", "--status", "cancelled", "--json"])
        .await
        .ok();
    assert_eq!(run.json()["tasks"].as_array().unwrap().len(), 2);

    // Bob sees none of it.
    let endpoint = app.base_url();
    let run = cli(
        &["tasks", "--endpoint", &endpoint, "list", "--json"],
        &[("TASK_SCHEDULER_TOKEN", BOB)],
    )
    .await
    .ok();
    assert_eq!(run.json(), json!({"tasks": [], "next_cursor": null}));
    // A body from stdin.
    let mut cmd = command(&[("TASK_SCHEDULER_TOKEN", ALICE)]);
    cmd.args([
        "tasks",
        "--endpoint",
        &endpoint,
        "create",
        "--url",
        &url,
        "--in",
        "1d",
        "--data",
        "@-",
        "--json",
    ])
    .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(br#"{"from":"stdin"}"#).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let piped: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(piped["payload"]["data"], json!({"from": "stdin"}));

    assert_eq!(recv.arrivals().len(), 0, "nothing was due");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_shows_its_error_and_is_retried() {
    let recv = Receiver::start().await;
    recv.script(
        "/flaky",
        [Reply::status(400).body("no such invoice <script>\u{1b}[2J")],
        Reply::ok(),
    );
    let app = server().await;
    let url = recv.url("/flaky");
    let task = tasks(
        &app,
        &[
            "create",
            "--url",
            &url,
            "--in",
            "0s",
            "--max-attempts",
            "1",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    let id = id_of(&task);
    app.api()
        .wait_status(&id, "failed", Duration::from_secs(10))
        .await;

    // The table shows the receiver's error, without its escape sequence (the server keeps
    // no control characters of it; the client would escape one).
    let run = tasks(&app, &["list", "--status", "failed"]).await.ok();
    assert!(
        run.stdout.contains("failed") && run.stdout.contains("1/1"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("HTTP 400 Bad Request: no such invoice <script>"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains('\u{1b}'), "{run:#?}");
    let run = tasks(&app, &["get", &id]).await.ok();
    for needle in ["dead_letter", "OUTCOME", "failed", "400", "no such invoice"] {
        assert!(run.stdout.contains(needle), "{needle}: {run:#?}");
    }
    assert!(!run.stdout.contains('\u{1b}'), "{run:#?}");

    let run = tasks(&app, &["retry", &id, "--json"]).await.ok();
    assert_eq!(run.json()["status"], "scheduled");
    let done = app
        .api()
        .wait_status(&id, "completed", Duration::from_secs(10))
        .await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(recv.arrivals_at("/flaky").len(), 2);

    // Retrying a completed task is the API's 409.
    let run = tasks(&app, &["retry", &id]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("409 conflict"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_exit_codes() {
    let app = server().await;

    // 404: exit 1, the API's code and message.
    let run = tasks(&app, &["get", UNKNOWN_ID]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.starts_with("error: 404 not_found: "), "{run:#?}");
    assert!(run.stdout.is_empty());

    // 400 naming the field; nothing is stored.
    let run = tasks(
        &app,
        &["create", "--url", "ftp://example.com/x", "--in", "1m"],
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.starts_with("error: 400 invalid_request: "),
        "{run:#?}"
    );
    assert!(run.stderr.contains("(field: payload.url)"), "{run:#?}");
    let run = tasks(
        &app,
        &[
            "create",
            "--url",
            "http://127.0.0.1:9/x",
            "--in",
            "1m",
            "--max-attempts",
            "99",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains("(field: retry.max_attempts)"),
        "{run:#?}"
    );
    let run = tasks(&app, &["list", "--limit", "500"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("(field: limit)"), "{run:#?}");
    let run = tasks(&app, &["get", "not-an-id"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("(field: task_id)"), "{run:#?}");
    assert_eq!(app.api().list_all(None).await.len(), 0, "nothing stored");

    // 401 without a token.
    let endpoint = app.base_url();
    let run = cli(&["tasks", "--endpoint", &endpoint, "list"], &[]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.starts_with("error: 401 unauthorized: "),
        "{run:#?}"
    );

    // Usage errors: clap's exit 2, and no request made.
    for args in [
        &["tasks", "create", "--in", "1m"][..], // no --url
        &[
            "tasks",
            "create",
            "--url",
            "http://x/",
            "--in",
            "10 parsecs",
        ], // a bad duration
        &[
            "tasks",
            "create",
            "--url",
            "http://x/",
            "--in",
            "1m",
            "--at",
            "2026-12-01T09:00:00Z",
        ], // two times
        &["tasks", "create", "--url", "http://x/"], // no time
        &[
            "tasks",
            "create",
            "--url",
            "http://x/",
            "--at",
            "2026-12-01T09:00:00",
        ], // no offset
        &[
            "tasks",
            "create",
            "--url",
            "http://x/",
            "--at-local",
            "2027-03-28T09:00",
        ], // no --tz
        &[
            "tasks",
            "create",
            "--url",
            "http://x/",
            "--in",
            "1m",
            "-H",
            "NoColon",
        ],
        &[
            "tasks",
            "create",
            "--url",
            "http://x/",
            "--in",
            "1m",
            "--data",
            "not json",
        ],
        &[
            "tasks",
            "create",
            "--url",
            "http://x/",
            "--in",
            "1m",
            "--data",
            "@/nonexistent.json",
        ],
        &["tasks", "list", "--all", "--cursor", "abc"],
        &["tasks", "get"],
        &["tasks", "frobnicate"],
        &["tasks", "--endpoint", "127.0.0.1:3000", "list"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--endpoint", endpoint.as_str()]);
        if args.contains(&"127.0.0.1:3000") {
            all.truncate(args.len());
        }
        let run = cli(&all, &[("TASK_SCHEDULER_TOKEN", ALICE)]).await;
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains("error:") || run.stderr.contains("Usage"),
            "{args:?}: {run:#?}"
        );
    }
    assert_eq!(app.api().list_all(None).await.len(), 0, "nothing stored");

    // No server: exit 1 and says so.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let run = cli(
        &["tasks", "--endpoint", &format!("http://{closed}"), "list"],
        &[],
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr
            .starts_with(&format!("error: cannot connect to http://{closed}")),
        "{run:#?}"
    );

    // The endpoint from the environment.
    let run = cli(
        &["tasks", "list", "--json"],
        &[
            ("TASK_SCHEDULER_ENDPOINT", &endpoint),
            ("TASK_SCHEDULER_TOKEN", ALICE),
        ],
    )
    .await
    .ok();
    assert_eq!(run.json(), json!({"tasks": [], "next_cursor": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_and_reschedule() {
    let recv = Receiver::start().await;
    let app = server().await;
    let url = recv.url("/later");
    let id = id_of(
        &tasks(&app, &["create", "--url", &url, "--in", "1d", "--json"])
            .await
            .ok()
            .json(),
    );

    // Reschedule: --in, --at, --at-local with --tz; each answers the task, 200.
    let before = parse_time(
        app.api().get(&id).await.expect(200)["run_at"]
            .as_str()
            .unwrap(),
    );
    let task = tasks(&app, &["reschedule", &id, "--in", "2d", "--json"])
        .await
        .ok()
        .json();
    let after = parse_time(task["run_at"].as_str().unwrap());
    assert!(after - before > TimeDelta::hours(23), "{before} -> {after}");
    let task = tasks(
        &app,
        &[
            "reschedule",
            &id,
            "--at",
            "2030-01-01T10:00:00+01:00",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(
        parse_time(task["run_at"].as_str().unwrap()),
        parse_time("2030-01-01T09:00:00Z")
    );
    let run = tasks(
        &app,
        &[
            "reschedule",
            &id,
            "--at-local",
            "2030-07-01T09:00",
            "--tz",
            "Europe/Paris",
        ],
    )
    .await
    .ok();
    assert!(
        run.stdout.contains("2030-07-01T07:00:00Z"),
        "CEST is UTC+2: {run:#?}"
    );
    let run = tasks(&app, &["get", &id]).await.ok();
    for needle in [
        "run_at_local",
        "2030-07-01T09:00:00",
        "timezone",
        "Europe/Paris",
    ] {
        assert!(run.stdout.contains(needle), "{needle}: {run:#?}");
    }
    let run = tasks(
        &app,
        &[
            "reschedule",
            &id,
            "--at-local",
            "2030-07-01T09:00",
            "--tz",
            "Mars/Olympus",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("(field: timezone)"), "{run:#?}");

    // Run now: delivered at once.
    let run = tasks(&app, &["run", &id]).await.ok();
    assert!(run.stdout.contains(&id), "{run:#?}");
    recv.wait_until(Duration::from_secs(10), |a| a.len() == 1)
        .await
        .expect("delivered now");
    app.api()
        .wait_status(&id, "completed", Duration::from_secs(10))
        .await;

    // Neither applies to a task that is not scheduled: 409, exit 1.
    for args in [
        &["run", id.as_str()][..],
        &["reschedule", &id, "--in", "1h"],
    ] {
        let run = tasks(&app, args).await;
        assert_eq!(run.code, 1, "{args:?}: {run:#?}");
        assert!(run.stderr.contains("409 conflict"), "{args:?}: {run:#?}");
    }
    let run = tasks(&app, &["run", UNKNOWN_ID]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("404 not_found"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_at_a_local_time() {
    let app = server().await;
    let task = tasks(
        &app,
        &[
            "create",
            "--url",
            "http://127.0.0.1:9/x",
            "--at-local",
            "2027-03-28T09:00",
            "--tz",
            "Europe/Paris",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    // 28 March 2027 is the day Paris moves to summer time (UTC+2 from 01:00 UTC).
    assert_eq!(
        parse_time(task["run_at"].as_str().unwrap()),
        parse_time("2027-03-28T07:00:00Z")
    );
    // A bare time of day is the next one in the zone: 09:00 in Tokyo (UTC+9, no DST), within
    // the coming day, sent as that date's local time.
    let before = chrono::Utc::now();
    let task = tasks(
        &app,
        &[
            "create",
            "--url",
            "http://127.0.0.1:9/x",
            "--at-local",
            "09:00",
            "--tz",
            "Asia/Tokyo",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    let after = chrono::Utc::now();
    assert_eq!(task["timezone"], "Asia/Tokyo");
    assert!(
        task["run_at_local"]
            .as_str()
            .unwrap()
            .ends_with("T09:00:00"),
        "{task}"
    );
    let run_at = parse_time(task["run_at"].as_str().unwrap());
    assert_eq!(
        run_at.format("%H:%M:%S").to_string(),
        "00:00:00",
        "09:00 +09:00"
    );
    assert!(
        run_at > before && run_at <= after + chrono::TimeDelta::days(1),
        "the next 09:00 in Tokyo after {before}: {run_at}"
    );
}

/// A running `task-scheduler console`, killed when dropped.
struct Console {
    base: String,
    _started: launcher::Started,
}

/// `task-scheduler schedules --endpoint URL ARGS` as Alice.
async fn schedules(app: &App, args: &[&str]) -> Run {
    let endpoint = app.base_url();
    let mut all = vec!["schedules", "--endpoint", endpoint.as_str()];
    all.extend_from_slice(args);
    cli(&all, &[("TASK_SCHEDULER_TOKEN", ALICE)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_create_get_list_pause_resume_trigger_update_delete() {
    let recv = Receiver::start().await;
    let app = server().await;
    let url = recv.url("/tick");

    // create: the plan, zone, bounds and the task template of `tasks create`, for scripts.
    let start = (Utc::now() + TimeDelta::days(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let end = (Utc::now() + TimeDelta::days(30))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let run = schedules(
        &app,
        &[
            "create",
            "--cron",
            "0 9 * * MON-FRI",
            "--tz",
            "Europe/Paris",
            "--start-at",
            &start,
            "--end-at",
            &end,
            "--url",
            &url,
            "-X",
            "put",
            "-H",
            "X-Tenant: acme",
            "--data",
            r#"{"n":1}"#,
            "--max-attempts",
            "4",
            "--timeout",
            "5s",
            "--idempotency-key",
            "daily",
            "--json",
        ],
    )
    .await
    .ok();
    let s = run.json();
    let id = s["schedule_id"].as_str().expect("schedule_id").to_owned();
    assert_eq!(s["cron"], "0 9 * * MON-FRI");
    assert_eq!(s["timezone"], "Europe/Paris");
    assert_eq!(
        parse_time(s["start_at"].as_str().unwrap()),
        parse_time(&start)
    );
    assert_eq!(parse_time(s["end_at"].as_str().unwrap()), parse_time(&end));
    assert_eq!(s["paused"], false);
    assert_eq!(s["task"]["payload"]["url"], url);
    assert_eq!(s["task"]["payload"]["method"], "PUT");
    assert_eq!(s["task"]["payload"]["headers"], json!({"X-Tenant": "acme"}));
    assert_eq!(s["task"]["payload"]["data"], json!({"n": 1}));
    assert_eq!(s["task"]["retry"]["max_attempts"], 4);
    assert_eq!(s["task"]["timeout_seconds"], 5);
    assert_eq!(s["next_runs"].as_array().unwrap().len(), 5);

    // get, for people: the fields, the next runs in the zone and in UTC, no occurrence yet.
    let run = schedules(&app, &["get", &id]).await.ok();
    let first = &s["next_runs"][0];
    for needle in [
        id.as_str(),
        "cron 0 9 * * MON-FRI",
        "Europe/Paris",
        "PUT",
        url.as_str(),
        "header X-Tenant",
        "NEXT RUN (LOCAL)",
        "NEXT RUN (UTC)",
        first["local"].as_str().unwrap(),
        first["utc"].as_str().unwrap(),
        "no occurrence yet",
    ] {
        assert!(run.stdout.contains(needle), "{needle}: {run:#?}");
    }
    assert!(
        first["local"].as_str().unwrap().ends_with(":00+01:00")
            || first["local"].as_str().unwrap().ends_with(":00+02:00")
    );
    let run = schedules(&app, &["get", &id, "--json"]).await.ok();
    assert_eq!(run.json()["schedule_id"], id.as_str());

    // A second one, paused, every 1s; list shows both, with the plan, zone, paused, next run.
    let run = schedules(
        &app,
        &[
            "create", "--every", "1s", "--paused", "--url", &url, "--json",
        ],
    )
    .await
    .ok();
    let fast = run.json();
    let fast_id = fast["schedule_id"].as_str().unwrap().to_owned();
    assert_eq!(fast["paused"], true);
    assert_eq!(fast["next_runs"], json!([]));
    let run = schedules(&app, &["list"]).await.ok();
    let header = run.stdout.lines().next().unwrap_or_default();
    for col in [
        "ID", "PLAN", "TIMEZONE", "PAUSED", "NEXT RUN", "METHOD", "URL",
    ] {
        assert!(header.contains(col), "column {col}: {run:#?}");
    }
    let rows: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{run:#?}");
    assert!(
        rows[0].starts_with(&id) && rows[0].contains("cron 0 9 * * MON-FRI"),
        "{run:#?}"
    );
    assert!(
        rows[0].contains("false") && rows[0].contains(first["utc"].as_str().unwrap()),
        "{run:#?}"
    );
    assert!(
        rows[1].starts_with(&fast_id) && rows[1].contains("every 1s"),
        "{run:#?}"
    );
    assert!(
        rows[1].contains("UTC") && rows[1].contains("true"),
        "{run:#?}"
    );
    let run = schedules(&app, &["list", "--limit", "1"]).await.ok();
    assert_eq!(run.stdout.lines().count(), 2, "{run:#?}");
    assert!(run.stderr.contains("more: --cursor "), "{run:#?}");
    let run = schedules(&app, &["list", "--limit", "1", "--all", "--json"])
        .await
        .ok();
    let ids: Vec<&str> = run.json()["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["schedule_id"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(ids, [id.as_str(), fast_id.as_str()]);

    // Paused: nothing arrives. trigger: one task due now, delivered, listed by --schedule.
    let run = schedules(&app, &["trigger", &fast_id, "--json"]).await.ok();
    let triggered = run.json();
    assert_eq!(triggered["occurrence"]["schedule_id"], fast_id.as_str());
    assert_eq!(triggered["occurrence"]["triggered"], true);
    recv.wait_for("/tick", 1, Duration::from_secs(20)).await;
    let run = tasks(&app, &["list", "--schedule", &fast_id, "--json"])
        .await
        .ok();
    let occ = run.json()["tasks"].as_array().unwrap().clone();
    assert_eq!(occ.len(), 1, "{run:#?}");
    assert_eq!(id_of(&occ[0]), id_of(&triggered));
    let run = tasks(&app, &["list", "--schedule", &id, "--json"])
        .await
        .ok();
    let pending = run.json()["tasks"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{run:#?}");
    assert_eq!(pending[0]["task_id"], s["pending_task_id"]);

    // resume: a pending occurrence and next runs; pause: none, in the table too.
    let run = schedules(&app, &["resume", &fast_id, "--json"]).await.ok();
    assert_eq!(run.json()["paused"], false);
    assert!(run.json()["pending_task_id"].is_string(), "{run:#?}");
    recv.wait_for("/tick", 2, Duration::from_secs(20)).await;
    let run = schedules(&app, &["pause", &fast_id]).await.ok();
    let row = run.stdout.lines().nth(1).expect("a row");
    assert!(
        row.starts_with(&fast_id) && row.contains("true"),
        "{run:#?}"
    );
    let run = schedules(&app, &["get", &fast_id]).await.ok();
    assert!(run.stdout.contains("no next runs"), "{run:#?}");
    assert!(run.stdout.contains("LAST OCCURRENCE"), "{run:#?}");

    // update: a new plan and zone; --no-end removes the end.
    let run = schedules(
        &app,
        &[
            "update",
            &id,
            "--every",
            "1h",
            "--tz",
            "America/New_York",
            "--no-end",
            "--json",
        ],
    )
    .await
    .ok();
    let u = run.json();
    assert_eq!(u["every"], "1h");
    assert!(u.get("cron").is_none_or(Value::is_null), "{u}");
    assert_eq!(u["timezone"], "America/New_York");
    assert!(u["end_at"].is_null(), "{u}");

    // delete: the schedule as it was; again is the API's 404, exit 1.
    let run = schedules(&app, &["delete", &id]).await.ok();
    assert!(run.stdout.contains(&id), "{run:#?}");
    let run = schedules(&app, &["delete", &id]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.starts_with("error: 404 not_found: "), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_errors_and_exit_codes() {
    let app = server().await;
    let endpoint = app.base_url();

    // 400 naming cron, and a bad zone and period: exit 1, nothing stored.
    let run = schedules(
        &app,
        &[
            "create",
            "--cron",
            "0 9 * * 8",
            "--url",
            "http://127.0.0.1:9/x",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.starts_with("error: 400 invalid_request: cron: "),
        "{run:#?}"
    );
    assert!(run.stderr.contains("(field: cron)"), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    let run = schedules(
        &app,
        &[
            "create",
            "--every",
            "1m",
            "--tz",
            "Europe/Pariss",
            "--url",
            "http://127.0.0.1:9/x",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("(field: timezone)"), "{run:#?}");
    let run = schedules(
        &app,
        &["create", "--every", "0s", "--url", "http://127.0.0.1:9/x"],
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("(field: every)"), "{run:#?}");
    let run = schedules(&app, &["create", "--every", "1m", "--url", "ftp://x/"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("(field: task.payload.url)"), "{run:#?}");
    let run = schedules(&app, &["get", "not-an-id"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("(field: schedule_id)"), "{run:#?}");
    for sub in ["get", "pause", "resume", "trigger", "delete"] {
        let run = schedules(&app, &[sub, UNKNOWN_ID]).await;
        assert_eq!(run.code, 1, "{sub}: {run:#?}");
        assert!(
            run.stderr.starts_with("error: 404 not_found: "),
            "{sub}: {run:#?}"
        );
    }
    let run = tasks(&app, &["list", "--schedule", "nope"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("(field: schedule_id)"), "{run:#?}");
    let run = schedules(&app, &["list", "--json"]).await.ok();
    assert_eq!(run.json()["schedules"], json!([]), "nothing stored");

    // 401 without a token.
    let run = cli(&["schedules", "--endpoint", &endpoint, "list"], &[]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.starts_with("error: 401 unauthorized: "),
        "{run:#?}"
    );

    // Usage errors: exit 2.
    for args in [
        &["schedules", "create", "--url", "http://x/"][..], // no plan
        &[
            "schedules",
            "create",
            "--cron",
            "* * * * *",
            "--every",
            "1m",
            "--url",
            "http://x/",
        ],
        &["schedules", "create", "--every", "1m"], // no --url
        &[
            "schedules",
            "create",
            "--every",
            "1m",
            "--url",
            "http://x/",
            "--end-at",
            "tomorrow",
        ],
        &["schedules", "update", UNKNOWN_ID], // nothing to change
        &[
            "schedules",
            "update",
            UNKNOWN_ID,
            "--end-at",
            "2030-01-01T00:00:00Z",
            "--no-end",
        ],
        &["schedules", "frobnicate"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--endpoint", &endpoint]);
        let run = cli(&all, &[("TASK_SCHEDULER_TOKEN", ALICE)]).await;
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
    }
}

async fn console(args: &[&str], env: &[(&str, &str)]) -> Console {
    let mut cmd = command(env);
    cmd.arg("console")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env("LOG_FORMAT", "json");
    let mut started = launcher::spawn(cmd).expect("console starts");
    let listening = tokio::time::timeout(Duration::from_secs(15), &mut started.listening)
        .await
        .expect("the console listens within 15 s")
        .unwrap_or_else(|_| panic!("the console exited: {}", started.output.text()));
    Console {
        base: format!("http://{}", listening.addr),
        _started: started,
    }
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_serves_the_page_and_forwards_with_the_operators_token() {
    let recv = Receiver::start().await;
    let app = server().await;
    let c = console(
        &["--endpoint", &app.base_url()],
        &[("TASK_SCHEDULER_TOKEN", ALICE)],
    )
    .await;
    let http = browser();

    let page = http
        .get(format!("{}/console", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
    );

    // The browser sends Bob's token; the proxy sends Alice's (the operator's) instead.
    let body =
        json!({"action": "webhook", "payload": {"url": recv.url("/c")}, "delay_seconds": 3600});
    let resp = http
        .post(format!("{}/tasks", c.base))
        .bearer_auth(BOB)
        .header("idempotency-key", "console-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let task: Value = resp.json().await.unwrap();
    let id = id_of(&task);
    assert_eq!(location, format!("/tasks/{id}"));
    assert_eq!(
        task["idempotency_key"], "console-1",
        "Idempotency-Key forwarded"
    );
    app.api_as(Some(ALICE)).get(&id).await.expect(200);
    app.api_as(Some(BOB)).get(&id).await.expect(404);

    // Reads, with a query string; errors come back as the API said them.
    let resp = http
        .get(format!("{}/tasks?status=scheduled&limit=5", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.unwrap();
    assert_eq!(page["tasks"][0]["task_id"], id);
    let resp = http
        .get(format!("{}/tasks/{UNKNOWN_ID}", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "not_found");
    let resp = http
        .delete(format!("{}/tasks/{id}", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .get(format!("{}/openapi.json", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Without a token in its environment, the proxy sends none: the browser's is not used.
    let open = console(&["--endpoint", &app.base_url()], &[]).await;
    let resp = http
        .get(format!("{}/tasks", open.base))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "the browser's Authorization was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_forwards_only_the_pages_own_requests() {
    let mut app = server().await;
    let c = console(
        &["--endpoint", &app.base_url()],
        &[("TASK_SCHEDULER_TOKEN", ALICE)],
    )
    .await;
    let http = browser();
    let body = json!({"action": "webhook", "payload": {"url": "http://127.0.0.1:9/x"}, "delay_seconds": 3600});
    let port = c.base.rsplit(':').next().unwrap().to_owned();

    // Another site's page (its own Origin, or a name rebound to 127.0.0.1): 403, not forwarded.
    for (name, value) in [
        ("origin", "http://evil.example".to_owned()),
        ("sec-fetch-site", "cross-site".to_owned()),
        ("host", format!("evil.example:{port}")),
    ] {
        let resp = http
            .post(format!("{}/tasks", c.base))
            .header(name, value.as_str())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{name}: {value}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "forbidden");
    }
    // The page's own: same origin.
    let resp = http
        .post(format!("{}/tasks", c.base))
        .header("origin", c.base.as_str())
        .header("sec-fetch-site", "same-origin")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // A body over the cap: 413 here, not sent.
    let big = json!({"action": "webhook", "payload": {"url": "http://127.0.0.1:9/x", "data": "x".repeat(600 * 1024)}, "delay_seconds": 1});
    let resp = http
        .post(format!("{}/tasks", c.base))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        app.api().list_all(None).await.len(),
        1,
        "only the page's own create"
    );

    // The API gone: 502, a JSON error.
    app.kill9().await;
    let resp = http.get(format!("{}/tasks", c.base)).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "bad_gateway");

    // Never beyond loopback: a usage error.
    let run = cli(&["console", "--listen", "0.0.0.0:0"], &[]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("loopback only"), "{run:#?}");
}

#[cfg(feature = "aws")]
mod sigv4 {
    //! The signing path: the client's `--aws` and `console --aws` through a stub of API
    //! Gateway that verifies each signature and forwards to a local server.

    use super::*;
    use integration_tests::sigv4_stub::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, SigV4Stub};

    const REGION: &str = "eu-west-3";

    fn env_credentials(secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_owned()),
        ]
    }

    async fn signed(stub: &SigV4Stub, args: &[&str], env: &[(&str, String)]) -> Run {
        let url = stub.url();
        let mut all = vec![
            "tasks",
            "--endpoint",
            url.as_str(),
            "--aws",
            "--region",
            REGION,
        ];
        all.extend_from_slice(args);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        cli(&all, &env).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_client_signs_with_credentials_from_the_environment_or_a_profile() {
        let app = server().await;
        let stub = SigV4Stub::start(REGION, &app.base_url(), Some(ALICE)).await;

        // From AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; a body and a query string signed.
        let creds = env_credentials(SECRET_ACCESS_KEY);
        let task = signed(
            &stub,
            &[
                "create",
                "--url",
                "http://127.0.0.1:9/x",
                "--in",
                "1h",
                "--data",
                r#"{"a":[1,2]}"#,
                "--idempotency-key",
                "k-1",
                "--json",
            ],
            &creds,
        )
        .await
        .ok()
        .json();
        let id = id_of(&task);
        app.api().get(&id).await.expect(200);
        let run = signed(
            &stub,
            &["list", "--status", "scheduled", "--limit", "10"],
            &creds,
        )
        .await
        .ok();
        assert!(run.stdout.contains(&id), "{run:#?}");
        let run = signed(&stub, &["get", &id, "--json"], &creds).await.ok();
        assert_eq!(run.json()["task_id"], id.as_str());

        // From a profile in temporary shared files, by AWS_PROFILE (the region from the
        // profile: no --region).
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let credentials = dir.path().join("credentials");
        std::fs::write(&config, format!("[profile ops]\nregion = {REGION}\n")).unwrap();
        std::fs::write(
            &credentials,
            format!("[ops]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n"),
        )
        .unwrap();
        let url = stub.url();
        let run = cli(
            &[
                "tasks",
                "--endpoint",
                &url,
                "--aws",
                "cancel",
                &id,
                "--json",
            ],
            &[
                ("AWS_PROFILE", "ops"),
                ("AWS_CONFIG_FILE", config.to_str().unwrap()),
                ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
            ],
        )
        .await
        .ok();
        assert_eq!(run.json()["status"], "cancelled");

        let seen = stub.seen();
        assert_eq!(seen.len(), 4, "{seen:#?}");
        for s in &seen {
            assert_eq!(s.refused, None, "{s:#?}");
            let auth = s.headers["authorization"].to_str().unwrap();
            assert!(
                auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")),
                "{auth}"
            );
            assert!(
                auth.contains(&format!("/{REGION}/execute-api/aws4_request")),
                "{auth}"
            );
        }
        assert!(
            seen[0].headers["authorization"]
                .to_str()
                .unwrap()
                .contains("content-type;host;idempotency-key;x-amz-date"),
            "{:#?}",
            seen[0]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_or_missing_signature_is_403_and_exit_1() {
        let app = server().await;
        let stub = SigV4Stub::start(REGION, &app.base_url(), Some(ALICE)).await;

        let run = signed(&stub, &["list"], &env_credentials("not-the-secret")).await;
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(
            run.stderr
                .starts_with("error: 403: The request signature we calculated does not match"),
            "{run:#?}"
        );

        // Signed for another region.
        let url = stub.url();
        let creds = env_credentials(SECRET_ACCESS_KEY);
        let env: Vec<(&str, &str)> = creds.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let run = cli(
            &[
                "tasks",
                "--endpoint",
                &url,
                "--aws",
                "--region",
                "us-east-1",
                "list",
            ],
            &env,
        )
        .await;
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(run.stderr.starts_with("error: 403: "), "{run:#?}");

        // Not signed at all (no --aws: the stub's host is no API Gateway host), with a
        // bearer token or without.
        let run = cli(
            &["tasks", "--endpoint", &url, "list"],
            &[("TASK_SCHEDULER_TOKEN", ALICE)],
        )
        .await;
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(run.stderr.starts_with("error: 403: "), "{run:#?}");
        let run = cli(&["tasks", "--endpoint", &url, "list"], &[]).await;
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(
            run.stderr
                .starts_with("error: 403: Missing Authentication Token"),
            "{run:#?}"
        );

        assert!(stub.forwarded().is_empty(), "{:#?}", stub.seen());
        assert_eq!(stub.seen().len(), 4);

        // No credentials anywhere in the chain, or no region: exit 1 before any request.
        let run = cli(
            &[
                "tasks",
                "--endpoint",
                &url,
                "--aws",
                "--region",
                REGION,
                "list",
            ],
            &[],
        )
        .await;
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(
            run.stderr.starts_with("error: no AWS credentials"),
            "{run:#?}"
        );
        let run = cli(&["tasks", "--endpoint", &url, "--aws", "list"], &env).await;
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(
            run.stderr.starts_with("error: SigV4 needs a region"),
            "{run:#?}"
        );
        assert_eq!(stub.seen().len(), 4, "nothing sent");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stub_refuses_a_stale_or_altered_signature() {
        use aws_credential_types::Credentials;
        use aws_sigv4::{
            http_request::{SignableBody, SignableRequest, SigningSettings, sign},
            sign::v4,
        };
        let app = server().await;
        let stub = SigV4Stub::start(REGION, &app.base_url(), Some(ALICE)).await;
        let url = format!("{}/tasks", stub.url());
        let host = url
            .trim_start_matches("http://")
            .trim_end_matches("/tasks")
            .to_owned();
        let headers_at = |at: std::time::SystemTime| {
            let identity =
                Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "test").into();
            let params = v4::SigningParams::builder()
                .identity(&identity)
                .region(REGION)
                .name("execute-api")
                .time(at)
                .settings(SigningSettings::default())
                .build()
                .unwrap()
                .into();
            let req = SignableRequest::new(
                "GET",
                url.clone(),
                [("host", host.as_str())].into_iter(),
                SignableBody::Bytes(b""),
            )
            .unwrap();
            let (instructions, _) = sign(req, &params).unwrap().into_parts();
            instructions
                .into_parts()
                .0
                .into_iter()
                .map(|h| (h.name().to_owned(), h.value().to_owned()))
                .collect::<Vec<_>>()
        };
        let http = browser();
        let send = |headers: Vec<(String, String)>, path: &'static str| {
            let mut req = http.get(format!("{}{path}", stub.url()));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send()
        };
        // Now: forwarded.
        let resp = send(headers_at(std::time::SystemTime::now()), "/tasks")
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // Ten minutes old: expired.
        let stale = std::time::SystemTime::now() - Duration::from_secs(600);
        let resp = send(headers_at(stale), "/tasks").await.unwrap();
        assert_eq!(resp.status(), 403);
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Signature expired"),
            "{body}"
        );
        // Signed for /tasks, sent to another path.
        let resp = send(
            headers_at(std::time::SystemTime::now()),
            "/tasks?status=failed",
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(stub.forwarded().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_console_signs_for_api_gateway_and_never_forwards_the_browsers_authorization() {
        let app = server().await;
        let stub = SigV4Stub::start(REGION, &app.base_url(), Some(ALICE)).await;
        let creds = env_credentials(SECRET_ACCESS_KEY);
        let env: Vec<(&str, &str)> = creds.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let c = console(
            &["--endpoint", &stub.url(), "--aws", "--region", REGION],
            &env,
        )
        .await;
        let http = browser();

        let page = http
            .get(format!("{}/console", c.base))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(
            stub.seen().is_empty(),
            "the page is served by the console itself"
        );

        let body = json!({"action": "webhook", "payload": {"url": "http://127.0.0.1:9/x"}, "delay_seconds": 3600});
        let resp = http
            .post(format!("{}/tasks", c.base))
            .bearer_auth("browser-token-must-not-leave")
            .header("cookie", "session=must-not-leave")
            .header("connection", "x-hop")
            .header("x-hop", "must-not-leave")
            .header("x-forwarded-for", "must-not-leave")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let task: Value = resp.json().await.unwrap();
        let id = id_of(&task);
        let resp = http
            .get(format!("{}/tasks/{id}", c.base))
            .bearer_auth("browser-token-must-not-leave")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        app.api().get(&id).await.expect(200);

        let seen = stub.seen();
        assert_eq!(seen.len(), 2, "{seen:#?}");
        for s in &seen {
            assert_eq!(s.refused, None, "{s:#?}");
            assert!(
                s.headers["authorization"]
                    .to_str()
                    .unwrap()
                    .starts_with("AWS4-HMAC-SHA256 ")
            );
            for (name, v) in &s.headers {
                let v = v.to_str().unwrap_or_default();
                assert!(!v.contains("must-not-leave"), "{name}: {v}");
            }
            for name in ["cookie", "x-hop", "x-forwarded-for"] {
                assert!(s.headers.get(name).is_none(), "{name} forwarded: {s:#?}");
            }
        }

        // A wrong secret in the console's environment: the API Gateway's 403 reaches the page.
        let wrong = env_credentials("not-the-secret");
        let env: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let bad = console(
            &["--endpoint", &stub.url(), "--aws", "--region", REGION],
            &env,
        )
        .await;
        let resp = http
            .get(format!("{}/tasks", bad.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(stub.forwarded().len(), 2);
    }
}
