//! Black-box tests of the local host: the real `task-scheduler serve` binary (port 0, temp
//! data dir) and a real webhook receiver on loopback. See `integration-tests/src/lib.rs`.
//!
//! Build the binary first: `cargo build -p task-scheduler` (`make test` does).

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use integration_tests::{App, Receiver, Reply, in_ms, parse_time, query_escape, rfc3339};
use serde_json::{Value, json};

/// A task id that is a valid ULID but was never created.
const UNKNOWN_ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

fn webhook(url: &str, run_at: chrono::DateTime<Utc>) -> Value {
    json!({
        "action": "webhook",
        "payload": {"url": url, "data": {"url": url}},
        "run_at": rfc3339(run_at),
    })
}

fn webhook_now(url: &str) -> Value {
    json!({
        "action": "webhook",
        "payload": {"url": url, "data": {"url": url}},
        "delay_seconds": 0,
    })
}

fn id_of(task: &Value) -> String {
    task["task_id"].as_str().expect("task_id").to_owned()
}

fn attempts(task: &Value) -> &Vec<Value> {
    task["attempts"].as_array().expect("attempts")
}

fn status_codes(task: &Value) -> Vec<Value> {
    attempts(task)
        .iter()
        .map(|a| a["status_code"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_within_a_second_of_run_at_and_completes() {
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let api = app.api();
    let run_at = in_ms(2_000);

    // The original example, as written, on the original path.
    let original = json!({
        "action": "webhook",
        "payload": {"url": recv.url("/hook"), "data": {"message": "Task executed!"}},
        "run_at": rfc3339(run_at),
    });
    let resp = api.post_json("/schedule-task", &original, None).await;
    let location = resp
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let task = resp.expect(201);
    let id = id_of(&task);
    assert_eq!(id.len(), 26, "a ULID: {id}");
    assert_eq!(location.as_deref(), Some(format!("/tasks/{id}").as_str()));
    assert_eq!(task["status"], "scheduled");
    assert_eq!(task["action"], "webhook");
    assert_eq!(task["payload"]["method"], "POST");
    assert_eq!(parse_time(task["run_at"].as_str().unwrap()), run_at);
    assert_eq!(attempts(&task).len(), 0);

    // The same moment, with a method and custom headers, on POST /tasks.
    let custom = json!({
        "action": "webhook",
        "payload": {
            "url": recv.url("/custom"),
            "method": "PUT",
            "headers": {"X-Tenant": "acme", "X-Trace": "trace-1"},
            "data": {"n": 1, "list": [1, 2, 3]},
        },
        "run_at": rfc3339(run_at),
    });
    let custom_id = id_of(&api.create_ok(&custom).await);

    let hook = recv.wait_for("/hook", 1, Duration::from_secs(10)).await;
    let custom_arrival = recv.wait_for("/custom", 1, Duration::from_secs(5)).await;

    let mut lateness = Vec::new();
    for (path, a) in [("/hook", &hook[0]), ("/custom", &custom_arrival[0])] {
        let late_ms = (a.wall - run_at).num_microseconds().unwrap() as f64 / 1000.0;
        println!("lateness {path}: run_at -> receiver arrival = {late_ms:.1} ms");
        lateness.push(late_ms);
        assert!(late_ms >= -5.0, "{path} arrived {late_ms} ms before run_at");
        assert!(
            late_ms <= 1_000.0,
            "{path} arrived {late_ms} ms after run_at"
        );
    }

    // The request as docs/api.md describes it.
    let a = &hook[0];
    assert_eq!(a.method, "POST");
    assert_eq!(a.json(), json!({"message": "Task executed!"}));
    assert_eq!(a.header("content-type"), Some("application/json"));
    let ua = format!("task-scheduler/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(a.header("user-agent"), Some(ua.as_str()));
    assert_eq!(a.header("webhook-id"), Some(id.as_str()));
    let ts: i64 = a
        .header("webhook-timestamp")
        .expect("webhook-timestamp")
        .parse()
        .expect("unix seconds");
    assert!(
        (ts - a.wall.timestamp()).abs() <= 2,
        "webhook-timestamp {ts}"
    );

    let c = &custom_arrival[0];
    assert_eq!(c.method, "PUT");
    assert_eq!(c.json(), json!({"n": 1, "list": [1, 2, 3]}));
    assert_eq!(c.header("x-tenant"), Some("acme"));
    assert_eq!(c.header("x-trace"), Some("trace-1"));
    assert_eq!(c.header("content-type"), Some("application/json"));
    assert_eq!(c.header("webhook-id"), Some(custom_id.as_str()));

    for task_id in [&id, &custom_id] {
        let done = api
            .wait_status(task_id, "completed", Duration::from_secs(5))
            .await;
        let att = attempts(&done);
        assert_eq!(att.len(), 1, "{done:#}");
        assert_eq!(att[0]["number"], 1);
        assert_eq!(att[0]["outcome"], "succeeded");
        assert_eq!(att[0]["status_code"], 200);
        assert!(att[0]["error"].is_null());
        assert!(att[0]["duration_ms"].is_u64(), "{done:#}");
        assert!(
            parse_time(att[0]["started_at"].as_str().unwrap())
                <= parse_time(att[0]["finished_at"].as_str().unwrap())
        );
        assert!(done["next_attempt_at"].is_null());
        assert!(done.get("dead_letter").is_none_or(Value::is_null));
    }
    assert_eq!(recv.arrivals().len(), 2, "one request per task");

    // Structured logs carry the task id.
    let logged = app
        .output()
        .lines()
        .iter()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok() && l.contains(&id))
        .count();
    assert!(
        logged > 0,
        "no JSON log line names task {id}:\n{}",
        app.output().text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_500_twice_then_completes_with_three_attempts() {
    let recv = Receiver::start().await;
    recv.script(
        "/flaky",
        [
            Reply::status(500).body("boom"),
            Reply::status(500).body("boom again"),
        ],
        Reply::ok(),
    );
    let app = App::spawn().await;
    let api = app.api();
    let mut body = webhook_now(&recv.url("/flaky"));
    body["retry"] =
        json!({"max_attempts": 5, "initial_backoff_seconds": 1, "max_backoff_seconds": 1});
    let id = id_of(&api.create_ok(&body).await);

    let arrivals = recv.wait_for("/flaky", 3, Duration::from_secs(10)).await;
    let done = api
        .wait_status(&id, "completed", Duration::from_secs(5))
        .await;
    assert_eq!(status_codes(&done), [json!(500), json!(500), json!(200)]);
    let att = attempts(&done);
    let outcomes: Vec<_> = att.iter().map(|a| a["outcome"].clone()).collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"]);
    let numbers: Vec<_> = att.iter().map(|a| a["number"].clone()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert!(
        att[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("500") && e.contains("boom")),
        "{done:#}"
    );
    // The same webhook-id on every attempt; backoff ≤ the 1 s cap (plus scheduling slack).
    for a in &arrivals {
        assert_eq!(a.header("webhook-id"), Some(id.as_str()));
    }
    for w in arrivals.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap <= Duration::from_millis(1_800), "backoff gap {gap:?}");
    }
    assert_eq!(recv.arrivals_at("/flaky").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_within_the_cap() {
    let recv = Receiver::start().await;
    recv.script(
        "/busy",
        [Reply::status(429).header("retry-after", "2")],
        Reply::ok(),
    );
    let app = App::spawn().await;
    let api = app.api();
    let mut body = webhook_now(&recv.url("/busy"));
    // Without Retry-After the wait would be at most 1 s (full jitter of the initial 1 s).
    body["retry"] =
        json!({"max_attempts": 3, "initial_backoff_seconds": 1, "max_backoff_seconds": 2});
    let id = id_of(&api.create_ok(&body).await);
    let arrivals = recv.wait_for("/busy", 2, Duration::from_secs(10)).await;
    let gap = arrivals[1].at - arrivals[0].at;
    println!("Retry-After: 2 -> next attempt after {gap:?}");
    assert!(gap >= Duration::from_millis(1_950), "gap {gap:?}");
    assert!(gap <= Duration::from_millis(3_500), "gap {gap:?}");
    let done = api
        .wait_status(&id, "completed", Duration::from_secs(5))
        .await;
    assert_eq!(status_codes(&done), [json!(429), json!(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_fails_at_once_with_a_dead_letter_and_retry_rearms_it() {
    let recv = Receiver::start().await;
    recv.script(
        "/bad",
        [Reply::status(400).body("no such order")],
        Reply::ok(),
    );
    let app = App::spawn().await;
    let api = app.api();
    let mut body = webhook_now(&recv.url("/bad"));
    body["retry"] =
        json!({"max_attempts": 5, "initial_backoff_seconds": 1, "max_backoff_seconds": 1});
    let id = id_of(&api.create_ok(&body).await);

    let failed = api
        .wait_status(&id, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(status_codes(&failed), [json!(400)], "{failed:#}");
    assert_eq!(attempts(&failed)[0]["outcome"], "failed");
    let dl = &failed["dead_letter"];
    assert!(dl.is_object(), "dead_letter missing: {failed:#}");
    assert_eq!(dl["attempts"], 1);
    assert!(
        dl["last_error"].as_str().is_some_and(|e| e.contains("400")),
        "{dl}"
    );
    assert!(failed["next_attempt_at"].is_null());
    assert_eq!(recv.arrivals_at("/bad").len(), 1);

    // Re-armed now, with a fresh budget; the receiver now answers 200.
    let rearmed = api.retry(&id).await.expect(200);
    assert_eq!(rearmed["status"], "scheduled");
    recv.wait_for("/bad", 2, Duration::from_secs(5)).await;
    let done = api
        .wait_status(&id, "completed", Duration::from_secs(5))
        .await;
    let codes = status_codes(&done);
    assert_eq!(codes.last(), Some(&json!(200)), "{done:#}");
    assert!(
        done.get("dead_letter").is_none_or(Value::is_null),
        "{done:#}"
    );

    api.retry(&id).await.expect_error(409, "conflict");
    api.retry(UNKNOWN_ID).await.expect_error(404, "not_found");
    assert_eq!(recv.arrivals_at("/bad").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_fails() {
    let recv = Receiver::start().await;
    recv.script(
        "/moved",
        [],
        Reply::status(302).header("location", "/elsewhere"),
    );
    let app = App::spawn().await;
    let api = app.api();
    let mut body = webhook_now(&recv.url("/moved"));
    body["retry"] =
        json!({"max_attempts": 3, "initial_backoff_seconds": 1, "max_backoff_seconds": 1});
    let id = id_of(&api.create_ok(&body).await);
    let failed = api
        .wait_status(&id, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(status_codes(&failed), [json!(302)], "{failed:#}");
    assert!(
        recv.arrivals_at("/elsewhere").is_empty(),
        "redirect followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_times_out() {
    let recv = Receiver::start().await;
    recv.script("/slow", [], Reply::ok().delay(Duration::from_secs(3)));
    let app = App::spawn().await;
    let api = app.api();
    let mut body = webhook_now(&recv.url("/slow"));
    body["timeout_seconds"] = json!(1);
    body["retry"] = json!({"max_attempts": 1});
    let id = id_of(&api.create_ok(&body).await);

    let failed = api
        .wait_status(&id, "failed", Duration::from_secs(10))
        .await;
    let att = attempts(&failed);
    assert_eq!(att.len(), 1, "{failed:#}");
    assert_eq!(att[0]["outcome"], "timed_out");
    assert!(att[0]["status_code"].is_null());
    let ms = att[0]["duration_ms"].as_u64().expect("duration_ms");
    assert!((950..2_900).contains(&ms), "duration_ms {ms}");
    assert!(failed["dead_letter"].is_object(), "{failed:#}");
    assert_eq!(recv.arrivals_at("/slow").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_run_at_means_no_request() {
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let api = app.api();
    let run_at = in_ms(1_000);
    let doomed = id_of(
        &api.create_ok(&webhook(&recv.url("/cancelled"), run_at))
            .await,
    );
    // A sibling due at the same moment shows the timer did run past run_at.
    let control = id_of(&api.create_ok(&webhook(&recv.url("/control"), run_at)).await);

    let cancelled = api.cancel(&doomed).await.expect(200);
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["next_attempt_at"].is_null());
    api.cancel(&doomed).await.expect_error(409, "conflict");
    api.cancel(UNKNOWN_ID).await.expect_error(404, "not_found");

    recv.wait_for("/control", 1, Duration::from_secs(5)).await;
    // Here the bounded wait is the assertion: nothing by run_at + 1.5 s.
    let until = run_at + TimeDelta::milliseconds(1_500);
    let left = (until - Utc::now()).to_std().unwrap_or_default();
    let seen = recv
        .wait_until(left, |a| a.iter().any(|a| a.path == "/cancelled"))
        .await;
    assert!(seen.is_err(), "a cancelled task was delivered");
    let t = api.get(&doomed).await.expect(200);
    assert_eq!(t["status"], "cancelled");
    assert_eq!(attempts(&t).len(), 0);

    api.wait_status(&control, "completed", Duration::from_secs(5))
        .await;
    api.cancel(&control).await.expect_error(409, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_repeat_creates_one_task() {
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let api = app.api();
    let body = webhook(&recv.url("/idem"), in_ms(500));

    let first = api
        .post_json("/tasks", &body, Some("order-42"))
        .await
        .expect(201);
    let repeat = api.post_json("/tasks", &body, Some("order-42")).await;
    let repeat_location = repeat
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let repeat = repeat.expect(200);
    let id = id_of(&first);
    assert_eq!(repeat["task_id"], first["task_id"]);
    assert_eq!(
        repeat_location.as_deref(),
        Some(format!("/tasks/{id}").as_str())
    );
    // The alias shares the key space.
    let via_alias = api
        .post_json("/schedule-task", &body, Some("order-42"))
        .await
        .expect(200);
    assert_eq!(via_alias["task_id"], first["task_id"]);

    let mut other = body.clone();
    other["payload"]["data"] = json!({"different": true});
    api.post_json("/tasks", &other, Some("order-42"))
        .await
        .expect_error(409, "conflict");

    let all = api.list_all(None).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["task_id"], first["task_id"]);

    recv.wait_for("/idem", 1, Duration::from_secs(5)).await;
    api.wait_status(&id, "completed", Duration::from_secs(5))
        .await;
    // A bounded wait to catch a second delivery.
    let dup = recv
        .wait_until(Duration::from_millis(700), |a| a.len() > 1)
        .await;
    assert!(dup.is_err(), "delivered more than once");

    // A repeat after completion still returns the original, and delivers nothing new.
    let late = api
        .post_json("/tasks", &body, Some("order-42"))
        .await
        .expect(200);
    assert_eq!(late["task_id"], first["task_id"]);
    assert_eq!(late["status"], "completed");
}

/// Creates `n` tasks at `{prefix}{i}` due at `run_at`, 16 at a time; their ids by index.
async fn create_many(
    app: &App,
    recv: &Receiver,
    prefix: &str,
    n: usize,
    run_at: chrono::DateTime<Utc>,
) -> Vec<String> {
    use futures::StreamExt;
    let api = app.api();
    let mut ids: Vec<(usize, String)> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let body = webhook(&recv.url(&format!("{prefix}{i}")), run_at);
            async move { (i, id_of(&api.create_ok(&body).await)) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

/// Waits until every path `{prefix}0..n` has a request, then a bounded extra wait for
/// duplicates; asserts exactly one each.
async fn assert_each_delivered_once(recv: &Receiver, prefix: &str, n: usize, within: Duration) {
    let ours = |a: &integration_tests::Arrival| a.path.starts_with(prefix);
    let all = recv
        .wait_until(within, |a| {
            let mut seen = std::collections::HashSet::new();
            a.iter().filter(|a| ours(a)).for_each(|a| {
                seen.insert(a.path.clone());
            });
            seen.len() >= n
        })
        .await;
    if let Err(seen) = all {
        let got: std::collections::HashSet<_> = seen.iter().map(|a| a.path.clone()).collect();
        let missing: Vec<_> = (0..n)
            .map(|i| format!("{prefix}{i}"))
            .filter(|p| !got.contains(p))
            .collect();
        panic!(
            "{} of {n} tasks not delivered within {within:?}: {missing:?}",
            missing.len()
        );
    }
    let _ = recv
        .wait_until(Duration::from_millis(1_000), |a| {
            a.iter().filter(|a| ours(a)).count() > n
        })
        .await;
    let counts = recv.counts();
    let dups: Vec<_> = counts
        .iter()
        .filter(|(p, c)| p.starts_with(prefix) && **c != 1)
        .collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
}

async fn wait_all_completed(app: &App, n: usize, within: Duration) {
    let api = app.api();
    let deadline = Instant::now() + within;
    loop {
        let done = api.list_all(Some("completed")).await.len();
        if done == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {n} completed after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = api.list_all(None).await;
    assert_eq!(all.len(), n);
    for t in &all {
        assert_eq!(attempts(t).len(), 1, "{t:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_200_pending_then_restart_delivers_each_exactly_once() {
    const N: usize = 200;
    let recv = Receiver::start().await;
    let mut app = App::spawn().await;
    let t0 = Instant::now();
    let run_at = in_ms(3_000);
    let ids = create_many(&app, &recv, "/d/", N, run_at).await;
    app.kill9().await;
    let created_in = t0.elapsed();
    println!("created {N} tasks in {created_in:?}, then kill -9");
    assert_eq!(ids.len(), N);
    assert!(
        Utc::now() < run_at,
        "creating {N} tasks took {created_in:?}, past their run_at: the test proves nothing"
    );
    assert!(recv.arrivals().is_empty(), "delivered before the kill");

    app.restart().await;
    assert_each_delivered_once(&recv, "/d/", N, Duration::from_secs(20)).await;
    let late: Vec<i64> = recv
        .arrivals()
        .iter()
        .map(|a| (a.wall - run_at).num_milliseconds())
        .collect();
    let (min, max) = (late.iter().min().unwrap(), late.iter().max().unwrap());
    println!("after restart: run_at -> arrival over {N} tasks: min {min} ms, max {max} ms");
    assert!(*min >= -5, "a task fired {min} ms early");
    wait_all_completed(&app, N, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_due_while_down_fire_at_once_after_restart() {
    const N: usize = 50;
    let recv = Receiver::start().await;
    let mut app = App::spawn().await;
    let run_at = in_ms(1_000);
    create_many(&app, &recv, "/late/", N, run_at).await;
    app.kill9().await;
    assert!(Utc::now() < run_at, "creation took past run_at");
    // The time must pass while the server is down: this wait is the scenario, not a guess.
    let down_until = run_at + TimeDelta::milliseconds(500);
    tokio::time::sleep((down_until - Utc::now()).to_std().unwrap_or_default()).await;
    assert!(recv.arrivals().is_empty());

    let restart = Instant::now();
    app.restart().await;
    let started = restart.elapsed();
    assert_each_delivered_once(&recv, "/late/", N, Duration::from_secs(10)).await;
    let last = recv.arrivals().iter().map(|a| a.at).max().unwrap();
    let after = last - restart;
    println!("restart took {started:?}; all {N} overdue tasks delivered {after:?} after restart");
    assert!(
        after <= started + Duration::from_secs(2),
        "overdue tasks took {after:?} after restart"
    );
    wait_all_completed(&app, N, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_redelivers_after_restart() {
    let recv = Receiver::start().await;
    recv.script(
        "/inflight",
        [Reply::ok().delay(Duration::from_secs(30))],
        Reply::ok(),
    );
    let mut app = App::spawn().await;
    let id = id_of(
        &app.api()
            .create_ok(&webhook_now(&recv.url("/inflight")))
            .await,
    );
    recv.wait_for("/inflight", 1, Duration::from_secs(5)).await;
    assert_eq!(app.api().get(&id).await.expect(200)["status"], "running");
    app.kill9().await;
    app.restart().await;
    // At least once: the attempt caught running is delivered again, never lost.
    let arrivals = recv.wait_for("/inflight", 2, Duration::from_secs(10)).await;
    assert_eq!(arrivals[1].header("webhook-id"), Some(id.as_str()));
    let done = app
        .api()
        .wait_status(&id, "completed", Duration::from_secs(5))
        .await;
    assert_eq!(status_codes(&done).last(), Some(&json!(200)), "{done:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_status_and_pages_by_cursor_in_run_at_order() {
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let api = app.api();
    let base = Utc::now() + TimeDelta::hours(1);
    let base = chrono::DateTime::from_timestamp(base.timestamp(), 0).unwrap();
    // Created out of order; task i is due at base + i minutes.
    let mut ids = vec![String::new(); 9];
    for i in [4usize, 0, 8, 2, 6, 1, 7, 3, 5] {
        let at = base + TimeDelta::minutes(i as i64);
        ids[i] = id_of(
            &api.create_ok(&webhook(&recv.url(&format!("/l/{i}")), at))
                .await,
        );
    }
    for i in [1, 7] {
        api.cancel(&ids[i]).await.expect(200);
    }
    let scheduled: Vec<String> = [0, 2, 3, 4, 5, 6, 8]
        .iter()
        .map(|&i| ids[i].clone())
        .collect();

    let mut pages = Vec::new();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = "status=scheduled&limit=3".to_owned();
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={}", query_escape(c)));
        }
        let page = api.list(&q).await.expect(200);
        let tasks = page["tasks"].as_array().unwrap();
        pages.push(tasks.len());
        for t in tasks {
            assert_eq!(t["status"], "scheduled");
            seen.push(id_of(t));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages.len() < 10, "paging does not end");
    }
    assert_eq!(pages, [3, 3, 1]);
    assert_eq!(
        seen, scheduled,
        "ordered by run_at ascending, no duplicates"
    );

    let cancelled: Vec<String> = api.list("status=cancelled").await.expect(200)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(cancelled, [ids[1].clone(), ids[7].clone()]);

    let everything: Vec<String> = api.list_all(None).await.iter().map(id_of).collect();
    assert_eq!(everything, ids);
    let run_ats: Vec<_> = api
        .list_all(None)
        .await
        .iter()
        .map(|t| parse_time(t["run_at"].as_str().unwrap()))
        .collect();
    assert!(run_ats.windows(2).all(|w| w[0] <= w[1]));

    api.list("limit=0")
        .await
        .expect_error(400, "invalid_request");
    api.list("limit=101")
        .await
        .expect_error(400, "invalid_request");
    api.list("status=bogus")
        .await
        .expect_error(400, "invalid_request");
    api.list("cursor=not-a-cursor")
        .await
        .expect_error(400, "invalid_request");
}

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-9876543210ab";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_separate_owners() {
    let recv = Receiver::start().await;
    let app = App::builder()
        .env("SCHEDULER_API_TOKENS", format!("alice:{ALICE},bob:{BOB}"))
        .spawn()
        .await
        .expect("server starts");
    let anon = app.api_as(None);
    let wrong = app.api_as(Some("not-a-valid-token-at-all"));
    let alice = app.api_as(Some(ALICE));
    let bob = app.api_as(Some(BOB));

    let health = anon
        .send(anon.request(reqwest::Method::GET, "/health"))
        .await
        .expect(200);
    assert_eq!(health, json!({"status": "ok"}));

    let body = webhook(&recv.url("/a"), Utc::now() + TimeDelta::hours(1));
    anon.list("").await.expect_error(401, "unauthorized");
    wrong.list("").await.expect_error(401, "unauthorized");
    anon.create(&body).await.expect_error(401, "unauthorized");
    wrong.create(&body).await.expect_error(401, "unauthorized");
    anon.get(UNKNOWN_ID).await.expect_error(401, "unauthorized");

    let id = id_of(&alice.create_ok(&body).await);
    alice.get(&id).await.expect(200);
    bob.get(&id).await.expect_error(404, "not_found");
    bob.cancel(&id).await.expect_error(404, "not_found");
    bob.retry(&id).await.expect_error(404, "not_found");
    anon.cancel(&id).await.expect_error(401, "unauthorized");
    assert!(bob.list_all(None).await.is_empty());
    let mine: Vec<String> = alice.list_all(None).await.iter().map(id_of).collect();
    assert_eq!(mine, [id.as_str()], "the rejected creates stored nothing");
    // Still alice's, still scheduled.
    assert_eq!(alice.get(&id).await.expect(200)["status"], "scheduled");
    alice.cancel(&id).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_listen_beyond_loopback_without_tokens() {
    let (status, output) = App::builder()
        .arg("--listen")
        .arg("0.0.0.0:0")
        .run_to_exit(Duration::from_secs(10))
        .await
        .expect("exits on its own");
    assert!(!status.success(), "started anyway: {status}");
    assert!(
        output.text().contains("SCHEDULER_API_TOKENS"),
        "the refusal does not name SCHEDULER_API_TOKENS:\n{}",
        output.text()
    );
    assert!(output.logs_with_message("listening on").is_empty());

    // With tokens the same address is fine (so the refusal is about the tokens).
    let app = App::builder()
        .arg("--listen")
        .arg("0.0.0.0:0")
        .env("SCHEDULER_API_TOKENS", format!("alice:{ALICE}"))
        .token(ALICE)
        .spawn()
        .await
        .expect("starts with tokens");
    app.api().list("").await.expect(200);

    // On loopback without tokens it starts, with a warning naming the variable.
    let open = App::spawn().await;
    let warned = open.output().lines().iter().any(|l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|v| v["level"] == "WARN" && l.contains("SCHEDULER_API_TOKENS"))
    });
    assert!(warned, "no warning:\n{}", open.output().text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly() {
    let mut app = App::spawn().await;
    app.api().list("").await.expect(200);
    let took = app.terminate().await;
    println!("SIGTERM -> exit 0 in {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_delivery_in_flight() {
    let recv = Receiver::start().await;
    recv.script(
        "/finishing",
        [Reply::ok().delay(Duration::from_millis(1_000))],
        Reply::ok(),
    );
    let mut app = App::spawn().await;
    let id = id_of(
        &app.api()
            .create_ok(&webhook_now(&recv.url("/finishing")))
            .await,
    );
    recv.wait_for("/finishing", 1, Duration::from_secs(5)).await;
    let took = app.terminate().await;
    println!("SIGTERM with a delivery in flight -> exit 0 in {took:?}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    // The outcome was recorded before exit: nothing to redeliver after a restart.
    app.restart().await;
    let t = app.api().get(&id).await.expect(200);
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(status_codes(&t), [json!(200)]);
    let dup = recv
        .wait_until(Duration::from_millis(700), |a| a.len() > 1)
        .await;
    assert!(dup.is_err(), "redelivered after a clean shutdown");
}

/// `PATCH /tasks/{id}`, `POST /tasks/{id}/run` and `run_at_local` on the real binary: a task
/// an hour ahead moved to a second ahead is delivered once, at its new time; one moved later
/// lets its old time pass without a request; `/run` delivers at once; a local time in a
/// zone is delivered at the instant it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_tasks_are_delivered_once_at_their_new_time_and_run_delivers_now() {
    use reqwest::Method;
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let api = app.api();
    let patch = |id: &str, body: Value| {
        api.send(
            api.request(Method::PATCH, &format!("/tasks/{id}"))
                .json(&body),
        )
    };
    let run = |id: &str| api.send(api.request(Method::POST, &format!("/tasks/{id}/run")));
    let hour = 3_600_000;
    let earlier = id_of(
        &api.create_ok(&webhook(&recv.url("/earlier"), in_ms(hour)))
            .await,
    );
    let old = in_ms(2_000);
    let later = id_of(&api.create_ok(&webhook(&recv.url("/later"), old)).await);
    let now = id_of(
        &api.create_ok(&webhook(&recv.url("/run"), in_ms(hour)))
            .await,
    );
    // Asia/Kolkata is +05:30 all year: the local time of an instant 3 s ahead.
    let local_at = in_ms(3_000);
    let kolkata = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
    let local = local_at
        .with_timezone(&kolkata)
        .format("%Y-%m-%dT%H:%M:%S%.3f")
        .to_string();
    let mut zoned = webhook(&recv.url("/local"), local_at);
    zoned.as_object_mut().unwrap().remove("run_at");
    zoned["run_at_local"] = json!(local);
    zoned["timezone"] = json!("Asia/Kolkata");
    let zoned = api.create_ok(&zoned).await;
    assert_eq!(parse_time(zoned["run_at"].as_str().unwrap()), local_at);
    assert_eq!(zoned["timezone"], "Asia/Kolkata");

    let new_earlier = in_ms(1_000);
    let moved = patch(&earlier, json!({"run_at": rfc3339(new_earlier)}))
        .await
        .expect(200);
    assert_eq!(parse_time(moved["run_at"].as_str().unwrap()), new_earlier);
    assert_eq!(moved["next_attempt_at"], moved["run_at"]);
    let new_later = old + TimeDelta::milliseconds(2_500);
    patch(&later, json!({"run_at": rfc3339(new_later)}))
        .await
        .expect(200);
    let ran = run(&now).await.expect(200);
    let ran_at = parse_time(ran["run_at"].as_str().unwrap());

    let within = |path: &str, a: &integration_tests::Arrival, at: chrono::DateTime<Utc>| {
        let late_ms = (a.wall - at).num_milliseconds();
        println!("lateness {path}: {late_ms} ms");
        assert!(
            (-5..=1_000).contains(&late_ms),
            "{path} arrived {late_ms} ms after its time"
        );
    };
    within(
        "/run",
        &recv.wait_for("/run", 1, Duration::from_secs(5)).await[0],
        ran_at,
    );
    within(
        "/earlier",
        &recv.wait_for("/earlier", 1, Duration::from_secs(5)).await[0],
        new_earlier,
    );
    within(
        "/local",
        &recv.wait_for("/local", 1, Duration::from_secs(8)).await[0],
        local_at,
    );
    within(
        "/later",
        &recv.wait_for("/later", 1, Duration::from_secs(10)).await[0],
        new_later,
    );
    // Half a second more than the slowest allowance: each delivered exactly once.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for path in ["/run", "/earlier", "/later", "/local"] {
        assert_eq!(recv.arrivals_at(path).len(), 1, "{path}");
    }
    for id in [&earlier, &later, &now] {
        let t = api
            .wait_status(id, "completed", Duration::from_secs(5))
            .await;
        assert_eq!(attempts(&t).len(), 1);
        // Finished: neither can move it again, and the message names why.
        let e = patch(id, json!({"delay_seconds": 5}))
            .await
            .expect_error(409, "conflict");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("task is completed"),
            "{e}"
        );
        run(id).await.expect_error(409, "conflict");
    }
    patch(UNKNOWN_ID, json!({"delay_seconds": 5}))
        .await
        .expect_error(404, "not_found");
    run(UNKNOWN_ID).await.expect_error(404, "not_found");
    let e = patch(&earlier, json!({"timezone": "Europe/Paris"}))
        .await
        .expect_error(400, "invalid_request");
    assert_eq!(e["error"]["field"], "timezone");
}
