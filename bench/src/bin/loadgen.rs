//! Create throughput: N tasks due in an hour, posted over 64 keep-alive connections (one
//! request in flight on each), against the durable store. Then `kill -9` and a count of the
//! rows on disk: every 201 must have survived.
//!
//! `cargo run --release -p bench --bin loadgen -- [--tasks N] [--concurrency C]`

use std::sync::Arc;

use bench::{Figure, Server, data_dir, percentile, quick, write_results};
use chrono::{TimeDelta, Utc};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tasks: u64 = bench::arg("tasks", if quick() { 20_000 } else { 300_000 });
    let concurrency: usize = bench::arg("concurrency", 64);
    let dir = data_dir("loadgen")?;
    let server = Server::start(dir.path()).await?;
    println!(
        "loadgen: {tasks} creates, {concurrency} in flight, server pid {} on {}",
        server.pid, server.addr
    );

    // Due in an hour, spread over that hour's next hour; the target is never called.
    let base = bench::millis(Utc::now() + TimeDelta::hours(1));
    let body = Arc::new(move |i: u64| {
        bench::task_body(
            "http://127.0.0.1:9/never",
            base + TimeDelta::milliseconds((i % 3_600_000) as i64),
            i,
        )
    });
    let load = bench::drive(&server, tasks, concurrency, body).await?;
    let (rss, hwm) = server.memory()?;

    // Durability: a crash right now, then count what is on disk.
    let pid = server.pid;
    server.kill9().await?;
    let conn = rusqlite::Connection::open(dir.path().join("tasks.db"))?;
    let on_disk: u64 = conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?;
    drop(conn);

    let lat = &load.latencies_us;
    let steady: Vec<f64> = {
        // The middle of the run: drop the first and last sample (ramp-up, tail).
        let s = &load.series;
        let mut v: Vec<f64> = if s.len() > 2 {
            s[1..s.len() - 1].iter().map(|p| p.1).collect()
        } else {
            s.iter().map(|p| p.1).collect()
        };
        bench::sort_f64(&mut v);
        v
    };
    let figures = vec![
        Figure::new(
            "create_throughput",
            format!("local create throughput ({concurrency} in flight, durable)"),
            load.rate(),
            "tasks/s",
        )
        .at_least(7_500.0),
        Figure::new(
            "create_throughput_median_window",
            "create throughput, median 250 ms window",
            if steady.is_empty() {
                0.0
            } else {
                percentile(&steady, 50.0)
            },
            "tasks/s",
        ),
        Figure::new(
            "create_latency_p50",
            "create latency p50",
            percentile(lat, 50.0) as f64 / 1000.0,
            "ms",
        ),
        Figure::new(
            "create_latency_p99",
            "create latency p99",
            percentile(lat, 99.0) as f64 / 1000.0,
            "ms",
        ),
        Figure::new(
            "create_server_cpu_per_task",
            "server CPU per create (user+sys)",
            load.server_cpu.as_secs_f64() * 1e6 / load.ok.max(1) as f64,
            "µs",
        ),
        Figure::new(
            "create_client_cpu_per_task",
            "load generator CPU per create (same 2 cores)",
            load.client_cpu.as_secs_f64() * 1e6 / load.ok.max(1) as f64,
            "µs",
        ),
        Figure::check(
            "create_all_201",
            format!("every create answered 201 ({} errors)", load.errors),
            load.errors == 0 && load.ok == tasks,
        ),
        Figure::check(
            "create_durable",
            format!(
                "every 201 on disk after kill -9 ({on_disk} rows, {} acknowledged)",
                load.ok
            ),
            on_disk == load.ok,
        ),
        Figure::new(
            "create_server_rss",
            "server RSS after the run",
            rss as f64 / 1048576.0,
            "MiB",
        ),
        Figure::new(
            "create_server_hwm",
            "server peak RSS during the run",
            hwm as f64 / 1048576.0,
            "MiB",
        ),
    ];
    if let Some(e) = &load.first_error {
        eprintln!("loadgen: first error: {e}");
    }
    write_results(
        "loadgen",
        json!({"tasks": tasks, "concurrency": concurrency, "server_pid": pid,
               "elapsed_s": load.elapsed.as_secs_f64()}),
        &figures,
        json!({"throughput": load.series}),
    )?;
    Ok(())
}
