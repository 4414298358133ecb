//! `/schedules` through the real Router over a real SQLite store: every success and error
//! case of docs/api.md's schedules section.

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{ApiToken, Auth};
use crate::fakes::{Rig, ScriptedWebhook};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-9876543210xx";

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<&Value>,
    token: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Option<String>, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, location, json)
}

fn rig() -> (Rig, Router) {
    let rig = Rig::new(ScriptedWebhook::default());
    let tokens = ApiToken::parse_list(&format!("alice:{ALICE},bob:{BOB}")).unwrap();
    let app = rig.router(Auth::Bearer(tokens));
    (rig, app)
}

fn body() -> Value {
    json!({
        "cron": "0 9 * * MON-FRI",
        "timezone": "Europe/Paris",
        "task": {"action": "webhook", "payload": {"url": "https://example.com/daily", "data": {"k": 1}}, "retry": {"max_attempts": 2}}
    })
}

fn field_error(r: &(StatusCode, Option<String>, Value), field: &str, message: &str) {
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.2);
    assert_eq!(r.2["error"]["code"], "invalid_request", "{}", r.2);
    if field.is_empty() {
        assert!(r.2["error"].get("field").is_none(), "{}", r.2);
    } else {
        assert_eq!(r.2["error"]["field"], field, "{}", r.2);
    }
    let got = r.2["error"]["message"].as_str().unwrap();
    assert!(got.contains(message), "{got:?} lacks {message:?}");
}

