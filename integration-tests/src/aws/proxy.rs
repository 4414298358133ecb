//! A fault-injecting HTTP/1.1 proxy on loopback between the function and moto: the function's
//! `AWS_ENDPOINT_URL` points at it. With a seeded random generator it answers some calls
//! with an error before forwarding them (HTTP 500, or `ThrottlingException` in the shape of
//! the call's protocol), forwards some and then drops the connection (the call was applied,
//! its answer is lost), and delays some. It counts every call by operation and fault kind,
//! and remembers the bodies of lost answers so that a duplicate delivery can be traced to
//! one.
//!
//! Raw TCP with a minimal HTTP/1.1 parser (the SDK sends `Content-Length` bodies), so that a
//! lost answer is a real dropped connection after the request was applied, which a framework
//! server cannot express.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The probabilities of each fault, per call (the rest is forwarded untouched).
#[derive(Debug, Clone, Copy)]
pub struct FaultRates {
    /// HTTP 500 before the call is applied.
    pub server_error: f64,
    /// `ThrottlingException` before the call is applied.
    pub throttle: f64,
    /// Forwarded, applied, then the connection is dropped without an answer.
    pub lost_response: f64,
    /// Forwarded after a delay of up to `max_latency`.
    pub latency: f64,
    pub max_latency: Duration,
    /// Starts an outage of the call's operation: every call to it fails (500 or throttled)
    /// for `outage_len`, long enough to outlast the SDK's own retries.
    pub outage: f64,
    pub outage_len: Duration,
}

/// The kinds of fault, as counted.
pub const KINDS: [&str; 6] = [
    "ok",
    "500",
    "throttle",
    "lost_response",
    "latency",
    "outage",
];

/// A faulted call: when, to which operation, the fault (`500`, `throttle`, `outage`,
/// `lost_response`; not latency), and the request body (to find task ids in).
#[derive(Debug, Clone)]
pub struct Lost {
    pub at: Instant,
    pub op: String,
    pub kind: &'static str,
    pub body: String,
}

#[derive(Default)]
struct State {
    counts: BTreeMap<(String, &'static str), u64>,
    /// Every call answered with an error or no answer (a lost one once it was applied).
    faulted: Vec<Lost>,
    /// Operations down until then.
    outages: BTreeMap<String, Instant>,
}

/// The proxy; it stops when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    calm: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, seed: u64, rates: FaultRates) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let calm = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let upstream = upstream.trim_end_matches('/').to_owned();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()?;
        let (st, cm) = (state.clone(), calm.clone());
        let dynamodb = Arc::new(tokio::sync::RwLock::new(()));
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let ctx = Ctx {
                    state: st.clone(),
                    rates,
                    calm: cm.clone(),
                    rng: rng.clone(),
                    upstream: upstream.clone(),
                    client: client.clone(),
                    dynamodb: dynamodb.clone(),
                };
                tokio::spawn(async move {
                    let _ = ctx.serve(conn).await;
                });
            }
        });
        Ok(FaultProxy {
            addr,
            state,
            calm,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops injecting faults (calls are still counted as `ok`).
    pub fn calm_down(&self) {
        self.calm.store(true, Ordering::SeqCst);
    }

    /// Injects faults again.
    pub fn resume(&self) {
        self.calm.store(false, Ordering::SeqCst);
    }

    /// Calls by (operation, kind).
    pub fn counts(&self) -> BTreeMap<(String, &'static str), u64> {
        self.state.lock().unwrap().counts.clone()
    }

    /// The calls whose answers were lost, after they were applied.
    pub fn lost(&self) -> Vec<Lost> {
        let st = self.state.lock().unwrap();
        let lost = st.faulted.iter().filter(|l| l.kind == "lost_response");
        lost.cloned().collect()
    }

    /// Every call that failed or lost its answer.
    pub fn faulted(&self) -> Vec<Lost> {
        self.state.lock().unwrap().faulted.clone()
    }

    /// A table: one row per operation, one column per kind, and the faulted share.
    pub fn table(&self) -> String {
        let counts = self.counts();
        let mut ops: BTreeMap<&str, [u64; KINDS.len()]> = BTreeMap::new();
        for ((op, kind), n) in &counts {
            let i = KINDS.iter().position(|k| k == kind).expect("a known kind");
            ops.entry(op.as_str()).or_default()[i] += n;
        }
        let mut out = format!(
            "| operation | calls | {} | faulted |\n|---|---:|{}---:|\n",
            KINDS.join(" | "),
            "---:|".repeat(KINDS.len())
        );
        let mut total = [0u64; KINDS.len()];
        for (op, row) in &ops {
            for (t, n) in total.iter_mut().zip(row) {
                *t += n;
            }
            out.push_str(&row_line(op, row));
        }
        out.push_str(&row_line("**all**", &total));
        out
    }

    /// (calls, faulted calls) in all.
    pub fn totals(&self) -> (u64, u64) {
        self.counts()
            .iter()
            .fold((0, 0), |(all, f), ((_, kind), n)| {
                (all + n, f + if *kind == "ok" { 0 } else { *n })
            })
    }
}

fn row_line(op: &str, row: &[u64; KINDS.len()]) -> String {
    let calls: u64 = row.iter().sum();
    let faulted = calls - row[0];
    format!(
        "| {op} | {calls} | {} | {:.0}% |\n",
        row.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" | "),
        100.0 * faulted as f64 / calls.max(1) as f64
    )
}

