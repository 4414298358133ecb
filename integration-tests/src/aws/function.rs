//! The function: the real binary polling a Lambda Runtime API (cargo lambda's emulator), as
//! Lambda runs the bootstrap; its wall clock moved by libfaketime when a test plays a moment
//! hours ahead.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use tokio::process::{Child, Command};

use super::FUNCTION;
use crate::launcher::{Inherit, Output, Started, command, log_message, spawn};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The `cargo-lambda` program: `$CARGO_LAMBDA`, else `cargo-lambda` on PATH.
pub fn cargo_lambda() -> String {
    std::env::var("CARGO_LAMBDA").unwrap_or_else(|_| "cargo-lambda".into())
}

/// Starts cargo lambda's Runtime API emulator (`cargo lambda watch --only-lambda-apis`) on a
/// free loopback port, from the workspace root, and waits until it accepts connections.
/// Returns the process (killed on drop) and its port; a bootstrap reaches it as
/// `AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:{port}/.rt`.
pub async fn runtime_emulator() -> anyhow::Result<(Child, u16)> {
    let port = free_port();
    let cargo_lambda = cargo_lambda();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut watch = Command::new(&cargo_lambda)
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "--invoke-address",
            "127.0.0.1",
        ])
        .args(["--invoke-port", &port.to_string()])
        .current_dir(&workspace)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("starting {cargo_lambda} lambda watch (pip install cargo-lambda)")
        })?;
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Some(status) = watch.try_wait()? {
            bail!("cargo lambda watch exited: {status}");
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("cargo lambda watch did not listen on {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((watch, port))
}

/// libfaketime, which moves a child's wall clock: `$LIBFAKETIME`, else Debian's path for this
/// architecture (`make test-aws` installs the package when it is missing).
pub fn libfaketime() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("LIBFAKETIME").map_or_else(
        || {
            PathBuf::from(format!(
                "/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1",
                std::env::consts::ARCH
            ))
        },
        PathBuf::from,
    );
    // A missing preload is only a warning of the dynamic loader: the clock would silently
    // stay put.
    ensure!(
        path.is_file(),
        "{} is missing: `make test-aws` installs it (apt-get install libfaketime)",
        path.display()
    );
    Ok(path)
}

/// The environment that moves a child's wall clock (`Utc::now()`, `SystemTime`) by `offset`,
/// to the millisecond, through libfaketime; its monotonic clock (timers, timeouts) is real.
pub fn moved_clock_env(offset: TimeDelta) -> anyhow::Result<Vec<(String, String)>> {
    Ok(vec![
        (
            "LD_PRELOAD".into(),
            libfaketime()?.to_string_lossy().into_owned(),
        ),
        (
            "FAKETIME".into(),
            format!("{:+.3}", offset.num_milliseconds() as f64 / 1000.0),
        ),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ])
}

/// How long a function gets for its cold start ("lambda host ready").
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// `binary` as a Lambda bootstrap polling the Runtime API at `runtime_api` (the value of
/// `AWS_LAMBDA_RUNTIME_API`), with exactly `env` and the variables Lambda sets, its wall
/// clock moved by `clock_offset`.
pub fn bootstrap_command(
    binary: &Path,
    env: &[(String, String)],
    runtime_api: &str,
    clock_offset: Option<TimeDelta>,
) -> anyhow::Result<Command> {
    let mut cmd = command(
        binary,
        Inherit::PathOnly,
        "build it with `cargo build -p task-scheduler` (the rehearsal) or `make bench-aws`",
    )?;
    cmd.envs(env.iter().cloned())
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        // cargo lambda's `--only-lambda-apis` serves the function `_`.
        .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/task-scheduler")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "rehearsal")
        .env("RUST_LOG", "info");
    if let Some(offset) = clock_offset {
        cmd.envs(moved_clock_env(offset)?);
    }
    Ok(cmd)
}