#[tokio::test]
async fn create_get_list_and_the_next_runs_in_the_zone() {
    let (rig, app) = rig();
    let (status, location, s) =
        send(&app, Method::POST, "/schedules", Some(&body()), ALICE, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id = s["schedule_id"].as_str().unwrap().to_owned();
    assert_eq!(
        location.as_deref(),
        Some(format!("/schedules/{id}").as_str())
    );
    assert_eq!(s["cron"], "0 9 * * MON-FRI");
    assert_eq!(s["timezone"], "Europe/Paris");
    assert_eq!(s["paused"], false);
    assert_eq!(s["task"]["retry"]["max_attempts"], 2);
    let pending = s["pending_task_id"].as_str().unwrap().to_owned();

    let (status, _, got) = send(
        &app,
        Method::GET,
        &format!("/schedules/{id}"),
        None,
        ALICE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let runs = got["next_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    for r in runs {
        let local = chrono::DateTime::parse_from_rfc3339(r["local"].as_str().unwrap()).unwrap();
        let utc = chrono::DateTime::parse_from_rfc3339(r["utc"].as_str().unwrap()).unwrap();
        assert_eq!(local, utc, "one instant, two writings");
        assert!(r["utc"].as_str().unwrap().ends_with('Z'));
        let offset = local.offset().local_minus_utc();
        assert!(offset == 3600 || offset == 7200, "Paris: {local}");
        assert_eq!(local.format("%H:%M:%S").to_string(), "09:00:00");
        use chrono::Datelike;
        assert!(local.weekday().number_from_monday() <= 5);
    }
    assert_eq!(got["last_occurrence"], Value::Null);
    // The pending occurrence is an ordinary task, linked to its schedule.
    let (status, _, task) = send(
        &app,
        Method::GET,
        &format!("/tasks/{pending}"),
        None,
        ALICE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(task["occurrence"]["schedule_id"], id.as_str());
    assert_eq!(task["run_at"], runs[0]["utc"]);
    assert_eq!(task["payload"]["data"], json!({"k": 1}));
    let (_, _, list) = send(
        &app,
        Method::GET,
        &format!("/tasks?schedule_id={id}"),
        None,
        ALICE,
        &[],
    )
    .await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);
    let (_, _, list) = send(&app, Method::GET, "/schedules?limit=1", None, ALICE, &[]).await;
    assert_eq!(list["schedules"][0]["schedule_id"], id.as_str());
    assert_eq!(list["next_cursor"], Value::Null);
    // Bob sees none of it.
    let (status, _, _) = send(
        &app,
        Method::GET,
        &format!("/schedules/{id}"),
        None,
        BOB,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, list) = send(&app, Method::GET, "/schedules", None, BOB, &[]).await;
    assert_eq!(list["schedules"], json!([]));
    let (_, _, list) = send(
        &app,
        Method::GET,
        &format!("/tasks?schedule_id={id}"),
        None,
        BOB,
        &[],
    )
    .await;
    assert_eq!(list["tasks"], json!([]));
    assert_eq!(rig.store.count(None).await.unwrap(), 1);
}

#[tokio::test]
async fn bad_input_names_the_field_and_stores_nothing() {
    let (rig, app) = rig();
    let with = |patch: Value| {
        let mut b = body();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let cases = [
        (
            with(json!({"cron": "0 9 * * 8"})),
            "cron",
            "day-of-week \"8\" is out of range 0-7",
        ),
        (with(json!({"cron": "0 9 * *"})), "cron", "has 4 fields"),
        (with(json!({"cron": null})), "cron", "required (or every)"),
        (with(json!({"every": "15m"})), "every", "not both"),
        (
            with(json!({"cron": null, "every": "0s"})),
            "every",
            "is not a period",
        ),
        (
            with(json!({"cron": null, "every": "fortnightly"})),
            "every",
            "is not a period",
        ),
        (
            with(json!({"timezone": "Europe/Pariss"})),
            "timezone",
            "not an IANA time zone",
        ),
        (
            with(json!({"start_at": "tomorrow"})),
            "start_at",
            "RFC 3339",
        ),
        (
            with(json!({"end_at": "2020-01-01T00:00:00Z"})),
            "end_at",
            "in the future",
        ),
        (
            with(json!({"start_at": "2099-01-02T00:00:00Z", "end_at": "2099-01-01T00:00:00Z"})),
            "end_at",
            "before start_at",
        ),
        (
            with(json!({"task": {"action": "webhook", "payload": {"url": "ftp://x"}}})),
            "task.payload.url",
            "",
        ),
        (
            with(
                json!({"task": {"action": "webhook", "payload": {"url": "https://example.com"}, "run_at": "2030-01-01T00:00:00Z"}}),
            ),
            "task.run_at",
            "unknown field",
        ),
        (
            with(
                json!({"task": {"action": "webhook", "payload": {"url": "https://example.com"}, "timeout_seconds": 99}}),
            ),
            "task.timeout_seconds",
            "between 1 and 30",
        ),
        (with(json!({"colour": "blue"})), "colour", "unknown field"),
        (with(json!({"task": null})), "task", "missing field"),
    ];
    for (b, field, message) in cases {
        let r = send(&app, Method::POST, "/schedules", Some(&b), ALICE, &[]).await;
        field_error(&r, field, message);
    }
    assert_eq!(rig.store.count(None).await.unwrap(), 0);
    let (_, _, list) = send(&app, Method::GET, "/schedules", None, ALICE, &[]).await;
    assert_eq!(list["schedules"], json!([]));
    for (uri, field) in [
        ("/schedules?limit=0", "limit"),
        ("/schedules?cursor=nope", "cursor"),
        ("/schedules?page=2", "page"),
        ("/tasks?schedule_id=nope", "schedule_id"),
    ] {
        let r = send(&app, Method::GET, uri, None, ALICE, &[]).await;
        field_error(&r, field, "");
    }
    let r = send(&app, Method::GET, "/schedules/nope", None, ALICE, &[]).await;
    field_error(&r, "schedule_id", "not a schedule id");
}

#[tokio::test]
async fn patch_pause_resume_trigger_and_delete() {
    let (rig, app) = rig();
    let (_, _, s) = send(&app, Method::POST, "/schedules", Some(&body()), ALICE, &[]).await;
    let id = s["schedule_id"].as_str().unwrap().to_owned();
    let uri = format!("/schedules/{id}");
    let first = s["pending_task_id"].as_str().unwrap().to_owned();

    // Bad patches change nothing.
    for (b, field) in [
        (json!({}), ""),
        (json!({"cron": "61 * * * *"}), "cron"),
        (json!({"end_at": 5}), "end_at"),
        (json!({"paused": "yes"}), "paused"),
        (json!({"run_at": "2030-01-01T00:00:00Z"}), "run_at"),
    ] {
        let r = send(&app, Method::PATCH, &uri, Some(&b), ALICE, &[]).await;
        field_error(&r, field, "");
    }
    let (_, _, same) = send(&app, Method::GET, &uri, None, ALICE, &[]).await;
    assert_eq!(same["pending_task_id"], first.as_str());

    let (status, _, paused) = send(
        &app,
        Method::PATCH,
        &uri,
        Some(&json!({"paused": true})),
        ALICE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["pending_task_id"], Value::Null);
    assert_eq!(paused["next_runs"], json!([]));
    let (_, _, t) = send(
        &app,
        Method::GET,
        &format!("/tasks/{first}"),
        None,
        ALICE,
        &[],
    )
    .await;
    assert_eq!(t["status"], "cancelled");

    let (_, _, resumed) = send(
        &app,
        Method::PATCH,
        &uri,
        Some(&json!({"paused": false, "every": "1h", "timezone": "America/New_York"})),
        ALICE,
        &[],
    )
    .await;
    assert_eq!(resumed["every"], "1h");
    assert_eq!(resumed["cron"], Value::Null);
    assert_eq!(resumed["timezone"], "America/New_York");
    assert!(
        resumed["next_runs"][0]["local"]
            .as_str()
            .unwrap()
            .ends_with("-05:00")
            || resumed["next_runs"][0]["local"]
                .as_str()
                .unwrap()
                .ends_with("-04:00")
    );
    let second = resumed["pending_task_id"].as_str().unwrap().to_owned();
    assert_ne!(second, first);

    // The pending occurrence cannot be cancelled on its own.
    let (status, _, e) = send(
        &app,
        Method::DELETE,
        &format!("/tasks/{second}"),
        None,
        ALICE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");

    let (status, location, trig) = send(
        &app,
        Method::POST,
        &format!("{uri}/trigger"),
        None,
        ALICE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{trig}");
    let trig_id = trig["task_id"].as_str().unwrap();
    assert_eq!(
        location.as_deref(),
        Some(format!("/tasks/{trig_id}").as_str())
    );
    assert_eq!(trig["occurrence"]["triggered"], true);
    let (_, _, after) = send(&app, Method::GET, &uri, None, ALICE, &[]).await;
    assert_eq!(after["pending_task_id"], second.as_str());
    assert_eq!(after["last_occurrence"]["task_id"], trig_id);
    assert_eq!(after["last_occurrence"]["status"], "scheduled");

    // Bob can do none of it.
    for (m, u) in [
        (Method::PATCH, uri.clone()),
        (Method::DELETE, uri.clone()),
        (Method::POST, format!("{uri}/trigger")),
    ] {
        let b = json!({"paused": true});
        let (status, _, _) = send(
            &app,
            m.clone(),
            &u,
            (m == Method::PATCH).then_some(&b),
            BOB,
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{m} {u}");
    }

    let (status, _, deleted) = send(&app, Method::DELETE, &uri, None, ALICE, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["pending_task_id"], Value::Null);
    let (status, _, _) = send(&app, Method::GET, &uri, None, ALICE, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&app, Method::DELETE, &uri, None, ALICE, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Its tasks keep their history: first and second cancelled, the trigger still due.
    let (_, _, list) = send(
        &app,
        Method::GET,
        &format!("/tasks?schedule_id={id}"),
        None,
        ALICE,
        &[],
    )
    .await;
    let statuses: Vec<&str> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 3, "{list}");
    assert_eq!(statuses.iter().filter(|s| **s == "cancelled").count(), 2);
    assert_eq!(rig.store.count(None).await.unwrap(), 3);
}

#[tokio::test]
async fn idempotency_key_repeats_and_conflicts() {
    let (rig, app) = rig();
    let key = [("idempotency-key", "nightly-report")];
    let (s1, _, a) = send(&app, Method::POST, "/schedules", Some(&body()), ALICE, &key).await;
    assert_eq!(s1, StatusCode::CREATED);
    let (s2, _, b) = send(&app, Method::POST, "/schedules", Some(&body()), ALICE, &key).await;
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(a["schedule_id"], b["schedule_id"]);
    let mut other = body();
    other["cron"] = json!("0 10 * * *");
    let (s3, _, e) = send(&app, Method::POST, "/schedules", Some(&other), ALICE, &key).await;
    assert_eq!(s3, StatusCode::CONFLICT, "{e}");
    // Bob's key is his own.
    let (s4, _, _) = send(&app, Method::POST, "/schedules", Some(&body()), BOB, &key).await;
    assert_eq!(s4, StatusCode::CREATED);
    assert_eq!(rig.store.count(None).await.unwrap(), 2);
}

#[tokio::test]
async fn a_host_without_schedules_answers_501() {
    let rig = Rig::without_schedules(ScriptedWebhook::default());
    let app = rig.router(Auth::Open);
    for (m, uri) in [
        (Method::POST, "/schedules"),
        (Method::GET, "/schedules"),
        (Method::GET, "/schedules/01JF3Q8R5V2Z6X4W9YH7K1M0NB"),
        (Method::DELETE, "/schedules/01JF3Q8R5V2Z6X4W9YH7K1M0NB"),
        (
            Method::POST,
            "/schedules/01JF3Q8R5V2Z6X4W9YH7K1M0NB/trigger",
        ),
        (Method::GET, "/tasks?schedule_id=01JF3Q8R5V2Z6X4W9YH7K1M0NB"),
    ] {
        let b = body();
        let (status, _, e) = send(
            &app,
            m.clone(),
            uri,
            (m == Method::POST && uri == "/schedules").then_some(&b),
            "",
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{m} {uri}: {e}");
        assert_eq!(e["error"]["code"], "not_implemented");
    }
}