struct Ctx {
    state: Arc<Mutex<State>>,
    rates: FaultRates,
    calm: Arc<AtomicBool>,
    rng: Arc<Mutex<StdRng>>,
    upstream: String,
    client: reqwest::Client,
    /// Makes moto's DynamoDB writes atomic, as DynamoDB's are (see [`Ctx::forward`]).
    dynamodb: Arc<tokio::sync::RwLock<()>>,
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The protocol: `json` (x-amz-json-1.0/1.1 with X-Amz-Target), `query` (form-encoded
    /// Action=...), else `rest-json`.
    fn protocol(&self) -> &'static str {
        if self.header("x-amz-target").is_some() {
            "json"
        } else if self
            .header("content-type")
            .is_some_and(|c| c.contains("x-www-form-urlencoded"))
        {
            "query"
        } else {
            "rest-json"
        }
    }

    /// The AWS operation: X-Amz-Target's, the query's Action, or Scheduler's REST route.
    fn operation(&self) -> String {
        if let Some(t) = self.header("x-amz-target") {
            return t.rsplit('.').next().unwrap_or(t).to_owned();
        }
        let body = String::from_utf8_lossy(&self.body);
        if let Some(a) = body.split("Action=").nth(1) {
            return a.split('&').next().unwrap_or(a).to_owned();
        }
        let route = self.path.split('?').next().unwrap_or("");
        match (self.method.as_str(), route.starts_with("/schedules/")) {
            ("POST", true) => "CreateSchedule".into(),
            ("DELETE", true) => "DeleteSchedule".into(),
            ("GET", true) => "GetSchedule".into(),
            ("PUT", true) => "UpdateSchedule".into(),
            _ => format!("{} {route}", self.method),
        }
    }
}