/// Starts [`bootstrap_command`] and returns once the function logged "lambda host ready",
/// having checked that the line's timestamp reads the moved clock.
pub async fn start_bootstrap(
    binary: &Path,
    env: &[(String, String)],
    runtime_api: &str,
    clock_offset: Option<TimeDelta>,
) -> anyhow::Result<Started> {
    let cmd = bootstrap_command(binary, env, runtime_api, clock_offset)?;
    let offset = clock_offset.unwrap_or_default();
    let spawned = Utc::now() + offset;
    let mut started = spawn(cmd)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let ready_at = loop {
        let ready = started
            .output
            .json_lines()
            .into_iter()
            .find(|v| log_message(v) == Some("lambda host ready"));
        if let Some(line) = ready {
            break line["timestamp"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .with_context(|| format!("no timestamp in {line}"))?
                .to_utc();
        }
        if let Some(status) = started.child.try_wait()? {
            bail!(
                "the function exited ({status}) before it was ready:\n{}",
                started.output.text()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the function was not ready within {READY_TIMEOUT:?}:\n{}",
            started.output.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let read = Utc::now() + offset;
    ensure!(
        spawned <= ready_at && ready_at <= read,
        "the function's clock read {ready_at} when it was ready, expected between {spawned} and {read} (moved by {offset}): is libfaketime preloaded?"
    );
    Ok(started)
}

/// The function: cargo lambda's Runtime API (`watch --only-lambda-apis`) and the real binary
/// polling it, as Lambda runs the bootstrap. Both die with this value.
pub struct Function {
    pub port: u16,
    watch: Child,
    bin: Child,
    /// What the binary printed: JSON logs and EMF metrics.
    pub output: Output,
    http: reqwest::Client,
}

impl Function {
    /// Starts the Runtime API and the binary with `env`, its wall clock moved by
    /// `clock_offset` when given.
    pub async fn start(
        env: &[(String, String)],
        clock_offset: Option<TimeDelta>,
    ) -> anyhow::Result<Function> {
        Self::start_binary(&crate::binary_path(), env, clock_offset).await
    }

    /// [`start`](Self::start) with another build of the binary (the benchmarks' release
    /// bootstrap).
    pub async fn start_binary(
        binary: &Path,
        env: &[(String, String)],
        clock_offset: Option<TimeDelta>,
    ) -> anyhow::Result<Function> {
        let (watch, port) = runtime_emulator().await?;
        let runtime_api = format!("http://127.0.0.1:{port}/.rt");
        let Started { child, output, .. } =
            start_bootstrap(binary, env, &runtime_api, clock_offset).await?;
        Ok(Function {
            port,
            watch,
            bin: child,
            output,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()?,
        })
    }

    /// Invokes the function synchronously (the Lambda Invoke API) and returns its answer.
    pub async fn invoke(&self, event: &Value) -> anyhow::Result<Value> {
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{FUNCTION}/invocations",
            self.port
        );
        let resp = self.http.post(&url).json(event).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!(
                "invoke answered {status}: {text}\nlogs:\n{}",
                self.log_text()
            );
        }
        serde_json::from_str(&text).with_context(|| format!("invoke answer is not JSON: {text}"))
    }

    pub fn log_text(&self) -> String {
        self.output.text()
    }

    /// The binary's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.bin.id()
    }

    /// The EMF metric values printed so far, by metric name.
    pub fn metric_values(&self, name: &str) -> Vec<f64> {
        metric_values(&self.output, name)
    }

    pub async fn stop(mut self) {
        let _ = self.bin.kill().await;
        let _ = self.watch.kill().await;
    }
}

/// The values of the EMF metric `name` in a function's output.
pub fn metric_values(output: &Output, name: &str) -> Vec<f64> {
    output
        .json_lines()
        .into_iter()
        .filter(|v| v["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TaskScheduler")
        .filter_map(|v| v[name].as_f64())
        .collect()
}
