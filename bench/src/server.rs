//! The server under test: the release `task-scheduler serve` on loopback, started through
//! the black-box tests' launcher, measured through /proc.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use integration_tests::launcher::{Inherit, Output, Started, command, spawn};
use tokio::process::Child;

use crate::{Client, cli::build_dir};

/// The server under test: `$TASK_SCHEDULER_BIN`, else the `task-scheduler` built beside this
/// bench binary (same profile).
pub fn server_binary() -> PathBuf {
    match std::env::var_os("TASK_SCHEDULER_BIN") {
        Some(p) => PathBuf::from(p),
        None => build_dir().join("task-scheduler"),
    }
}

/// A fresh data directory on the real disk (fsync must cost what it costs).
pub fn data_dir(name: &str) -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("task-scheduler-bench-{name}-"))
        .tempdir()?)
}

/// The server process. Dropping it kills it (SIGKILL to its PID).
pub struct Server {
    child: Child,
    pub pid: i32,
    pub addr: SocketAddr,
    /// Process start → the "listening" log line.
    pub listening_after: Duration,
    /// Process start → the first `GET /health` answered 200.
    pub health_after: Duration,
    /// The `pending` field of the "listening" line.
    pub pending_at_start: Option<u64>,
    output: Output,
}

impl Server {
    /// Starts the release server on 127.0.0.1:0 over `data_dir`, rate limit off, logging at
    /// `warn` (plus the "listening" line), and waits until `/health` answers 200.
    pub async fn start(data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(data_dir, &[]).await
    }

    pub async fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut cmd = command(
            &server_binary(),
            Inherit::AllButProduct,
            "build it with `make bench` (or the bench binary's own profile)",
        )?;
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .env("SCHEDULER_DATA_DIR", data_dir)
            .env("SCHEDULER_RATE_LIMIT", "0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,shared::local=info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let t0 = Instant::now();
        let Started {
            mut child,
            output,
            listening,
        } = spawn(cmd)?;
        let pid = i32::try_from(child.id().context("child has no pid")?)?;
        let listening = match tokio::time::timeout(Duration::from_secs(120), listening).await {
            Ok(Ok(l)) => l,
            _ => {
                let _ = child.start_kill();
                bail!(
                    "the server did not print its listening line; output:\n{}",
                    output.text()
                );
            }
        };
        let health_after = loop {
            if health(listening.addr).await {
                break t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("/health never answered 200");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        Ok(Self {
            child,
            pid,
            addr: listening.addr,
            listening_after: listening.at - t0,
            health_after,
            pending_at_start: listening.line["fields"]["pending"].as_u64(),
            output,
        })
    }

    pub fn logs(&self) -> Vec<String> {
        self.output.lines()
    }

    /// `(VmRSS, VmHWM)` in bytes.
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        proc_memory(self.pid)
    }

    /// CPU time (user + system) the server has used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        proc_cpu(self.pid)
    }

    /// SIGTERM and wait for the exit (SIGKILL after `grace`). Returns how long it took.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        // SAFETY: kill(2) on our own child's PID, which we have not reaped yet.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.child.start_kill()?;
            self.child.wait().await?;
            bail!("the server did not stop within {grace:?} of SIGTERM");
        }
        Ok(t0.elapsed())
    }

    /// SIGKILL (a crash) and reap.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// `(VmRSS, VmHWM)` of a process in bytes, from /proc/PID/status.
pub fn proc_memory(pid: i32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} missing"))?;
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// User + system CPU time of a process, from /proc/PID/stat.
pub fn proc_cpu(pid: i32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// `GET /health` on a fresh connection: true on 200.
pub async fn health(addr: SocketAddr) -> bool {
    let Ok(mut c) = Client::connect(addr).await else {
        return false;
    };
    matches!(c.get("/health").await, Ok((200, _)))
}
