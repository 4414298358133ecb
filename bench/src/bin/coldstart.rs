//! The Lambda figures that need no AWS: the bootstrap's size, zipped, for both
//! architectures, and its cold start (process start → first Runtime API poll,
//! `GET /2018-06-01/runtime/invocation/next`), 20 times, against a minimal Runtime API on
//! loopback that records the poll and never answers it. Initialisation makes no AWS call
//! (clients are built from the environment), so AWS_ENDPOINT_URL points at a closed port.
//!
//! `cargo run --release -p bench --bin coldstart -- --x86 BOOTSTRAP --arm64 BOOTSTRAP [--runs N]`
//! (`make bench-aws` builds both with `make build-lambda` and passes them.)

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use bench::{Figure, percentile, write_results};
use serde_json::json;
use tokio::sync::mpsc;

/// Zips `bootstrap` as Lambda wants it (one member named `bootstrap`) and returns its size.
fn zipped_size(bootstrap: &Path) -> anyhow::Result<u64> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(bootstrap, dir.path().join("bootstrap"))?;
    let status = std::process::Command::new("zip")
        .current_dir(dir.path())
        .args(["-q", "-9", "bootstrap.zip", "bootstrap"])
        .status()
        .context("running zip")?;
    anyhow::ensure!(status.success(), "zip failed");
    Ok(std::fs::metadata(dir.path().join("bootstrap.zip"))?.len())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let x86: PathBuf = bench::arg("x86", PathBuf::from("target/bench-lambda/x86_64/bootstrap"));
    let arm: PathBuf = bench::arg(
        "arm64",
        PathBuf::from("target/bench-lambda/arm64/bootstrap"),
    );
    let runs: usize = bench::arg("runs", 20);

    // The Runtime API: every poll is reported, then left hanging.
    let (polls_tx, mut polls) = mpsc::unbounded_channel::<Instant>();
    let init_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = {
        let errors = init_errors.clone();
        axum::Router::new()
            .route(
                "/2018-06-01/runtime/invocation/next",
                axum::routing::get(move || {
                    let _ = polls_tx.send(Instant::now());
                    std::future::pending::<&'static str>()
                }),
            )
            .fallback(move |uri: http::Uri, body: bytes::Bytes| {
                errors
                    .lock()
                    .unwrap()
                    .push(format!("{uri}: {}", String::from_utf8_lossy(&body)));
                async { http::StatusCode::ACCEPTED }
            })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let mut cold_ms = Vec::with_capacity(runs);
    let mut rss_at_poll = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut cmd = tokio::process::Command::new(&x86);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "task-scheduler")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/task-scheduler")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("RUST_LOG", "warn")
            .env("TABLE_NAME", "tasks")
            .env("SCHEDULE_GROUP", "task-scheduler")
            .env(
                "SCHEDULER_ROLE_ARN",
                "arn:aws:iam::123456789012:role/scheduler",
            )
            .env("DELAY_QUEUE_URL", "http://127.0.0.1:9/123456789012/delay")
            .env("DLQ_ARN", "arn:aws:sqs:us-east-1:123456789012:dlq")
            .env("DLQ_URL", "http://127.0.0.1:9/123456789012/dlq")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", x86.display()))?;
        let pid = child.id().context("pid")?;
        let polled = tokio::time::timeout(Duration::from_secs(10), polls.recv())
            .await
            .ok()
            .flatten()
            .with_context(|| {
                format!(
                    "no Runtime API poll within 10 s; init errors: {:?}",
                    init_errors.lock().unwrap()
                )
            })?;
        cold_ms.push((polled - t0).as_secs_f64() * 1000.0);
        rss_at_poll.push(bench::proc_memory(pid as i32)?.0 as f64 / 1e6);
        child.start_kill()?;
        child.wait().await?;
    }
    let mut sorted = cold_ms.clone();
    bench::sort_f64(&mut sorted);
    let mut rss_sorted = rss_at_poll.clone();
    bench::sort_f64(&mut rss_sorted);

    let mut figures = vec![
        Figure::new(
            "lambda_cold_start_median",
            format!("Lambda cold start (x86_64): process start → first Runtime API poll, median of {runs}"),
            percentile(&sorted, 50.0),
            "ms",
        )
        .at_most(20.0),
        Figure::new("lambda_cold_start_p95", "Lambda cold start, p95", percentile(&sorted, 95.0), "ms")
            .at_most(20.0),
        Figure::new(
            "lambda_rss_at_first_poll",
            "Lambda RSS at the first poll (after init, before any request)",
            percentile(&rss_sorted, 50.0),
            "MB",
        ),
    ];
    let mut sizes = json!({});
    for (arch, path) in [("x86_64", &x86), ("arm64", &arm)] {
        let id = if arch == "x86_64" {
            "bootstrap_zip_x86_64"
        } else {
            "bootstrap_zip_arm64"
        };
        let size = zipped_size(path)?;
        let raw = std::fs::metadata(path)?.len();
        sizes[arch] = json!({"zip_bytes": size, "bootstrap_bytes": raw});
        figures.push(
            Figure::new(
                id,
                format!(
                    "bootstrap size zipped, {arch} ({:.1} MB unzipped)",
                    raw as f64 / 1e6
                ),
                size as f64 / 1e6,
                "MB",
            )
            .at_most(6.0),
        );
    }
    write_results(
        "aws_coldstart",
        json!({"runs": runs, "sizes": sizes, "x86_64": x86, "arm64": arm,
               "runtime_api": "a minimal Runtime API stub on loopback (bench/src/bin/coldstart.rs)"}),
        &figures,
        json!({"cold_start_ms": cold_ms, "rss_at_first_poll_mb": rss_at_poll}),
    )?;
    Ok(())
}
