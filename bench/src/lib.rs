//! Support for the benchmarks (`make bench`): the release server as a child process on
//! loopback ([`Server`]), a lean HTTP/1.1 keep-alive client ([`Client`]) and a load driver
//! ([`drive`]), a webhook receiver that records arrival times ([`Receiver`]), statistics and
//! the raw result files that `bench/report.py` turns into `results.json`, the Markdown table
//! and the plots.
//!
//! Everything talks to 127.0.0.1 only. The server is started on port 0 with a fresh data
//! directory and stopped by its PID.

#[cfg(feature = "aws")]
pub mod aws_stub;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::{Notify, oneshot},
};

// ------------------------------------------------------------------------------------------
// Modes and arguments
// ------------------------------------------------------------------------------------------

/// `BENCH_QUICK=1`: the reduced run (under two minutes in all).
pub fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `--name VALUE` from the command line, parsed; `default` when absent.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == format!("--{name}"))
        .map(|w| {
            w[1].parse()
                .unwrap_or_else(|_| panic!("--{name} {}: not a valid value", w[1]))
        })
        .unwrap_or(default)
}

/// The command that produced a figure, as someone would type it again.
pub fn command_line() -> String {
    let mut args = std::env::args();
    let bin = args
        .next()
        .map(|a| {
            Path::new(&a)
                .file_name()
                .map_or(a.clone(), |f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let quick = if quick() { "BENCH_QUICK=1 " } else { "" };
    let build = match build_profile().as_str() {
        "release" => "--release".to_owned(),
        "bench-quick" => "--profile bench-quick --no-default-features".to_owned(),
        other => format!("--profile {other}"),
    };
    format!(
        "{quick}cargo run {build} -p bench --bin {bin}{}{}",
        if rest.is_empty() { "" } else { " -- " },
        rest.join(" ")
    )
}

/// The directory the running bench binary was built into: `release` for `make bench`,
/// `bench-quick` for `BENCH_QUICK=1 make bench`. The server under test is its sibling.
fn build_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| integration_tests::target_dir().join("release"))
}

/// The Cargo profile the bench binary (and so the server beside it) was built with.
pub fn build_profile() -> String {
    build_dir()
        .file_name()
        .map_or_else(|| "release".into(), |n| n.to_string_lossy().into_owned())
}

// ------------------------------------------------------------------------------------------
// The server under test
// ------------------------------------------------------------------------------------------

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

const PRODUCT_ENV: &[&str] = &[
    "PORT",
    "SCHEDULER_DATA_DIR",
    "SCHEDULER_API_TOKENS",
    "SCHEDULER_MAX_CONCURRENCY",
    "SCHEDULER_TIMER_CAPACITY",
    "SCHEDULER_RATE_LIMIT",
    "SCHEDULER_ALLOWED_TARGETS",
    "SCHEDULER_SIGNING_SECRET",
    "LOG_FORMAT",
    "RUST_LOG",
];

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
    logs: Arc<Mutex<Vec<String>>>,
}

struct Listening {
    at: Instant,
    addr: SocketAddr,
    pending: Option<u64>,
}

fn parse_listening(line: &str) -> Option<(SocketAddr, Option<u64>)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    let msg = fields.get("message")?.as_str()?;
    if !msg.starts_with("listening") {
        return None;
    }
    let addr = fields.get("addr")?.as_str()?.parse().ok()?;
    Some((addr, fields.get("pending").and_then(Value::as_u64)))
}

impl Server {
    /// Starts the release server on 127.0.0.1:0 over `data_dir`, rate limit off, logging at
    /// `warn` (plus the "listening" line), and waits until `/health` answers 200.
    pub async fn start(data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(data_dir, &[]).await
    }

