//! Scale: N pending tasks (1,000,000) created through the API (64 in flight, as a client
//! would), then the server's memory (VmRSS, VmHWM), a restart (SIGTERM, start again: process
//! start → "listening" and → `/health` 200) with a probe task due 4 s after the stop must be
//! delivered on time, and a crash restart (`kill -9`, start again).
//!
//! `cargo run --release -p bench --bin scale -- [--tasks N]`

use std::{sync::Arc, time::Duration};

use bench::{Figure, Receiver, Server, data_dir, ms_between, quick, write_results};
use chrono::{TimeDelta, Utc};
use serde_json::json;

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tasks: u64 = bench::arg("tasks", if quick() { 50_000 } else { 1_000_000 });
    let dir = data_dir("scale")?;
    let receiver = Receiver::start().await?;
    let server = Server::start(dir.path()).await?;
    println!("scale: {tasks} pending tasks, server pid {}", server.pid);

    // Due between one and two hours from now: all pending through the whole benchmark.
    let base = bench::millis(Utc::now() + TimeDelta::hours(1));
    let body = Arc::new(move |i: u64| {
        bench::task_body(
            "http://127.0.0.1:9/never",
            base + TimeDelta::milliseconds((i * 3_600_000 / tasks) as i64),
            i,
        )
    });
    let load = bench::drive(&server, tasks, 64, body).await?;
    anyhow::ensure!(load.errors == 0, "creates failed: {:?}", load.first_error);
    println!(
        "scale: created {} in {:.1} s ({:.0}/s)",
        load.ok,
        load.elapsed.as_secs_f64(),
        load.rate()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, hwm) = server.memory()?;

    // The probe: due 4 s from now, i.e. shortly after the restart below.
    let probe_at = bench::millis(Utc::now() + TimeDelta::seconds(4));
    let mut client = bench::Client::connect(server.addr).await?;
    let (status, _) = client
        .post(
            "/tasks",
            bench::task_body(&receiver.url("/probe"), probe_at, 0),
        )
        .await?;
    anyhow::ensure!(status == 201, "probe create: {status}");
    drop(client);
    let stop_took = server.stop(Duration::from_secs(60)).await?;

    // Restart: process start → listening → /health 200.
    let server = Server::start(dir.path()).await?;
    let restart_listening = server.listening_after;
    let restart_health = server.health_after;
    let pending_after = server.pending_at_start;
    let ready_before_probe = Utc::now() < probe_at;
    let probe_ok = receiver
        .wait_for(1, probe_at + TimeDelta::seconds(30))
        .await;
    let probe_late = receiver
        .arrivals()
        .first()
        .map_or(f64::NAN, |(_, at)| ms_between(probe_at, *at));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_restart, _) = server.memory()?;

    // A crash restart: kill -9, start again.
    server.kill9().await?;
    let server = Server::start(dir.path()).await?;
    let crash_health = server.health_after;
    server.stop(Duration::from_secs(60)).await?;
    let disk = dir_size(dir.path());

    let figures = vec![
        Figure::new(
            "scale_rss",
            format!("server RSS with {tasks} pending (after creating them)"),
            mib(rss),
            "MiB",
        )
        .at_most(300.0),
        Figure::new(
            "scale_hwm",
            "server peak RSS (VmHWM) while creating them",
            mib(hwm),
            "MiB",
        ),
        Figure::new(
            "scale_rss_restarted",
            "server RSS after the restart (idle, all pending)",
            mib(rss_restart),
            "MiB",
        ),
        Figure::new(
            "scale_restart_ready",
            "restart to ready: process start → /health 200",
            restart_health.as_secs_f64() * 1000.0,
            "ms",
        )
        .at_most(3_000.0),
        Figure::new(
            "scale_restart_listening",
            "restart: process start → listening line",
            restart_listening.as_secs_f64() * 1000.0,
            "ms",
        ),
        Figure::new(
            "scale_crash_restart_ready",
            "restart after kill -9: start → /health 200",
            crash_health.as_secs_f64() * 1000.0,
            "ms",
        )
        .at_most(3_000.0),
        Figure::new(
            "scale_stop",
            "graceful stop (SIGTERM → exit)",
            stop_took.as_secs_f64() * 1000.0,
            "ms",
        ),
        Figure::check(
            "scale_pending_after_restart",
            format!("all pending after the restart ({pending_after:?} reported)"),
            pending_after == Some(tasks + 1),
        ),
        Figure::check(
            "scale_probe_delivered",
            "the task due 4 s after the stop is delivered after the restart",
            probe_ok && ready_before_probe,
        ),
        Figure::new(
            "scale_probe_lateness",
            "its lateness (arrival − run_at)",
            probe_late,
            "ms",
        )
        .at_most(10.0),
        Figure::new(
            "scale_create_rate",
            format!("create rate into a growing store ({tasks})"),
            load.rate(),
            "tasks/s",
        ),
        Figure::new(
            "scale_disk",
            "store on disk (tasks.db + WAL)",
            mib(disk),
            "MiB",
        ),
    ];
    write_results(
        "scale",
        json!({"tasks": tasks, "create_elapsed_s": load.elapsed.as_secs_f64()}),
        &figures,
        json!({"throughput": load.series}),
    )?;
    Ok(())
}
