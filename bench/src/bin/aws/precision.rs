//! AWS precision: tasks due 2–3 h ahead, each schedule's firing played at a uniform random
//! moment of its at() minute by a fresh function process whose clock stands there, its
//! re-armed wake-up delivered by another at firing + DelaySeconds.

use std::{path::Path, time::Duration};

use anyhow::Context;
use bench::{Figure, percentile, write_results};
use chrono::{TimeDelta, Utc};
use integration_tests::{
    Receiver,
    aws::{AwsRig, Recorder, at_time},
};
use rand::Rng;
use serde_json::{Value, json};

use crate::{create, create_body, runtime_api::Lambda};

pub struct Precision {
    pub lateness_ms: Vec<f64>,
    /// run_at − message visible (firing + whole DelaySeconds, rounded down): how early the
    /// queue hands the wake-up over, the time the function then waits out.
    pub early_ms: Vec<f64>,
    pub delays: Vec<i64>,
    pub calls_2h: Vec<Vec<String>>,
}

/// One task of the precision run: schedule read, firing played, wake-up delivered.
async fn one_precision_task(
    rig: &AwsRig,
    env: &[(String, String)],
    bootstrap: &Path,
    receiver: &Receiver,
    creator: &Lambda,
    i: usize,
) -> anyhow::Result<(f64, f64, i64, String)> {
    const LEAD: Duration = Duration::from_millis(300);
    let hours_ms = rand::rng().random_range(2 * 3_600_000..3 * 3_600_000);
    let run_at = bench::millis(Utc::now() + TimeDelta::milliseconds(hours_ms));
    let path = format!("/p{i}");
    let id = create(creator, &create_body(&receiver.url(&path), run_at)).await?;
    let name = format!("{id}-1");
    let s = rig
        .get_schedule(&name)
        .await
        .with_context(|| format!("no schedule {name}"))?;
    let at = at_time(s.schedule_expression().context("expression")?);
    let input: Value = serde_json::from_str(
        s.target()
            .and_then(|t| t.input())
            .context("the schedule's Input")?,
    )?;
    // Scheduler fires at a uniform random moment of the at() minute (flexible window OFF).
    let fire_at = at + TimeDelta::milliseconds(rand::rng().random_range(0..60_000));
    let f = Lambda::start_clocked(bootstrap, env, fire_at, LEAD).await?;
    f.wait_until(fire_at).await;
    let out = f.invoke(&input).await?;
    anyhow::ensure!(out["result"] == "rearmed", "firing answered {out}");
    let delay = f.queued_delay(&id).await?;
    f.stop().await;
    // SQS makes the message visible DelaySeconds after it was sent (the firing).
    let visible_at = fire_at + TimeDelta::seconds(delay);
    // The queued body is the schedule's Input: it carries `due`, so the process waits out the
    // fraction of a second DelaySeconds (rounded down) left.
    let body = input.clone();
    let f = Lambda::start_clocked(bootstrap, env, visible_at, LEAD).await?;
    f.wait_until(visible_at).await;
    let batch = json!({"Records": [{"messageId": format!("m-{i}"), "body": body.to_string(),
        "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs"}]});
    let out = f.invoke(&batch).await?;
    anyhow::ensure!(
        out == json!({"batchItemFailures": []}),
        "delivery answered {out}"
    );
    let arrivals = receiver.arrivals_at(&path);
    anyhow::ensure!(
        arrivals.len() == 1,
        "{} deliveries of {id}\n{}",
        arrivals.len(),
        f.log_text()
    );
    let lateness = arrivals[0].wall + f.offset - run_at;
    f.stop().await;
    let ms = |d: TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    Ok((ms(lateness), ms(run_at - visible_at), delay, id))
}

pub async fn measure(
    rig: &AwsRig,
    env: &[(String, String)],
    bootstrap: &Path,
    recorder: &Recorder,
    tasks: usize,
) -> anyhow::Result<Precision> {
    let receiver = Receiver::start().await;
    let creator = Lambda::start(bootstrap, env, TimeDelta::zero()).await?;
    let mut out = Precision {
        lateness_ms: Vec::new(),
        early_ms: Vec::new(),
        delays: Vec::new(),
        calls_2h: Vec::new(),
    };
    let mut ids = Vec::new();
    for i in 0..tasks {
        let (late, early, delay, id) =
            one_precision_task(rig, env, bootstrap, &receiver, &creator, i).await?;
        out.lateness_ms.push(late);
        out.early_ms.push(early);
        out.delays.push(delay);
        ids.push(id);
    }
    creator.stop().await;
    for id in ids.iter().take(5) {
        out.calls_2h.push(recorder.function_calls_for(id).await);
    }
    Ok(out)
}

/// Writes `aws_precision`.
pub fn report(p: &Precision, tasks: usize, bootstrap: &Path) -> anyhow::Result<()> {
    let mut sorted = p.lateness_ms.clone();
    bench::sort_f64(&mut sorted);
    let n = sorted.len();
    let mut early = p.early_ms.clone();
    bench::sort_f64(&mut early);
    let figures = vec![
        Figure::new(
            "aws_precision_p50",
            format!("AWS precision (rehearsal, Scheduler's minute simulated): lateness p50 of {n}"),
            percentile(&sorted, 50.0),
            "ms",
        ),
        Figure::new(
            "aws_precision_p99",
            "AWS precision: lateness p99 (arrival in the function's clock − run_at)",
            percentile(&sorted, 99.0),
            "ms",
        )
        .at_most(1000.0),
        Figure::new(
            "aws_precision_max",
            "AWS precision: lateness max",
            sorted[n - 1],
            "ms",
        ),
        Figure::new(
            "aws_precision_early_max",
            "queued wake-up visible before run_at (DelaySeconds rounded down), waited out: max",
            early[early.len() - 1],
            "ms",
        ),
        Figure::check(
            "aws_precision_all_delivered",
            "every task delivered once, never early",
            n == tasks && sorted[0] >= 0.0,
        ),
    ];
    write_results(
        "aws_precision",
        json!({"tasks": tasks, "due": "uniform in 2–3 h", "firing": "uniform random moment of the schedule's at() minute",
               "bootstrap": bootstrap,
               "method": "a fresh function process per firing and per delivery, its wall clock moved by libfaketime (LD_PRELOAD, FAKETIME); the re-armed wake-up (it carries its due time) delivered as an SQS batch at firing + DelaySeconds, which the function waits out to run_at"}),
        &figures,
        json!({"lateness_ms": p.lateness_ms, "run_at_minus_visible_ms": p.early_ms, "delay_seconds": p.delays}),
    )
}