    pub async fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let bin = server_binary();
        if !bin.is_file() {
            bail!(
                "{} does not exist: build it with `make bench` (or the bench binary's own profile)",
                bin.display()
            );
        }
        let mut cmd = Command::new(&bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        for v in PRODUCT_ENV {
            cmd.env_remove(v);
        }
        cmd.env("SCHEDULER_DATA_DIR", data_dir)
            .env("SCHEDULER_RATE_LIMIT", "0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,shared::local=info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = i32::try_from(child.id().context("child has no pid")?)?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = oneshot::channel::<Listening>();
        {
            let stdout = child.stdout.take().context("stdout")?;
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut tx = Some(tx);
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some((addr, pending)) = parse_listening(&line)
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(Listening {
                            at: Instant::now(),
                            addr,
                            pending,
                        });
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        {
            let stderr = child.stderr.take().context("stderr")?;
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let listening = match tokio::time::timeout(Duration::from_secs(120), rx).await {
            Ok(Ok(l)) => l,
            _ => {
                let _ = child.start_kill();
                bail!(
                    "the server did not print its listening line; output:\n{}",
                    logs.lock().unwrap().join("\n")
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
            pending_at_start: listening.pending,
            logs,
        })
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
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

// ------------------------------------------------------------------------------------------
// Client
// ------------------------------------------------------------------------------------------

/// One HTTP/1.1 keep-alive connection.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
        })
    }

    async fn send(
        &mut self,
        method: http::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.host);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub async fn post(&mut self, path: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        self.send(http::Method::POST, path, Some(body)).await
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, Bytes)> {
        self.send(http::Method::GET, path, None).await
    }
}

/// RFC 3339 with milliseconds, as the API accepts.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `t` truncated to the millisecond (the API's precision).
pub fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("in range")
}

/// A create request: a webhook to `url`, due at `run_at`.
pub fn task_body(url: &str, run_at: DateTime<Utc>, n: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"action":"webhook","payload":{{"url":"{url}","data":{{"n":{n}}}}},"run_at":"{}"}}"#,
        rfc3339(run_at)
    ))
}

/// What [`drive`] measured.
pub struct Load {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// `(seconds since start, completed creates per second)` sampled every 250 ms.
    pub series: Vec<(f64, f64)>,
    /// Request latencies in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// CPU the server spent during the run.
    pub server_cpu: Duration,
    /// CPU this (load generator) process spent during the run.
    pub client_cpu: Duration,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Posts `n` create requests (`body(i)` for i in 0..n) to `/tasks` over `concurrency`
/// keep-alive connections, each with one request in flight.
pub async fn drive(
    server: &Server,
    n: u64,
    concurrency: usize,
    body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
) -> anyhow::Result<Load> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(Client::connect(server.addr).await?);
    }
    let server_cpu0 = server.cpu()?;
    let client_cpu0 = proc_cpu(std::process::id() as i32)?;
    let start = Instant::now();
    let finished = Arc::new(Notify::new());
    let sampler = {
        let done = done.clone();
        let finished = finished.clone();
        tokio::spawn(async move {
            let mut series = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let (mut last_t, mut last_n) = (0.0, 0);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = finished.notified() => break,
                }
                let t = start.elapsed().as_secs_f64();
                let n = done.load(Ordering::Relaxed);
                series.push((t, (n - last_n) as f64 / (t - last_t)));
                (last_t, last_n) = (t, n);
            }
            series
        })
    };
    let mut workers = Vec::with_capacity(concurrency);
    for mut client in clients {
        let (next, done, errors, first_error, body) = (
            next.clone(),
            done.clone(),
            errors.clone(),
            first_error.clone(),
            body.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let b = body(i);
                let t = Instant::now();
                let result = client.post("/tasks", b).await;
                lat.push(t.elapsed().as_micros() as u64);
                match result {
                    Ok((201, _)) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let text = match other {
                            Ok((s, b)) => format!("{s}: {}", String::from_utf8_lossy(&b)),
                            Err(e) => format!("{e:#}"),
                        };
                        first_error.lock().unwrap().get_or_insert(text);
                        if let Ok(c) = Client::connect(client_addr(&client)).await {
                            client = c;
                        }
                    }
                }
            }
            lat
        }));
    }
    let mut latencies_us = Vec::with_capacity(n as usize);
    for w in workers {
        latencies_us.extend(w.await?);
    }
    let elapsed = start.elapsed();
    finished.notify_one();
    let series = sampler.await?;
    latencies_us.sort_unstable();
    let first_error = first_error.lock().unwrap().take();
    Ok(Load {
        ok: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error,
        elapsed,
        series,
        latencies_us,
        server_cpu: server.cpu()? - server_cpu0,
        client_cpu: proc_cpu(std::process::id() as i32)? - client_cpu0,
    })
}

fn client_addr(c: &Client) -> SocketAddr {
    c.host.parse().expect("host is an address")
}

// ------------------------------------------------------------------------------------------
// Receiver
// ------------------------------------------------------------------------------------------

/// What a receiver saw: each request's path and arrival wall time.
pub type Arrival = (String, DateTime<Utc>);

