//! The Lambda figures that need AWS, on moto server (`AWS_ENDPOINT_URL`, which
//! `make bench-aws` provides through scripts/with-moto.sh): the release bootstrap against a
//! Runtime API on loopback (`runtime_api`), over the rehearsal's table, queues, schedule group
//! and secret (`integration_tests::aws::AwsRig`).
//!
//! * AWS precision: N tasks due 2–3 h ahead. For each, its schedule is read (GetSchedule)
//!   and EventBridge Scheduler is played: a fresh function process whose clock
//!   (moved by libfaketime, from outside the binary) stands at a uniform random moment of
//!   the schedule's at()
//!   minute is invoked with the schedule's Input. Its re-armed wake-up (the "wake-up
//!   queued" log line: DelaySeconds) is then played as SQS would: another fresh process
//!   whose clock stands at firing + DelaySeconds gets the message as a batch event.
//!   Lateness = arrival at the receiver, in that process's clock, − run_at.
//! * AWS calls per task, from moto's request recorder (the function's calls, by its
//!   User-Agent app id): due within 15 min, due in hours, one retry.
//! * Lambda RSS (VmRSS) after the process served one create and one wake-up, on cargo
//!   lambda's Runtime API emulator (the rehearsal's `Function`).
//! * Handler CPU per create and per fire: the process's user + system time over many, with
//!   every AWS call answered instantly by `bench::aws_stub` (answers recorded from moto).
//!
//! `cargo run --release -p bench --bin aws -- --bootstrap target/bench-lambda/x86_64/bootstrap [--tasks N]`

mod calls;
mod handler;
mod precision;
mod rss;
mod runtime_api;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use integration_tests::{
    aws::{AwsRig, Recorder, api_event, api_response, sqs_event},
    rfc3339,
};
use serde_json::{Value, json};

use runtime_api::Lambda;

const OWNER: &str = "arn:aws:iam::123456789012:user/bench";

fn create_body(url: &str, run_at: DateTime<Utc>) -> Value {
    json!({
        "action": "webhook",
        "payload": {"url": url, "method": "POST", "data": {"message": "bench"}},
        "run_at": rfc3339(run_at),
    })
}

async fn create(f: &Lambda, body: &Value) -> anyhow::Result<String> {
    let resp = f
        .invoke(&api_event("POST", "/tasks", Some(body), Some(OWNER), &[]))
        .await?;
    let (status, task) = api_response(&resp);
    anyhow::ensure!(status == 201, "create answered {status}: {task}");
    Ok(task["task_id"].as_str().context("task_id")?.to_owned())
}

/// Plays the SQS event source once: the visible delay-queue messages as one batch.
async fn pump(rig: &AwsRig, f: &Lambda, wait: Duration) -> anyhow::Result<usize> {
    let msgs = rig.receive(wait).await;
    if msgs.is_empty() {
        return Ok(0);
    }
    let out = f.invoke(&sqs_event(&rig.delay_queue_url, &msgs)).await?;
    anyhow::ensure!(
        out["batchItemFailures"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "batch failures: {out}"
    );
    Ok(msgs.len())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bootstrap: PathBuf = bench::arg(
        "bootstrap",
        PathBuf::from("target/bench-lambda/x86_64/bootstrap"),
    );
    let tasks: usize = bench::arg("tasks", if bench::quick() { 10 } else { 40 });
    anyhow::ensure!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run under scripts/with-moto.sh (make bench-aws does)"
    );
    let rig = AwsRig::create().await;
    let env = rig.function_env();
    if bench::arg("cpu-only", false) {
        // For profiling the handler (e.g. `perf record -p` on the bootstrap): no results written.
        let n: usize = bench::arg("cpu-requests", 200);
        let (c, f) = handler::measure(&rig.endpoint, &env, &bootstrap, n).await?;
        println!("handler CPU per create {c:.3} ms, per fire {f:.3} ms (mean of {n})");
        return Ok(());
    }
    let recorder = Recorder::start(&rig.endpoint).await;
    let t0 = Instant::now();

    let short = calls::short_tasks(&rig, &env, &bootstrap, &recorder).await?;
    let (rss_at_start, rss_bytes) = rss::measure(&rig, &env, &bootstrap).await?;
    println!("short tasks done in {:.1} s", t0.elapsed().as_secs_f64());
    let cpu_n: usize = bench::arg("cpu-requests", if bench::quick() { 200 } else { 1000 });
    let (create_cpu_ms, fire_cpu_ms) =
        handler::measure(&rig.endpoint, &env, &bootstrap, cpu_n).await?;
    println!("handler CPU done in {:.1} s", t0.elapsed().as_secs_f64());
    let p = precision::measure(&rig, &env, &bootstrap, &recorder, tasks).await?;
    println!("precision done in {:.1} s", t0.elapsed().as_secs_f64());

    precision::report(&p, tasks, &bootstrap)?;
    calls::report(&short, &p.calls_2h)?;
    rss::report(rss_at_start, rss_bytes, &bootstrap)?;
    handler::report(cpu_n, create_cpu_ms, fire_cpu_ms, &bootstrap)?;
    println!("aws bench: {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
