//! The one way the harness starts the product's binary (the black-box tests' server, the
//! rehearsal's function, the benchmarks' server and function): without any of the product's
//! variables from the caller's environment, its output collected line by line, its
//! "listening" line reported.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::Context;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::oneshot,
};

/// Every environment variable the product reads (both hosts, their logging, and the
/// variable that switches the binary into a Lambda bootstrap). A child never inherits these
/// from the shell that runs the tests: a developer's `SCHEDULER_RATE_LIMIT` or
/// `AWS_LAMBDA_RUNTIME_API` would otherwise change what is being tested.
pub const PRODUCT_ENV: &[&str] = &[
    // The local host.
    "PORT",
    "SCHEDULER_DATA_DIR",
    "SCHEDULER_API_TOKENS",
    "SCHEDULER_MAX_CONCURRENCY",
    "SCHEDULER_TIMER_CAPACITY",
    "SCHEDULER_RATE_LIMIT",
    "SCHEDULER_ALLOWED_TARGETS",
    "SCHEDULER_SIGNING_SECRET",
    "SCHEDULER_SWEEP_INTERVAL_SECONDS",
    // The AWS host, as the CDK app sets it.
    "TABLE_NAME",
    "SCHEDULE_GROUP",
    "SCHEDULER_ROLE_ARN",
    "DELAY_QUEUE_URL",
    "DLQ_ARN",
    "FAILED_TASKS_QUEUE_URL",
    "TASK_RETENTION_DAYS",
    "SIGNING_SECRET_ARN",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_ENDPOINT_URL",
    // The client (`tasks`, `console`).
    "TASK_SCHEDULER_ENDPOINT",
    "TASK_SCHEDULER_TOKEN",
    "AWS_REGION",
    // Both.
    "LOG_FORMAT",
    "RUST_LOG",
];

/// The binary under test: `$TASK_SCHEDULER_BIN`, else `<workspace>/target/debug/task-scheduler`
/// (or under `$CARGO_TARGET_DIR`). `make test` builds it first.
pub fn binary_path() -> PathBuf {
    match std::env::var_os("TASK_SCHEDULER_BIN") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("debug").join("task-scheduler"),
    }
}

/// The workspace's target directory (`$CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

/// What the child inherits from the caller's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inherit {
    /// Everything but [`PRODUCT_ENV`] (a local server: `HOME`, `TMPDIR`, ... stay).
    AllButProduct,
    /// `PATH` alone (a Lambda function: exactly the variables its deployment sets).
    PathOnly,
}

/// The product's binary `bin` as a command: the caller's product variables removed (or the
/// whole environment, per `inherit`), stdin closed, stdout and stderr piped for [`spawn`],
/// killed when dropped. An error saying `how_to_build` it when `bin` does not exist.
pub fn command(bin: &Path, inherit: Inherit, how_to_build: &str) -> anyhow::Result<Command> {
    anyhow::ensure!(
        bin.is_file(),
        "{} does not exist: {how_to_build}",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    match inherit {
        Inherit::AllButProduct => {
            for k in PRODUCT_ENV {
                cmd.env_remove(k);
            }
        }
        Inherit::PathOnly => {
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(cmd)
}

/// Everything a child printed (stdout, and stderr prefixed `[stderr] `), as read.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    pub(crate) fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// The JSON lines (logs, EMF metrics), parsed.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// The JSON log lines whose message contains `needle`.
    pub fn logs_with_message(&self, needle: &str) -> Vec<Value> {
        self.json_lines()
            .into_iter()
            .filter(|v| log_message(v).is_some_and(|m| m.contains(needle)))
            .collect()
    }
}

/// The message of a JSON log line (tracing's `fields.message`, or a flat `message`).
pub fn log_message(v: &Value) -> Option<&str> {
    v.pointer("/fields/message")
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)
}

/// The server's "listening on http://ADDR" log line, when it came.
#[derive(Debug)]
pub struct Listening {
    pub at: Instant,
    pub addr: SocketAddr,
    /// The whole JSON line (its other fields, e.g. `pending`).
    pub line: Value,
}

fn listening(line: &str) -> Option<Listening> {
    let v: Value = serde_json::from_str(line).ok()?;
    let rest = log_message(&v)?.strip_prefix("listening on http://")?;
    let addr = v
        .pointer("/fields/addr")
        .or_else(|| v.get("addr"))
        .and_then(Value::as_str)
        .unwrap_or(rest)
        .parse()
        .ok()?;
    Some(Listening {
        at: Instant::now(),
        addr,
        line: v,
    })
}

/// A started child: the process, its output so far, and its first "listening" line (the
/// sender is dropped, without one, when stdout closes).
pub struct Started {
    pub child: Child,
    pub output: Output,
    pub listening: oneshot::Receiver<Listening>,
}

/// Spawns `cmd` (from [`command`]) and collects its output.
pub fn spawn(mut cmd: Command) -> anyhow::Result<Started> {
    let program = cmd.as_std().get_program().to_owned();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    let output = Output::default();
    let (tx, listening) = oneshot::channel();
    drain(
        child.stdout.take().context("stdout is not piped")?,
        output.clone(),
        "",
        Some(tx),
    );
    drain(
        child.stderr.take().context("stderr is not piped")?,
        output.clone(),
        "[stderr] ",
        None,
    );
    Ok(Started {
        child,
        output,
        listening,
    })
}

/// Reads a child's pipe line by line until it closes, so the child never blocks on a full
/// pipe; the first "listening" line is reported on `on_listening`.
fn drain(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    output: Output,
    prefix: &'static str,
    mut on_listening: Option<oneshot::Sender<Listening>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if on_listening.is_some()
                && let Some(l) = listening(&line)
            {
                let _ = on_listening.take().expect("checked").send(l);
            }
            output.push(format!("{prefix}{line}"));
        }
    });
}