/// A webhook receiver on 127.0.0.1: answers 200 to anything and records `(path, arrival)`.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    count: Arc<AtomicU64>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let arrivals = Arc::new(Mutex::new(Vec::with_capacity(16_384)));
        let count = Arc::new(AtomicU64::new(0));
        let app = {
            let arrivals = arrivals.clone();
            let count = count.clone();
            axum::Router::new().fallback(move |uri: http::Uri| {
                let at = Utc::now();
                let arrivals = arrivals.clone();
                let count = count.clone();
                async move {
                    arrivals.lock().unwrap().push((uri.path().to_owned(), at));
                    count.fetch_add(1, Ordering::Relaxed);
                    http::StatusCode::OK
                }
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            arrivals,
            count,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived or `deadline` passed; true if they did.
    pub async fn wait_for(&self, n: u64, deadline: DateTime<Utc>) -> bool {
        while self.count() < n {
            if Utc::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// Milliseconds from `a` to `b` (positive when `b` is later).
pub fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

// ------------------------------------------------------------------------------------------
// Statistics and results
// ------------------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted values (`p` in 0..=100).
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    assert!(!sorted.is_empty(), "percentile of nothing");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sort_f64(v: &mut [f64]) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
}

/// One measured figure, with its bar and verdict (`pass: None` when there is no bar).
pub struct Figure {
    pub id: &'static str,
    pub label: String,
    pub value: f64,
    pub unit: &'static str,
    pub bar: String,
    pub pass: Option<bool>,
}

impl Figure {
    pub fn new(id: &'static str, label: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            id,
            label: label.into(),
            value,
            unit,
            bar: String::new(),
            pass: None,
        }
    }

    /// Passes when `value >= min`.
    pub fn at_least(mut self, min: f64) -> Self {
        self.bar = format!("≥ {}", fmt_num(min));
        self.pass = Some(self.value >= min);
        self
    }

    /// Passes when `value <= max`.
    pub fn at_most(mut self, max: f64) -> Self {
        self.bar = format!("≤ {}", fmt_num(max));
        self.pass = Some(self.value <= max);
        self
    }

    /// A yes/no check (value 1 or 0).
    pub fn check(id: &'static str, label: impl Into<String>, ok: bool) -> Self {
        Self {
            id,
            label: label.into(),
            value: if ok { 1.0 } else { 0.0 },
            unit: "bool",
            bar: "yes".into(),
            pass: Some(ok),
        }
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id, "figure": self.label, "value": self.value, "unit": self.unit,
            "bar": self.bar, "pass": self.pass,
        })
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Where results go: `$BENCH_RESULTS`, else `bench/results`.
pub fn results_dir() -> PathBuf {
    std::env::var_os("BENCH_RESULTS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("results"),
        PathBuf::from,
    )
}

/// The commit being measured, and whether the work tree differs from it (the results being
/// written aside): recorded with each benchmark's figures, since a report may be rebuilt later.
fn measured_commit() -> (Option<String>, Option<bool>) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"]);
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "..",
        ":!results",
    ])
    .map(|changes| !changes.is_empty());
    (head, dirty)
}

/// Writes `results/raw/<name>.json` (figures, parameters, series for the plots), prints
/// the figures, and fails if a yes/no check failed.
pub fn write_results(
    name: &str,
    params: Value,
    figures: &[Figure],
    series: Value,
) -> anyhow::Result<()> {
    let dir = results_dir().join("raw");
    std::fs::create_dir_all(&dir)?;
    let (commit, dirty) = measured_commit();
    let doc = json!({
        "benchmark": name,
        "command": command_line(),
        "quick": quick(),
        "profile": build_profile(),
        "commit": commit,
        "dirty": dirty,
        "finished_at": rfc3339(Utc::now()),
        "params": params,
        "figures": figures.iter().map(Figure::json).collect::<Vec<_>>(),
        "series": series,
    });
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    for f in figures {
        let verdict = match f.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "",
        };
        println!(
            "{name:>10}  {:<58} {:>12.3} {:<6} {:<10} {verdict}",
            f.label, f.value, f.unit, f.bar
        );
    }
    println!("{name:>10}  wrote {}", path.display());
    // A missed bar is a result; a failed correctness check (lost or duplicated deliveries,
    // a 201 not on disk) is an error.
    let broken: Vec<&str> = figures
        .iter()
        .filter(|f| f.unit == "bool" && f.pass == Some(false))
        .map(|f| f.id)
        .collect();
    anyhow::ensure!(broken.is_empty(), "{name}: checks failed: {broken:?}");
    Ok(())
}
