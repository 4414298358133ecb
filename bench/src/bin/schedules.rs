//! Schedules: N schedules (10,000), `* * * * *` in UTC, all due on the same minute boundary,
//! each to its own path on a receiver on loopback. Every first occurrence must arrive exactly
//! once; the figures are the lateness distribution (arrival wall time − the boundary), the
//! delivery rate, and the server's memory per schedule (RSS after creating them − before,
//! divided by N: a schedule is a row and its pending occurrence a task, on disk; the timer
//! holds one wake-up per schedule).
//!
//! Each delivery here also writes the schedule's next occurrence in the claim's transaction
//! and arms it, which a one-time task's burst (`burst`) does not.
//!
//! `cargo run --release -p bench --bin schedules -- [--schedules N]`

use std::{collections::HashMap, sync::Arc};

use bench::{Figure, Receiver, Server, data_dir, ms_between, percentile, quick, write_results};
use bytes::Bytes;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: u64 = bench::arg("schedules", if quick() { 2_000 } else { 10_000 });
    let dir = data_dir("schedules")?;
    let receiver = Receiver::start().await?;
    let server = Server::start(dir.path()).await?;
    let (rss0, _) = server.memory()?;

    // The next minute boundary far enough ahead for every create to land first.
    let ahead = TimeDelta::milliseconds(5_000 + (n as i64) / 2);
    let minute = TimeDelta::minutes(1);
    let mut boundary: DateTime<Utc> = Utc::now().duration_trunc(minute)? + minute;
    if boundary - Utc::now() < ahead {
        boundary += minute;
    }
    println!(
        "schedules: {n} schedules `* * * * *` due at {} to {}, server pid {}",
        bench::rfc3339(boundary),
        receiver.addr,
        server.pid
    );
    let prefix = receiver.url("/s/");
    // `start_at` pins the first occurrence to the boundary: without it, creates that began
    // less than `ahead` before the previous minute would have their first occurrence there.
    let start = bench::rfc3339(boundary);
    let body = Arc::new(move |i: u64| {
        Bytes::from(format!(
            r#"{{"cron":"* * * * *","start_at":"{start}","task":{{"action":"webhook","payload":{{"url":"{prefix}{i}","data":{{"n":{i}}}}}}}}}"#
        ))
    });
    let load = bench::drive_to(&server, "/schedules", n, 64, body).await?;
    let created_by = Utc::now();
    anyhow::ensure!(load.errors == 0, "creates failed: {:?}", load.first_error);
    anyhow::ensure!(
        created_by < boundary,
        "creating took too long: done {} ms after the boundary",
        ms_between(boundary, created_by)
    );
    let (rss_created, _) = server.memory()?;
    let cpu0 = server.cpu()?;
    let all = receiver
        .wait_for(n, boundary + TimeDelta::seconds(50))
        .await;
    let server_cpu = server.cpu()? - cpu0;
    // Late duplicates would show up here (the next boundary is later).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let arrivals: Vec<_> = receiver
        .arrivals()
        .into_iter()
        .filter(|(_, at)| *at < boundary + minute)
        .collect();
    let (rss, hwm) = server.memory()?;
    server.stop(std::time::Duration::from_secs(60)).await?;

    let mut per_path: HashMap<&str, u32> = HashMap::new();
    for (p, _) in &arrivals {
        *per_path.entry(p.as_str()).or_default() += 1;
    }
    let expected = (0..n).all(|i| per_path.get(format!("/s/{i}").as_str()) == Some(&1));
    let exactly_once = all && expected && arrivals.len() as u64 == n;
    let mut lateness: Vec<f64> = arrivals
        .iter()
        .map(|(_, at)| ms_between(boundary, *at))
        .collect();
    bench::sort_f64(&mut lateness);
    let first = lateness.first().copied().unwrap_or(f64::NAN);
    let last = lateness.last().copied().unwrap_or(f64::NAN);
    let per_schedule = (rss_created as f64 - rss0 as f64) / n as f64;
    let figures = vec![
        Figure::check(
            "schedules_exactly_once",
            format!(
                "schedules: all {n} first occurrences delivered exactly once ({} arrivals)",
                arrivals.len()
            ),
            exactly_once,
        ),
        Figure::new(
            "schedules_lateness_min",
            "schedules: lateness min (arrival − minute boundary)",
            first,
            "ms",
        ),
        Figure::new(
            "schedules_lateness_p50",
            "schedules: lateness p50",
            percentile(&lateness, 50.0),
            "ms",
        ),
        Figure::new(
            "schedules_lateness_p99",
            "schedules: lateness p99",
            percentile(&lateness, 99.0),
            "ms",
        )
        .at_most(1_000.0),
        Figure::new(
            "schedules_lateness_max",
            "schedules: lateness max",
            last,
            "ms",
        ),
        Figure::new(
            "schedules_rate",
            "schedules: delivery rate (occurrences / (last arrival − boundary))",
            arrivals.len() as f64 / (last / 1000.0),
            "occurrences/s",
        ),
        Figure::new(
            "schedules_server_cpu_per_occurrence",
            "schedules: server CPU per occurrence (claim + next occurrence, call, record, arm)",
            server_cpu.as_secs_f64() * 1e6 / n as f64,
            "µs",
        ),
        Figure::new(
            "schedules_memory_per_schedule",
            "schedules: server RSS per schedule (after creating − before, / N)",
            per_schedule,
            "bytes",
        ),
        Figure::new(
            "schedules_create_rate",
            "schedules: create rate",
            load.rate(),
            "schedules/s",
        ),
        Figure::new(
            "schedules_server_rss",
            "schedules: server RSS after",
            rss as f64 / 1048576.0,
            "MiB",
        ),
        Figure::new(
            "schedules_server_hwm",
            "schedules: server peak RSS",
            hwm as f64 / 1048576.0,
            "MiB",
        ),
    ];
    write_results(
        "schedules",
        json!({"schedules": n, "tasks": n, "boundary": bench::rfc3339(boundary),
               "created_before_boundary_ms": ms_between(created_by, boundary)}),
        &figures,
        json!({"lateness_ms": lateness}),
    )?;
    Ok(())
}
