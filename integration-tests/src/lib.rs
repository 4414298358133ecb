//! Support for the black-box tests: the real `task-scheduler` binary as a child process
//! ([`App`]), a real webhook receiver on loopback ([`Receiver`]) and a small API client
//! ([`Api`]). Nothing here reaches into the product's crates: the tests see only what a user
//! sees (HTTP, logs, exit codes).

#[cfg(feature = "aws")]
pub mod aws;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::{mpsc, oneshot, watch},
};

/// How long a server gets to print its "listening" line.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

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

/// RFC 3339 with milliseconds, as the API accepts.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a time the API returned.
pub fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
        .to_utc()
}

/// Now plus `ms` milliseconds, truncated to the millisecond (the API's precision).
pub fn in_ms(ms: i64) -> DateTime<Utc> {
    let t = Utc::now() + chrono::TimeDelta::milliseconds(ms);
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("in range")
}

// ------------------------------------------------------------------------------------------
// The server process
// ------------------------------------------------------------------------------------------

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

/// Everything the child printed (stdout and stderr, interleaved as read).
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// The JSON log lines whose message contains `needle`.
    pub fn logs_with_message(&self, needle: &str) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| log_message(v).is_some_and(|m| m.contains(needle)))
            .collect()
    }
}

fn log_message(v: &Value) -> Option<&str> {
    v.pointer("/fields/message")
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)
}

/// The address of a "listening on http://ADDR" JSON log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    let msg = log_message(&v)?;
    let rest = msg.strip_prefix("listening on http://")?;
    v.pointer("/fields/addr")
        .or_else(|| v.get("addr"))
        .and_then(Value::as_str)
        .unwrap_or(rest)
        .parse()
        .ok()
}

/// How to start the server; [`App::spawn`] and [`App::spawn_in`] cover the usual cases.
#[derive(Clone)]
pub struct Launch {
    data_dir: DataDir,
    env: Vec<(String, String)>,
    args: Vec<String>,
    token: Option<String>,
}

/// Variables of the product that the child must not inherit from the test environment.
const PRODUCT_ENV: &[&str] = &[
    "PORT",
    "SCHEDULER_DATA_DIR",
    "SCHEDULER_API_TOKENS",
    "SCHEDULER_MAX_CONCURRENCY",
    "SCHEDULER_TIMER_CAPACITY",
    "LOG_FORMAT",
    "RUST_LOG",
];

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

    fn command(&self) -> anyhow::Result<Command> {
        let bin = binary_path();
        if !bin.is_file() {
            bail!(
                "{} does not exist: build it with `cargo build -p task-scheduler` (or set TASK_SCHEDULER_BIN)",
                bin.display()
            );
        }
        let mut cmd = Command::new(&bin);
        for k in PRODUCT_ENV {
            cmd.env_remove(k);
        }
        cmd.args(&self.args)
            .env("PORT", "0")
            .env("SCHEDULER_DATA_DIR", self.data_dir.path())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(cmd)
    }

    fn start(&self) -> anyhow::Result<(Proc, Output, oneshot::Receiver<SocketAddr>)> {
        let mut child = self
            .command()?
            .spawn()
            .with_context(|| format!("starting {}", binary_path().display()))?;
        let output = Output::default();
        let (tx, rx) = oneshot::channel();
        drain(
            child.stdout.take().expect("piped"),
            output.clone(),
            "",
            Some(tx),
        );
        drain(
            child.stderr.take().expect("piped"),
            output.clone(),
            "[stderr] ",
            None,
        );
        let proc = Proc::watch(child, output.clone());
        Ok((proc, output, rx))
    }

    /// Starts the server and waits for its "listening" line.
    pub async fn spawn(self) -> anyhow::Result<App> {
        let (mut proc, output, rx) = self.start()?;
        let addr = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(addr)) => addr,
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
    signals: mpsc::UnboundedSender<libc::c_int>,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl Proc {
    fn watch(mut child: Child, output: Output) -> Self {
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
        Self { signals, exit }
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

/// Reads a child's pipe line by line until it closes, so the child never blocks on a full
/// pipe; the first "listening" line is reported on `listening`.
fn drain(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    output: Output,
    prefix: &'static str,
    mut listening: Option<oneshot::Sender<SocketAddr>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if listening.is_some()
                && let Some(addr) = listening_addr(&line)
            {
                let _ = listening.take().expect("checked").send(addr);
            }
            output.push(format!("{prefix}{line}"));
        }
    });
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

// ------------------------------------------------------------------------------------------
// The API client
// ------------------------------------------------------------------------------------------

/// A response: status, headers and the body as JSON (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self.body
    }

    /// Asserts a JSON error of docs/api.md: `{"error": {"code", "message", ...}}`.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Value {
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = self.expect(status);
        assert!(
            ct.starts_with("application/json"),
            "error content-type {ct:?}"
        );
        assert_eq!(body["error"]["code"], code, "error body {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without message: {body}"
        );
        body
    }
}

#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The server's output, shown when a request fails.
    output: Output,
}

