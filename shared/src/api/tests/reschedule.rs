//! `run_at_local` on create, `PATCH /tasks/{id}` and `POST /tasks/{id}/run` through the real
//! Router over a real SQLite store.

use super::*;

async fn patch_json(app: &Router, uri: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(extra);
    send(
        app,
        Method::PATCH,
        uri,
        Some(Body::from(body.to_string())),
        &headers,
    )
    .await
}

fn at_local(local: &str, zone: &str) -> Value {
    let mut b = valid();
    b.as_object_mut().unwrap().remove("run_at");
    b["run_at_local"] = json!(local);
    b["timezone"] = json!(zone);
    b
}

async fn created_id(app: &Router, body: &Value) -> String {
    let r = post_json(app, "/tasks", body, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["task_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn run_at_local_resolves_in_its_zone_and_is_shown_back() {
    let (rig, app) = open_rig();
    for (path, local, zone, utc) in [
        (
            "/tasks",
            "2027-03-28T09:00:00",
            "Europe/Paris",
            "2027-03-28T07:00:00Z",
        ),
        // Spring forward: 02:30 does not exist; the first instant after the gap, 03:00 CEST.
        (
            "/tasks",
            "2027-03-28T02:30:00",
            "Europe/Paris",
            "2027-03-28T01:00:00Z",
        ),
        // Fall back: 02:30 happens twice; the earlier, in CEST.
        (
            "/schedule-task",
            "2027-10-31T02:30",
            "Europe/Paris",
            "2027-10-31T00:30:00Z",
        ),
        // A 30-minute shift: 02:15 falls in Lord Howe's gap (02:00 → 02:30).
        (
            "/tasks",
            "2027-10-03T02:15:00",
            "Australia/Lord_Howe",
            "2027-10-02T15:30:00Z",
        ),
    ] {
        let r = post_json(&app, path, &at_local(local, zone), &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["run_at"], utc, "{local} {zone}");
        assert_eq!(r.body["next_attempt_at"], utc);
        let shown = if local.len() == 16 {
            format!("{local}:00")
        } else {
            local.to_owned()
        };
        assert_eq!(r.body["run_at_local"], shown.as_str());
        assert_eq!(r.body["timezone"], zone);
        let id = r.body["task_id"].as_str().unwrap();
        let got = get(&app, &format!("/tasks/{id}")).await;
        assert_eq!(got.body["run_at_local"], shown.as_str());
        assert_eq!(got.body["timezone"], zone);
        let armed = rig.last_armed().unwrap().1;
        assert_eq!(crate::domain::format_time(&armed), utc);
    }
    // A task created with run_at shows neither field.
    let r = post_json(&app, "/tasks", &valid(), &[]).await;
    assert!(r.body.get("run_at_local").is_none(), "{}", r.body);
    assert!(r.body.get("timezone").is_none(), "{}", r.body);
}

#[tokio::test]
async fn the_time_fields_are_exactly_one_and_each_400_names_its_field() {
    let (rig, app) = open_rig();
    let now = Utc::now().to_rfc3339();
    let cases: Vec<(Value, &str)> = vec![
        // run_at_local with run_at, or with delay_seconds: the later one is named.
        (
            {
                let mut b = at_local("2027-03-28T09:00:00", "Europe/Paris");
                b["run_at"] = json!(now);
                b
            },
            "run_at_local",
        ),
        (
            {
                let mut b = at_local("2027-03-28T09:00:00", "Europe/Paris");
                b["delay_seconds"] = json!(5);
                b
            },
            "run_at_local",
        ),
        (
            {
                let mut b = valid();
                b["delay_seconds"] = json!(5);
                b
            },
            "delay_seconds",
        ),
        // timezone without run_at_local, or run_at_local without timezone.
        (
            {
                let mut b = valid();
                b["timezone"] = json!("Europe/Paris");
                b
            },
            "timezone",
        ),
        (
            {
                let mut b = at_local("2027-03-28T09:00:00", "Europe/Paris");
                b.as_object_mut().unwrap().remove("timezone");
                b
            },
            "timezone",
        ),
        (
            at_local("2027-03-28T09:00:00", "Europe/Atlantis"),
            "timezone",
        ),
        (at_local("2027-03-28T09:00:00", "europe/paris"), "timezone"),
        (
            at_local("2027-03-28T09:00:00Z", "Europe/Paris"),
            "run_at_local",
        ),
        (
            at_local("2027-03-28T09:00:00+01:00", "Europe/Paris"),
            "run_at_local",
        ),
        (at_local("next tuesday", "Europe/Paris"), "run_at_local"),
        (
            {
                let mut b = at_local("2027-03-28T09:00:00", "Europe/Paris");
                b["run_at_local"] = json!(20270328);
                b
            },
            "run_at_local",
        ),
        (
            {
                let mut b = valid();
                b.as_object_mut().unwrap().remove("run_at");
                b
            },
            "run_at",
        ),
    ];
    for (body, field) in cases {
        for path in ["/tasks", "/schedule-task"] {
            let r = post_json(&app, path, &body, &[]).await;
            assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request", Some(field));
            assert!(
                r.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(field),
                "{}",
                r.body
            );
        }
    }
    assert_eq!(rig.store.count(None).await.unwrap(), 0, "nothing stored");
    assert!(rig.waker.armed.lock().unwrap().is_empty(), "nothing armed");
}

#[tokio::test]
async fn patch_moves_a_scheduled_task_and_replaces_its_wake_up() {
    let (rig, app) = open_rig();
    let id = created_id(&app, &valid()).await;
    let (wake, _) = rig.last_armed().unwrap();
    let r = patch_json(
        &app,
        &format!("/tasks/{id}"),
        &json!({"run_at": "2031-01-02T03:04:05.678+01:00"}),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["run_at"], "2031-01-02T02:04:05.678Z");
    assert_eq!(r.body["next_attempt_at"], "2031-01-02T02:04:05.678Z");
    assert_eq!(r.body["status"], "scheduled");
    assert_eq!(*rig.waker.disarmed.lock().unwrap(), vec![wake]);
    let (again, at) = rig.last_armed().unwrap();
    assert_eq!(again, wake, "the same attempt, armed for the new time");
    assert_eq!(crate::domain::format_time(&at), "2031-01-02T02:04:05.678Z");
    assert_eq!(get(&app, &format!("/tasks/{id}")).await.body, r.body);

    // A local time, then delay_seconds (which clears it).
    let r = patch_json(
        &app,
        &format!("/tasks/{id}"),
        &json!({"run_at_local": "2027-03-28T02:30", "timezone": "Europe/Paris"}),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["run_at"], "2027-03-28T01:00:00Z");
    assert_eq!(r.body["run_at_local"], "2027-03-28T02:30:00");
    assert_eq!(r.body["timezone"], "Europe/Paris");
    let before = Utc::now();
    let r = patch_json(
        &app,
        &format!("/tasks/{id}"),
        &json!({"delay_seconds": 60}),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.get("run_at_local").is_none(), "{}", r.body);
    let run_at = chrono::DateTime::parse_from_rfc3339(r.body["run_at"].as_str().unwrap())
        .unwrap()
        .to_utc();
    let expected = before + TimeDelta::seconds(60);
    assert!(
        run_at >= crate::domain::to_millis(expected)
            && run_at <= Utc::now() + TimeDelta::seconds(60),
        "{run_at} vs {expected}"
    );
}

#[tokio::test]
async fn patch_errors_name_the_field_and_change_nothing() {
    let (rig, app) = open_rig();
    let id = created_id(&app, &valid()).await;
    let before = get(&app, &format!("/tasks/{id}")).await.body;
    let uri = format!("/tasks/{id}");
    for (body, field) in [
        (json!({}), "run_at"),
        (json!({"run_at": "next tuesday"}), "run_at"),
        (json!({"run_at": "2031-01-02T03:04:05"}), "run_at"),
        (json!({"delay_seconds": -1}), "delay_seconds"),
        (
            json!({"run_at": "2031-01-02T03:04:05Z", "delay_seconds": 1}),
            "delay_seconds",
        ),
        (
            json!({"run_at": "2031-01-02T03:04:05Z", "run_at_local": "2031-01-02T03:04"}),
            "run_at_local",
        ),
        (json!({"run_at_local": "2031-01-02T03:04"}), "timezone"),
        (
            json!({"run_at": "2031-01-02T03:04:05Z", "timezone": "UTC"}),
            "timezone",
        ),
        (
            json!({"run_at_local": "2031-01-02T03:04", "timezone": "Mars/Olympus"}),
            "timezone",
        ),
        (json!({"runAt": "2031-01-02T03:04:05Z"}), "runAt"),
        (json!({"status": "cancelled"}), "status"),
    ] {
        let r = patch_json(&app, &uri, &body, &[]).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request", Some(field));
    }
    let r = patch_json(
        &app,
        "/tasks/not-a-task-id",
        &json!({"delay_seconds": 1}),
        &[],
    )
    .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("task_id"),
    );
    let r = send(
        &app,
        Method::PATCH,
        &uri,
        Some(Body::from(r#"{"delay_seconds": 1}"#)),
        &[("content-type", "text/plain")],
    )
    .await;
    assert_error(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    );
    let r = patch_json(
        &app,
        "/tasks/01JF3Q8R5V2Z6X4W9YH7K1M0NB",
        &json!({"delay_seconds": 1}),
        &[],
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);
    assert_eq!(get(&app, &uri).await.body, before, "nothing changed");
    assert_eq!(rig.waker.armed.lock().unwrap().len(), 1, "nothing re-armed");
    assert!(rig.waker.disarmed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn run_makes_a_scheduled_task_due_now() {
    let (rig, app) = open_rig();
    let id = created_id(&app, &at_local("2040-01-01T09:00:00", "Asia/Tokyo")).await;
    let before = Utc::now();
    let r = send(&app, Method::POST, &format!("/tasks/{id}/run"), None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let run_at = chrono::DateTime::parse_from_rfc3339(r.body["run_at"].as_str().unwrap())
        .unwrap()
        .to_utc();
    assert!(
        run_at >= crate::domain::to_millis(before) && run_at <= Utc::now(),
        "{run_at}"
    );
    assert_eq!(r.body["next_attempt_at"], r.body["run_at"]);
    assert!(r.body.get("run_at_local").is_none(), "{}", r.body);
    let (wake, at) = rig.last_armed().unwrap();
    assert_eq!(at, run_at);
    assert_eq!(
        rig.scheduler.fire(wake).await.unwrap(),
        crate::app::Fired::Delivered(crate::domain::Next::Completed)
    );
    assert_eq!(rig.webhook.call_count(), 1);
    // Completed now: both moves are 409 naming the status, and change nothing.
    let done = get(&app, &format!("/tasks/{id}")).await.body;
    let r = send(&app, Method::POST, &format!("/tasks/{id}/run"), None, &[]).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", None);
    assert_eq!(
        r.body["error"]["message"],
        "task is completed; only a scheduled task can be rescheduled or run now"
    );
    let r = patch_json(
        &app,
        &format!("/tasks/{id}"),
        &json!({"delay_seconds": 5}),
        &[],
    )
    .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", None);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("task is completed"),
        "{}",
        r.body
    );
    assert_eq!(get(&app, &format!("/tasks/{id}")).await.body, done);
    // Cancelled: the same.
    let id = created_id(&app, &valid()).await;
    send(&app, Method::DELETE, &format!("/tasks/{id}"), None, &[]).await;
    let r = send(&app, Method::POST, &format!("/tasks/{id}/run"), None, &[]).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", None);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("task is cancelled")
    );
    let r = send(
        &app,
        Method::POST,
        "/tasks/01JF3Q8R5V2Z6X4W9YH7K1M0NB/run",
        None,
        &[],
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);
    let r = send(&app, Method::POST, "/tasks/nope/run", None, &[]).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("task_id"),
    );
}

#[tokio::test]
async fn another_callers_task_is_not_found_and_unauthenticated_is_401() {
    let rig = Rig::new(ScriptedWebhook::default());
    let tokens = ApiToken::parse_list(&format!("alice:{ALICE},bob:{BOB}")).unwrap();
    let app = rig.router(Auth::Bearer(tokens));
    let alice = format!("Bearer {ALICE}");
    let bob = format!("Bearer {BOB}");
    let r = post_json(&app, "/tasks", &valid(), &[("authorization", &alice)]).await;
    let id = r.body["task_id"].as_str().unwrap().to_owned();
    let uri = format!("/tasks/{id}");
    let r = patch_json(
        &app,
        &uri,
        &json!({"delay_seconds": 1}),
        &[("authorization", &bob)],
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);
    let r = send(
        &app,
        Method::POST,
        &format!("{uri}/run"),
        None,
        &[("authorization", &bob)],
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);
    let r = patch_json(&app, &uri, &json!({"delay_seconds": 1}), &[]).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", None);
    let r = send(&app, Method::POST, &format!("{uri}/run"), None, &[]).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", None);
    // Alice's own: moved.
    let r = patch_json(
        &app,
        &uri,
        &json!({"delay_seconds": 1}),
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(rig.waker.armed.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_openapi_document_describes_the_moves_and_the_local_time() {
    let (_rig, app) = open_rig();
    let doc = get(&app, "/openapi.json").await.body;
    let patch = &doc["paths"]["/tasks/{task_id}"]["patch"];
    assert_eq!(
        patch["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/RescheduleRequest"
    );
    for status in ["200", "400", "404", "409"] {
        assert!(patch["responses"][status].is_object(), "PATCH {status}");
        assert!(
            doc["paths"]["/tasks/{task_id}/run"]["post"]["responses"][status].is_object(),
            "run {status}"
        );
    }
    let schemas = &doc["components"]["schemas"];
    for field in ["run_at", "delay_seconds", "run_at_local", "timezone"] {
        assert!(
            schemas["RescheduleRequest"]["properties"][field].is_object(),
            "{field}"
        );
        assert!(
            schemas["CreateTaskRequest"]["properties"][field].is_object(),
            "{field}"
        );
    }
    for field in ["run_at_local", "timezone"] {
        assert!(
            schemas["TaskView"]["properties"][field].is_object(),
            "{field}"
        );
    }
}
