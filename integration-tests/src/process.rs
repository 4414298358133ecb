//! The server under test: `task-scheduler serve` as a child process ([`App`], started
//! through [`Launch`]), watched until it exits.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::bail;
use tokio::{
    process::Child,
    sync::{mpsc, oneshot, watch},
};

use crate::Api;
use crate::launcher::{Inherit, Listening, Output, Started, binary_path, command, spawn};

/// How long a server gets to print its "listening" line.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
enum DataDir {
    Temp(Arc<tempfile::TempDir>),
    Given(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            Self::Temp(t) => t.path(),
            Self::Given(p) => p,
        }
    }
}

/// How to start the server; [`App::spawn`] and [`App::spawn_in`] cover the usual cases.
#[derive(Clone)]
pub struct Launch {
    data_dir: DataDir,
    env: Vec<(String, String)>,
    args: Vec<String>,
    token: Option<String>,
}

impl Default for Launch {
    fn default() -> Self {
        Self::new()
    }
}

impl Launch {
    /// A fresh temporary data directory, `PORT=0`, JSON logs at `info`.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("task-scheduler-it-")
            .tempdir()
            .expect("temp dir");
        Self {
            data_dir: DataDir::Temp(Arc::new(dir)),
            env: Vec::new(),
            args: vec!["serve".into()],
            token: None,
        }
    }

    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = DataDir::Given(dir.into());
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// The bearer token [`App::api`] sends by default.
    pub fn token(mut self, t: impl Into<String>) -> Self {
        self.token = Some(t.into());
        self
    }

    fn start(&self) -> anyhow::Result<(Proc, Output, oneshot::Receiver<Listening>)> {
        let mut cmd = command(
            &binary_path(),
            Inherit::AllButProduct,
            "build it with `cargo build -p task-scheduler` (or set TASK_SCHEDULER_BIN)",
        )?;
        cmd.args(&self.args)
            .env("PORT", "0")
            .env("SCHEDULER_DATA_DIR", self.data_dir.path())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let Started {
            child,
            output,
            listening,
        } = spawn(cmd)?;
        let proc = Proc::watch(child, output.clone());
        Ok((proc, output, listening))
    }

    /// Starts the server and waits for its "listening" line.
    pub async fn spawn(self) -> anyhow::Result<App> {
        let (mut proc, output, rx) = self.start()?;
        let addr = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(listening)) => listening.addr,
            Ok(Err(_)) => {
                // stdout closed without the line: the process is exiting.
                let status = proc.wait_exit(Duration::from_secs(5)).await;
                bail!(
                    "the server exited before listening ({status:?}); its output:\n{}",
                    output.text()
                );
            }
            Err(_) => {
                proc.kill().await;
                bail!(
                    "the server did not log \"listening on http://...\" within {START_TIMEOUT:?}; its output so far:\n{}",
                    output.text()
                );
            }
        };
        // `--listen 0.0.0.0:0` reports 0.0.0.0; connect over loopback.
        let connect = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        Ok(App {
            proc: Some(proc),
            addr: connect,
            output,
            launch: self,
            client: http_client(),
        })
    }

    /// Runs the server expecting it to exit on its own (e.g. a refused configuration):
    /// its exit status and output, or an error if it is still running after `within`.
    pub async fn run_to_exit(self, within: Duration) -> anyhow::Result<(ExitStatus, Output)> {
        let (mut proc, output, _rx) = self.start()?;
        match proc.wait_exit(within).await {
            Some(status) => {
                // Let the readers take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok((status, output))
            }
            None => {
                proc.kill().await;
                bail!(
                    "still running after {within:?}; its output:\n{}",
                    output.text()
                )
            }
        }
    }
}