pub fn query_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Api {
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                // Let the readers take the last lines of a dying server.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "request to the server failed: {e:?}\nthe server's output:\n{}",
                    self.output.text()
                )
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    /// `POST path` with a JSON body and an optional `Idempotency-Key`.
    pub async fn post_json(&self, path: &str, body: &Value, idempotency_key: Option<&str>) -> Resp {
        let mut req = self.request(Method::POST, path).json(body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        self.send(req).await
    }

    /// `POST /tasks`.
    pub async fn create(&self, body: &Value) -> Resp {
        self.post_json("/tasks", body, None).await
    }

    /// `POST /tasks`, asserting 201; the task.
    pub async fn create_ok(&self, body: &Value) -> Value {
        self.create(body).await.expect(201)
    }

    pub async fn get(&self, id: &str) -> Resp {
        self.send(self.request(Method::GET, &format!("/tasks/{id}")))
            .await
    }

    pub async fn cancel(&self, id: &str) -> Resp {
        self.send(self.request(Method::DELETE, &format!("/tasks/{id}")))
            .await
    }

    pub async fn retry(&self, id: &str) -> Resp {
        self.send(self.request(Method::POST, &format!("/tasks/{id}/retry")))
            .await
    }

    /// `GET /tasks?{query}` (query already encoded, may be empty).
    pub async fn list(&self, query: &str) -> Resp {
        let path = if query.is_empty() {
            "/tasks".to_owned()
        } else {
            format!("/tasks?{query}")
        };
        self.send(self.request(Method::GET, &path)).await
    }

    /// Every task of the caller (all pages), optionally in one status.
    pub async fn list_all(&self, status: Option<&str>) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = vec!["limit=100".to_owned()];
            if let Some(s) = status {
                q.push(format!("status={s}"));
            }
            if let Some(c) = &cursor {
                q.push(format!("cursor={}", query_escape(c)));
            }
            let page = self.list(&q.join("&")).await.expect(200);
            out.extend(page["tasks"].as_array().expect("tasks").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// Polls `GET /tasks/{id}` until its status is `status`; panics with the last view after
    /// `within`.
    pub async fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let task = self.get(id).await.expect(200);
            if task["status"] == status {
                return task;
            }
            if Instant::now() >= deadline {
                panic!("task {id} not {status} within {within:?}; last seen: {task:#}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

// ------------------------------------------------------------------------------------------
// The webhook receiver
// ------------------------------------------------------------------------------------------

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn ok() -> Self {
        Self::status(200)
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn body(mut self, b: &str) -> Self {
        self.body = b.into();
        self
    }
}

#[derive(Debug, Clone)]
struct Script {
    queue: VecDeque<Reply>,
    default: Reply,
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub path: String,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the handler ran (monotonic, and wall clock).
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

impl Arrival {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Default)]
struct ReceiverState {
    scripts: Mutex<HashMap<String, Script>>,
    arrivals: Mutex<Vec<Arrival>>,
}

/// A webhook receiver on 127.0.0.1:0. Unscripted paths answer 200.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    count: watch::Sender<usize>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let (count, _) = watch::channel(0usize);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let app = {
            let state = state.clone();
            let count = count.clone();
            axum::Router::new().fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let state = state.clone();
                    let count = count.clone();
                    async move { receive(state, count, method, uri, headers, body).await }
                },
            )
        };
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serves");
        });
        Receiver {
            addr,
            state,
            count,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `path` answers `queue` in order, then `default` forever.
    pub fn script(&self, path: &str, queue: impl IntoIterator<Item = Reply>, default: Reply) {
        self.state.scripts.lock().unwrap().insert(
            path.to_owned(),
            Script {
                queue: queue.into_iter().collect(),
                default,
            },
        );
    }

    /// Every arrival so far, in order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// The arrivals at `path` so far.
    pub fn arrivals_at(&self, path: &str) -> Vec<Arrival> {
        self.state
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.path == path)
            .cloned()
            .collect()
    }

    /// Arrivals per path.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for a in self.state.arrivals.lock().unwrap().iter() {
            *out.entry(a.path.clone()).or_default() += 1;
        }
        out
    }

    /// Waits until `done(arrivals)` holds; `Err` with the arrivals seen if `within` passes.
    pub async fn wait_until(
        &self,
        within: Duration,
        mut done: impl FnMut(&[Arrival]) -> bool,
    ) -> Result<Vec<Arrival>, Vec<Arrival>> {
        let deadline = tokio::time::Instant::now() + within;
        let mut rx = self.count.subscribe();
        loop {
            rx.borrow_and_update();
            {
                let arrivals = self.state.arrivals.lock().unwrap();
                if done(&arrivals) {
                    return Ok(arrivals.clone());
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(self.arrivals()),
            }
        }
    }

    /// Waits for `n` arrivals at `path` and returns them; panics after `within`.
    pub async fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Arrival> {
        match self
            .wait_until(within, |a| a.iter().filter(|a| a.path == path).count() >= n)
            .await
        {
            Ok(_) => self.arrivals_at(path),
            Err(seen) => panic!(
                "{n} request(s) at {path} expected within {within:?}; got {}: {:?}",
                seen.iter().filter(|a| a.path == path).count(),
                seen.iter().map(|a| &a.path).collect::<Vec<_>>()
            ),
        }
    }

    /// Waits for `n` arrivals in all; panics after `within`.
    pub async fn wait_for_total(&self, n: usize, within: Duration) -> Vec<Arrival> {
        match self.wait_until(within, |a| a.len() >= n).await {
            Ok(a) => a,
            Err(seen) => panic!(
                "{n} request(s) expected within {within:?}; got {}",
                seen.len()
            ),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    state: Arc<ReceiverState>,
    count: watch::Sender<usize>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrival = Arrival {
        path: uri.path().to_owned(),
        method,
        headers,
        body,
        at: Instant::now(),
        wall: Utc::now(),
    };
    let reply = {
        let mut scripts = state.scripts.lock().unwrap();
        match scripts.get_mut(&arrival.path) {
            Some(s) => s.queue.pop_front().unwrap_or_else(|| s.default.clone()),
            None => Reply::ok(),
        }
    };
    state.arrivals.lock().unwrap().push(arrival);
    count.send_modify(|c| *c += 1);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = (
        StatusCode::from_u16(reply.status).expect("valid status"),
        reply.body,
    )
        .into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            HeaderName::try_from(k).expect("header name"),
            HeaderValue::try_from(v).expect("header value"),
        );
    }
    resp
}
