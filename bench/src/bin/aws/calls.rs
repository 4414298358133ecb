//! AWS calls per task, from moto's request recorder (the function's calls, by its
//! User-Agent app id): due within 15 min, due in hours (from the precision run), one retry.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use bench::{Figure, write_results};
use chrono::{TimeDelta, Utc};
use integration_tests::{
    Receiver, Reply,
    aws::{AwsRig, Recorder},
};
use serde_json::json;

use crate::{create, create_body, pump, runtime_api::Lambda};

pub struct Short {
    pub calls_15min: Vec<String>,
    pub calls_retry: Vec<String>,
}

/// One process: one create (due in 2 s) and its wake-up; then a task whose first delivery
/// fails once (the calls with one retry).
pub async fn short_tasks(
    rig: &AwsRig,
    env: &[(String, String)],
    bootstrap: &Path,
    recorder: &Recorder,
) -> anyhow::Result<Short> {
    let receiver = Receiver::start().await;
    receiver.script("/flaky", [Reply::status(500)], Reply::ok());
    let f = Lambda::start(bootstrap, env, TimeDelta::zero()).await?;
    let id = create(
        &f,
        &create_body(
            &receiver.url("/soon"),
            bench::millis(Utc::now() + TimeDelta::seconds(2)),
        ),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.arrivals_at("/soon").is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "the 2 s task was not delivered");
        pump(rig, &f, Duration::from_millis(500)).await?;
    }
    let calls_15min = recorder.function_calls_for(&id).await;

    let mut body = create_body(
        &receiver.url("/flaky"),
        bench::millis(Utc::now() + TimeDelta::milliseconds(500)),
    );
    body["retry"] =
        json!({"max_attempts": 3, "initial_backoff_seconds": 1, "max_backoff_seconds": 1});
    let retry_id = create(&f, &body).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.arrivals_at("/flaky").len() < 2 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the retried task was not delivered twice"
        );
        pump(rig, &f, Duration::from_millis(500)).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls_retry = recorder.function_calls_for(&retry_id).await;
    f.stop().await;
    Ok(Short {
        calls_15min,
        calls_retry,
    })
}

/// Writes `aws_calls`: `calls_2h` are the calls of the tasks due in hours.
pub fn report(short: &Short, calls_2h: &[Vec<String>]) -> anyhow::Result<()> {
    let hours = calls_2h.first().cloned().unwrap_or_default();
    let consistent = calls_2h.iter().all(|c| *c == hours);
    let figures = vec![
        Figure::new(
            "aws_calls_15min",
            format!(
                "AWS calls per task due within 15 min ({})",
                short.calls_15min.join(", ")
            ),
            short.calls_15min.len() as f64,
            "calls",
        )
        .at_most(4.0),
        Figure::new(
            "aws_calls_hours",
            format!("AWS calls per task due in 2–3 h ({})", hours.join(", ")),
            hours.len() as f64,
            "calls",
        )
        .at_most(5.0),
        Figure::new(
            "aws_calls_retry",
            format!(
                "AWS calls per task with one retry, due within 15 min ({})",
                short.calls_retry.join(", ")
            ),
            short.calls_retry.len() as f64,
            "calls",
        ),
        Figure::check(
            "aws_calls_hours_consistent",
            format!(
                "the same calls for each of {} tasks due in hours",
                calls_2h.len()
            ),
            consistent,
        ),
    ];
    write_results(
        "aws_calls",
        json!({"source": "moto's request recorder, the function's calls (User-Agent app id) mentioning the task id"}),
        &figures,
        json!({"due_within_15_min": short.calls_15min, "due_in_hours": calls_2h, "one_retry": short.calls_retry}),
    )?;

    Ok(())
}
