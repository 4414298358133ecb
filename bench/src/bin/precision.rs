//! Precision at rest: N tasks (100) spread over 10 s on an otherwise idle server; lateness is
//! the receiver's arrival wall time − run_at.
//!
//! `cargo run --release -p bench --bin precision -- [--tasks N] [--spread-ms MS]`

use bench::{
    Client, Figure, Receiver, Server, data_dir, ms_between, percentile, quick, write_results,
};
use chrono::{TimeDelta, Utc};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tasks: u64 = bench::arg("tasks", if quick() { 30 } else { 100 });
    let spread_ms: i64 = bench::arg("spread-ms", 10_000);
    let dir = data_dir("precision")?;
    let receiver = Receiver::start().await?;
    let server = Server::start(dir.path()).await?;
    println!(
        "precision: {tasks} tasks over {spread_ms} ms, server pid {}",
        server.pid
    );

    // Off whole seconds and whole milliseconds steps, so no timer granularity is flattered.
    let base = bench::millis(Utc::now() + TimeDelta::milliseconds(1_500));
    let run_at: Vec<_> = (0..tasks as i64)
        .map(|i| base + TimeDelta::milliseconds(i * spread_ms / tasks as i64 + (i * 37) % 97))
        .collect();
    let mut client = Client::connect(server.addr).await?;
    for (i, at) in run_at.iter().enumerate() {
        let (status, body) = client
            .post(
                "/tasks",
                bench::task_body(&receiver.url(&format!("/p/{i}")), *at, i as u64),
            )
            .await?;
        anyhow::ensure!(
            status == 201,
            "create: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    anyhow::ensure!(Utc::now() < base, "creating took longer than the lead time");
    let last = *run_at.last().expect("tasks > 0");
    let all = receiver
        .wait_for(tasks, last + TimeDelta::seconds(30))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    server.stop(std::time::Duration::from_secs(30)).await?;

    let arrivals = receiver.arrivals();
    let mut lateness: Vec<f64> = arrivals
        .iter()
        .map(|(path, at)| {
            let i: usize = path.trim_start_matches("/p/").parse().expect("our path");
            ms_between(run_at[i], *at)
        })
        .collect();
    bench::sort_f64(&mut lateness);
    let figures = vec![
        Figure::check(
            "precision_all_once",
            format!(
                "precision: all {tasks} delivered once ({} arrivals)",
                arrivals.len()
            ),
            all && arrivals.len() as u64 == tasks,
        ),
        Figure::new(
            "precision_lateness_min",
            "precision at rest: lateness min",
            lateness[0],
            "ms",
        ),
        Figure::new(
            "precision_lateness_p50",
            "precision at rest: lateness p50",
            percentile(&lateness, 50.0),
            "ms",
        ),
        Figure::new(
            "precision_lateness_p99",
            "precision at rest: lateness p99",
            percentile(&lateness, 99.0),
            "ms",
        )
        .at_most(10.0),
        Figure::new(
            "precision_lateness_max",
            "precision at rest: lateness max",
            *lateness.last().unwrap(),
            "ms",
        ),
        Figure::check(
            "precision_never_early",
            "precision at rest: no delivery before run_at",
            lateness[0] >= 0.0,
        ),
    ];
    write_results(
        "precision",
        json!({"tasks": tasks, "spread_ms": spread_ms}),
        &figures,
        json!({"lateness_ms": lateness}),
    )?;
    Ok(())
}