/// A child process owned by a monitor task, which reaps it and records its exit in the
/// output (`[exit] ...`), so an unexpected death shows in every failure message. Signals go
/// through the monitor, so they only ever reach our own un-reaped child.
struct Proc {
    pid: Option<u32>,
    signals: mpsc::UnboundedSender<libc::c_int>,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl Proc {
    fn watch(mut child: Child, output: Output) -> Self {
        let pid = child.id();
        let (signals, mut rx) = mpsc::unbounded_channel::<libc::c_int>();
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(sig) = rx.recv() => {
                        if let Some(pid) = child.id() {
                            // SAFETY: no memory-safety preconditions; `pid` is our child,
                            // not yet reaped (only this task waits on it).
                            unsafe { libc::kill(pid as libc::pid_t, sig) };
                        }
                    }
                }
            };
            match status {
                Ok(status) => {
                    output.push(format!("[exit] {status}"));
                    let _ = exit_tx.send(Some(status));
                }
                Err(e) => output.push(format!("[exit] wait failed: {e}")),
            }
        });
        Self { pid, signals, exit }
    }

    fn signal(&self, sig: libc::c_int) {
        let _ = self.signals.send(sig);
    }

    /// The exit status, once the process has exited within `within`.
    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        match tokio::time::timeout(within, self.exit.wait_for(Option::is_some)).await {
            Ok(Ok(status)) => *status,
            _ => None,
        }
    }

    async fn kill(&mut self) -> Option<ExitStatus> {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10)).await
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

/// A running `task-scheduler serve`. Killed (SIGKILL) on drop.
pub struct App {
    proc: Option<Proc>,
    addr: SocketAddr,
    output: Output,
    launch: Launch,
    client: reqwest::Client,
}

impl App {
    /// A server on a fresh temporary data directory.
    pub async fn spawn() -> App {
        Launch::new().spawn().await.expect("server starts")
    }

    /// A server on `data_dir` (which outlives it).
    pub async fn spawn_in(data_dir: impl Into<PathBuf>) -> App {
        Launch::new()
            .data_dir(data_dir)
            .spawn()
            .await
            .expect("server starts")
    }

    pub fn builder() -> Launch {
        Launch::new()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id, while this value runs it.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(|p| p.pid)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.launch.data_dir.path().to_owned()
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    /// The API as the launch's token holder (or unauthenticated).
    pub fn api(&self) -> Api {
        Api {
            client: self.client.clone(),
            base: self.base_url(),
            token: self.launch.token.clone(),
            output: self.output.clone(),
        }
    }

    /// The API as the holder of `token` (`None`: no `Authorization` header).
    pub fn api_as(&self, token: Option<&str>) -> Api {
        Api {
            token: token.map(str::to_owned),
            ..self.api()
        }
    }

    /// `kill -9` and reap.
    pub async fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            let status = proc.kill().await;
            assert!(status.is_some(), "no exit after SIGKILL");
        }
    }

    /// SIGTERM; waits up to `within` for the exit and returns its status and how long it took.
    pub async fn terminate_within(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let mut proc = self.proc.take().expect("running");
        assert!(
            proc.exit.borrow().is_none(),
            "the server had already exited; output:\n{}",
            self.output.text()
        );
        let t0 = Instant::now();
        proc.signal(libc::SIGTERM);
        match proc.wait_exit(within).await {
            Some(status) => (status, t0.elapsed()),
            None => {
                proc.kill().await;
                panic!(
                    "no exit within {within:?} of SIGTERM; output:\n{}",
                    self.output.text()
                );
            }
        }
    }

    /// SIGTERM, and asserts a clean exit (code 0) within 10 s.
    pub async fn terminate(&mut self) -> Duration {
        let (status, took) = self.terminate_within(Duration::from_secs(10)).await;
        assert!(
            status.success(),
            "unclean exit after SIGTERM: {status}; output:\n{}",
            self.output.text()
        );
        took
    }

    /// Starts the server again on the same data directory (after `kill9` or `terminate`).
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "stop the server before restarting it");
        let mut next = self.launch.clone().spawn().await.expect("server restarts");
        self.proc = next.proc.take();
        self.addr = next.addr;
        self.output = next.output.clone();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // If the runtime is already gone, dropping the monitor drops the `Child`, and
        // `kill_on_drop` kills it.
        if let Some(proc) = &self.proc {
            proc.signal(libc::SIGKILL);
        }
    }
}