impl Ctx {
    async fn serve(&self, mut conn: TcpStream) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        loop {
            let Some(req) = read_request(&mut conn, &mut buf).await? else {
                return Ok(());
            };
            let op = req.operation();
            let kind = self.pick(&op);
            self.count(&op, kind);
            // A lost answer is recorded once its call was applied, below.
            if !matches!(kind, "ok" | "latency" | "lost_response") {
                self.state.lock().unwrap().faulted.push(Lost {
                    at: Instant::now(),
                    op: op.clone(),
                    kind,
                    body: String::from_utf8_lossy(&req.body).into_owned(),
                });
            }
            match kind {
                "500" | "outage" => {
                    write_response(&mut conn, 500, &error_headers(&req, "InternalFailure"), &{
                        error_body(&req, "InternalFailure", "injected server error")
                    })
                    .await?
                }
                "throttle" => {
                    let status = if req.protocol() == "rest-json" {
                        429
                    } else {
                        400
                    };
                    write_response(
                        &mut conn,
                        status,
                        &error_headers(&req, "ThrottlingException"),
                        &error_body(&req, "ThrottlingException", "Rate exceeded (injected)"),
                    )
                    .await?
                }
                "lost_response" => {
                    // Applied upstream; its answer never reaches the caller.
                    let _ = self.forward(&req).await;
                    self.state.lock().unwrap().faulted.push(Lost {
                        at: Instant::now(),
                        op,
                        kind,
                        body: String::from_utf8_lossy(&req.body).into_owned(),
                    });
                    let _ = conn.shutdown().await;
                    return Ok(());
                }
                _ => {
                    if kind == "latency" {
                        let max = self.rates.max_latency;
                        let d = self.rng.lock().unwrap().random_range(0.0..1.0) * max.as_secs_f64();
                        tokio::time::sleep(Duration::from_secs_f64(d)).await;
                    }
                    let (status, headers, body) = self.forward(&req).await?;
                    write_response(&mut conn, status, &headers, &body).await?;
                }
            }
        }
    }

    fn pick(&self, op: &str) -> &'static str {
        if self.calm.load(Ordering::SeqCst) {
            return "ok";
        }
        let r = self.rates;
        let now = Instant::now();
        {
            let mut st = self.state.lock().unwrap();
            if st.outages.get(op).is_some_and(|until| now < *until) {
                return "outage";
            }
            if self.rng.lock().unwrap().random_range(0.0..1.0) < r.outage {
                st.outages.insert(op.to_owned(), now + r.outage_len);
                return "outage";
            }
        }
        let x: f64 = self.rng.lock().unwrap().random_range(0.0..1.0);
        let mut edge = 0.0;
        for (p, kind) in [
            (r.server_error, "500"),
            (r.throttle, "throttle"),
            (r.lost_response, "lost_response"),
            (r.latency, "latency"),
        ] {
            edge += p;
            if x < edge {
                return kind;
            }
        }
        "ok"
    }

    fn count(&self, op: &str, kind: &'static str) {
        *self
            .state
            .lock()
            .unwrap()
            .counts
            .entry((op.to_owned(), kind))
            .or_default() += 1;
    }

    async fn forward(
        &self,
        req: &Request,
    ) -> anyhow::Result<(u16, Vec<(String, String)>, Vec<u8>)> {
        // DynamoDB applies each write atomically: a condition is checked and the item written
        // in one step, and a transaction is isolated from every other write. moto, a threaded
        // server, is neither: two conditional writes can both pass their check (two claims of
        // one attempt both win, and it is delivered twice), and a cancelled
        // `TransactWriteItems` restores a copy of the table taken before it, undoing writes
        // made in between (a task disappeared while its key item stayed). So here each write
        // runs alone, and reads run together.
        let target = req.header("x-amz-target").unwrap_or_default();
        let write = [
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "TransactWriteItems",
            "BatchWriteItem",
        ]
        .iter()
        .any(|op| target.strip_prefix("DynamoDB_20120810.") == Some(*op));
        let _alone = match write {
            true => Some(self.dynamodb.write().await),
            false => None,
        };
        let _together = match !write && target.starts_with("DynamoDB_") {
            true => Some(self.dynamodb.read().await),
            false => None,
        };
        let method = reqwest::Method::from_bytes(req.method.as_bytes())?;
        let mut rb = self
            .client
            .request(method, format!("{}{}", self.upstream, req.path));
        for (k, v) in &req.headers {
            if ["host", "content-length", "connection", "transfer-encoding"]
                .iter()
                .any(|h| k.eq_ignore_ascii_case(h))
            {
                continue;
            }
            rb = rb.header(k, v);
        }
        let resp = rb.body(req.body.clone()).send().await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter(|(k, _)| {
                !["content-length", "connection", "transfer-encoding"].contains(&k.as_str())
            })
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = resp.bytes().await?.to_vec();
        Ok((status, headers, body))
    }
}

/// The error's headers: its code where the SDKs read it (`x-amzn-ErrorType`; for SQS's
/// JSON protocol also `x-amzn-query-error`).
fn error_headers(req: &Request, code: &str) -> Vec<(String, String)> {
    let mut h = vec![("x-amzn-RequestId".to_owned(), "chaos-0".to_owned())];
    match req.protocol() {
        "query" => h.push(("content-type".into(), "text/xml".into())),
        proto => {
            let ct = if proto == "json" {
                req.header("content-type")
                    .unwrap_or("application/x-amz-json-1.0")
            } else {
                "application/json"
            };
            h.push(("content-type".into(), ct.to_owned()));
            h.push(("x-amzn-ErrorType".into(), code.to_owned()));
            if req
                .header("x-amz-target")
                .is_some_and(|t| t.starts_with("AmazonSQS."))
            {
                h.push(("x-amzn-query-error".into(), format!("{code};Sender")));
            }
        }
    }
    h
}

fn error_body(req: &Request, code: &str, message: &str) -> Vec<u8> {
    match req.protocol() {
        "query" => format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>chaos-0</RequestId></ErrorResponse>"
        ),
        "json" => {
            let ns = match req.header("x-amz-target").unwrap_or("") {
                t if t.starts_with("DynamoDB_") => "com.amazonaws.dynamodb.v20120810#",
                t if t.starts_with("AmazonSQS.") => "com.amazonaws.sqs#",
                _ => "",
            };
            serde_json::json!({"__type": format!("{ns}{code}"), "message": message}).to_string()
        }
        _ => serde_json::json!({"Message": message}).to_string(),
    }
    .into_bytes()
}

/// Reads one request off a keep-alive connection; `None` when the peer closed it.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Option<Request>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().context("request line")?.split(' ');
    let method = first.next().context("method")?.to_owned();
    let path = first.next().context("path")?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        bail!("chunked request bodies are not supported by the fault proxy");
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let total = head_end + 4 + len;
    while buf.len() < total {
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end + 4..total].to_vec();
    buf.drain(..total);
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

async fn write_response(
    conn: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> anyhow::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    conn.write_all(&bytes).await?;
    Ok(())
}
