//! The Lambda figures that need no AWS: the bootstrap's size, zipped, for both
//! architectures, and its cold start (process start → first Runtime API poll,
//! `GET /2018-06-01/runtime/invocation/next`), 20 times, against cargo lambda's Runtime API
//! emulator (one `cargo lambda watch --only-lambda-apis`, its version from
//! `cargo-lambda lambda --version` in the results). The bootstrap reaches the emulator through
//! a loopback TCP pass-through proxy that timestamps the first bytes of its first request and
//! checks that request is the poll (anything else, e.g. an init error, fails the run). The
//! emulator holds the poll (no invocation comes). Initialisation makes no AWS call (clients
//! are built from the environment), so AWS_ENDPOINT_URL points at a closed port.
//!
//! `cargo run --release -p bench --bin coldstart -- --x86 BOOTSTRAP --arm64 BOOTSTRAP [--runs N]`
//! (`make bench-aws` builds both with `make build-lambda` and passes them; `cargo-lambda` is
//! `$CARGO_LAMBDA`, else on PATH.)

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use bench::{Figure, percentile, write_results};
use integration_tests::aws::bootstrap_command;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

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

/// The first request the proxy saw on a connection from the bootstrap.
struct FirstRequest {
    /// When its first bytes arrived.
    at: Instant,
    /// Its request line, e.g. `GET /.rt/2018-06-01/runtime/invocation/next HTTP/1.1`.
    line: String,
    /// What was read of it (the whole request unless it is the poll).
    raw: String,
}

/// Whether `buf` holds a whole HTTP/1 request (headers and a Content-Length body).
fn request_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let body_len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    buf.len() >= end + 4 + body_len
}

/// One connection through the proxy: reports its first request, then passes bytes both ways
/// between the bootstrap and the emulator.
async fn pass_through(
    mut inbound: TcpStream,
    emulator: u16,
    report: mpsc::UnboundedSender<FirstRequest>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let n = inbound.read(&mut chunk).await?;
    let at = Instant::now();
    if n == 0 {
        return Ok(());
    }
    buf.extend_from_slice(&chunk[..n]);
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 65536 {
        let n = inbound.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let line = text.lines().next().unwrap_or_default().to_owned();
    let raw = if line.contains("/runtime/invocation/next") {
        text
    } else {
        // Not the poll: read the rest of it (its body says why), briefly, for the report.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while !request_complete(&buf) && buf.len() < 1 << 20 {
                match inbound.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        String::from_utf8_lossy(&buf).into_owned()
    };
    let _ = report.send(FirstRequest { at, line, raw });
    let mut outbound = TcpStream::connect(("127.0.0.1", emulator)).await?;
    outbound.write_all(&buf).await?;
    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
    Ok(())
}

/// `cargo-lambda lambda --version`, e.g. `cargo-lambda 1.9.2 (...)`.
fn cargo_lambda_version() -> anyhow::Result<String> {
    let program = integration_tests::aws::cargo_lambda();
    let out = std::process::Command::new(&program)
        .args(["lambda", "--version"])
        .output()
        .with_context(|| format!("running {program} lambda --version"))?;
    anyhow::ensure!(out.status.success(), "{program} lambda --version failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let x86: PathBuf = bench::arg("x86", PathBuf::from("target/bench-lambda/x86_64/bootstrap"));
    let arm: PathBuf = bench::arg(
        "arm64",
        PathBuf::from("target/bench-lambda/arm64/bootstrap"),
    );
    let runs: usize = bench::arg("runs", 20);

    // The Runtime API: cargo lambda's emulator, behind a loopback proxy that reports the
    // first request of every connection.
    let version = cargo_lambda_version()?;
    let (mut emulator, emulator_port) = integration_tests::aws::runtime_emulator().await?;
    let (requests_tx, mut requests) = mpsc::unbounded_channel::<FirstRequest>();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let _ = inbound.set_nodelay(true);
            tokio::spawn(pass_through(inbound, emulator_port, requests_tx.clone()));
        }
    });
    let runtime_api = format!("http://{proxy}/.rt");

    let mut cold_ms = Vec::with_capacity(runs);
    let mut rss_at_poll = Vec::with_capacity(runs);
    for run in 0..runs {
        while requests.try_recv().is_ok() {}
        let env: Vec<(String, String)> = [
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("TABLE_NAME", "tasks"),
            ("SCHEDULE_GROUP", "task-scheduler"),
            (
                "SCHEDULER_ROLE_ARN",
                "arn:aws:iam::123456789012:role/scheduler",
            ),
            ("DELAY_QUEUE_URL", "http://127.0.0.1:9/123456789012/delay"),
            ("DLQ_ARN", "arn:aws:sqs:us-east-1:123456789012:dlq"),
            (
                "FAILED_TASKS_QUEUE_URL",
                "http://127.0.0.1:9/123456789012/failed-tasks",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut cmd = bootstrap_command(&x86, &env, &runtime_api, None)?;
        // The smallest memory size, and quiet: the figure is the start, not the logging.
        cmd.env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", x86.display()))?;
        let pid = child.id().context("pid")?;
        let first = tokio::time::timeout(Duration::from_secs(10), requests.recv())
            .await
            .ok()
            .flatten()
            .with_context(|| format!("run {run}: no Runtime API request within 10 s"))?;
        anyhow::ensure!(
            first.line.contains("/runtime/invocation/next"),
            "run {run}: the bootstrap's first Runtime API request is not the poll:\n{}",
            first.raw
        );
        let polled = first.at;
        cold_ms.push((polled - t0).as_secs_f64() * 1000.0);
        rss_at_poll.push(bench::proc_memory(pid as i32)?.0 as f64 / 1e6);
        child.kill().await?;
    }
    emulator.kill().await?;
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
        "cargo_lambda_version": version,
        "runtime_api": format!(
            "cargo lambda's Runtime API emulator (`cargo lambda watch --only-lambda-apis`, \
             {version}) behind a loopback TCP proxy that timestamps the first bytes of \
             the bootstrap's first request, checked to be the \
             GET /2018-06-01/runtime/invocation/next poll (bench/src/bin/coldstart.rs)"
        )}),
        &figures,
        json!({"cold_start_ms": cold_ms, "rss_at_first_poll_mb": rss_at_poll}),
    )?;
    Ok(())
}
