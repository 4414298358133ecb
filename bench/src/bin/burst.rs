//! Burst: N tasks (10,000) due at the same instant, each to its own path on a receiver on
//! loopback that records arrival times. Every task must arrive exactly once; the figures are
//! the delivery rate and the lateness distribution (arrival wall time − run_at).
//!
//! `cargo run --release -p bench --bin burst -- [--tasks N]`

use std::{collections::HashMap, sync::Arc};

use bench::{Figure, Receiver, Server, data_dir, ms_between, percentile, quick, write_results};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tasks: u64 = bench::arg("tasks", if quick() { 2_000 } else { 10_000 });
    let dir = data_dir("burst")?;
    let receiver = Receiver::start().await?;
    let server = Server::start(dir.path()).await?;

    // One instant, on a whole second, far enough ahead for every create to land first.
    let ahead = TimeDelta::milliseconds(3_000 + (tasks as i64) / 2);
    let t = Utc::now() + ahead;
    let run_at: DateTime<Utc> = t.with_nanosecond(0).expect("valid") + TimeDelta::seconds(1);
    println!(
        "burst: {tasks} tasks due at {} to {}, server pid {}",
        bench::rfc3339(run_at),
        receiver.addr,
        server.pid
    );
    let prefix = receiver.url("/b/");
    let body = Arc::new(move |i: u64| bench::task_body(&format!("{prefix}{i}"), run_at, i));
    let load = bench::drive(&server, tasks, 64, body).await?;
    let created_by = Utc::now();
    anyhow::ensure!(load.errors == 0, "creates failed: {:?}", load.first_error);
    anyhow::ensure!(
        created_by < run_at,
        "creating took too long: done {} ms after run_at",
        ms_between(run_at, created_by)
    );
    let cpu0 = server.cpu()?;
    let all = receiver
        .wait_for(tasks, run_at + TimeDelta::seconds(120))
        .await;
    let server_cpu = server.cpu()? - cpu0;
    // Late duplicates would show up here.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let arrivals = receiver.arrivals();
    let (rss, hwm) = server.memory()?;
    server.stop(std::time::Duration::from_secs(60)).await?;

    let mut per_path: HashMap<&str, u32> = HashMap::new();
    for (p, _) in &arrivals {
        *per_path.entry(p.as_str()).or_default() += 1;
    }
    let expected = (0..tasks).all(|i| per_path.get(format!("/b/{i}").as_str()) == Some(&1));
    let exactly_once = all && expected && arrivals.len() as u64 == tasks;

    let mut lateness: Vec<f64> = arrivals
        .iter()
        .map(|(_, at)| ms_between(run_at, *at))
        .collect();
    bench::sort_f64(&mut lateness);
    let first = lateness.first().copied().unwrap_or(f64::NAN);
    let last = lateness.last().copied().unwrap_or(f64::NAN);
    let rate = arrivals.len() as f64 / (last / 1000.0);
    let rate_span = arrivals.len() as f64 / ((last - first) / 1000.0);
    let figures = vec![
        Figure::check(
            "burst_exactly_once",
            format!(
                "burst: all {tasks} delivered exactly once ({} arrivals, {} paths)",
                arrivals.len(),
                per_path.len()
            ),
            exactly_once,
        ),
        Figure::new(
            "burst_rate",
            "burst delivery rate (tasks / (last arrival − run_at))",
            rate,
            "tasks/s",
        )
        .at_least(10_000.0),
        Figure::new(
            "burst_rate_span",
            "burst delivery rate (tasks / (last − first arrival))",
            rate_span,
            "tasks/s",
        ),
        Figure::new("burst_lateness_min", "burst lateness min", first, "ms"),
        Figure::new(
            "burst_lateness_p50",
            "burst lateness p50",
            percentile(&lateness, 50.0),
            "ms",
        ),
        Figure::new(
            "burst_lateness_p99",
            "burst lateness p99",
            percentile(&lateness, 99.0),
            "ms",
        )
        .at_most(1_000.0),
        Figure::new("burst_lateness_max", "burst lateness max", last, "ms"),
        Figure::new(
            "burst_server_cpu_per_task",
            "server CPU per delivery (claim, call, record)",
            server_cpu.as_secs_f64() * 1e6 / tasks as f64,
            "µs",
        ),
        Figure::new(
            "burst_create_rate",
            "burst: create rate while arming",
            load.rate(),
            "tasks/s",
        ),
        Figure::new(
            "burst_server_rss",
            "burst: server RSS after",
            rss as f64 / 1048576.0,
            "MiB",
        ),
        Figure::new(
            "burst_server_hwm",
            "burst: server peak RSS",
            hwm as f64 / 1048576.0,
            "MiB",
        ),
    ];
    write_results(
        "burst",
        json!({"tasks": tasks, "run_at": bench::rfc3339(run_at),
               "created_before_run_at_ms": ms_between(created_by, run_at)}),
        &figures,
        json!({"lateness_ms": lateness}),
    )?;
    Ok(())
}
