//! An AWS endpoint that answers instantly, so a handler's CPU time is measured on our code
//! rather than on the emulator's pace: each operation (`X-Amz-Target`, or method and first
//! path segment for Scheduler's REST API) is forwarded to the emulator once, in the
//! recording phase, and every later call of that operation gets the recorded answer back
//! straight from memory. The responses are then real ones, of the size and shape the SDK
//! parses in production, but nothing is computed or stored per request.
//!
//! Only for benchmarks: a replayed `UpdateItem` returns the task recorded first, whatever
//! key was asked for, which is harmless for a CPU figure and wrong for anything else.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};

#[derive(Clone)]
struct Recorded {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    http: reqwest::Client,
    replay: Arc<AtomicBool>,
    answers: Arc<Mutex<HashMap<String, Recorded>>>,
    replayed: Arc<AtomicUsize>,
    misses: Arc<Mutex<Vec<String>>>,
}

pub struct AwsStub {
    pub url: String,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

/// `DynamoDB_20120810.PutItem`, `AmazonSQS.SendMessage`, ... or `POST schedules`.
fn operation(method: &Method, uri: &Uri, headers: &HeaderMap) -> String {
    match headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        Some(target) => target.to_owned(),
        None => {
            let first = uri.path().trim_start_matches('/').split('/').next();
            format!("{method} {}", first.unwrap_or(""))
        }
    }
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = operation(&method, &uri, &headers);
    if s.replay.load(Ordering::Relaxed) {
        return match s.answers.lock().unwrap().get(&op).cloned() {
            Some(r) => {
                s.replayed.fetch_add(1, Ordering::Relaxed);
                (r.status, r.headers, r.body).into_response()
            }
            None => {
                s.misses.lock().unwrap().push(op.clone());
                (
                    StatusCode::BAD_GATEWAY,
                    format!("aws stub: no recorded answer for {op}"),
                )
                    .into_response()
            }
        };
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forward = s.http.request(method, format!("{}{path}", s.upstream));
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            forward = forward.header(name, value);
        }
    }
    let answer = async {
        let resp = forward.body(body).send().await?;
        let status = resp.status();
        let mut headers = resp.headers().clone();
        for hop in ["content-length", "transfer-encoding", "connection", "date"] {
            headers.remove(hop);
        }
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>(Recorded {
            status,
            headers,
            body,
        })
    };
    match answer.await {
        Ok(r) => {
            if r.status.is_success() {
                s.answers.lock().unwrap().insert(op, r.clone());
            }
            (r.status, r.headers, r.body).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("aws stub: {e}")).into_response(),
    }
}

impl AwsStub {
    /// Listens on loopback, recording from `upstream` (the emulator's endpoint URL).
    pub async fn start(upstream: &str) -> anyhow::Result<AwsStub> {
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            replay: Arc::default(),
            answers: Arc::default(),
            replayed: Arc::default(),
            misses: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(AwsStub {
            url,
            shared,
            server,
        })
    }

    /// From now on, answer from memory only.
    pub fn replay(&self) {
        self.shared.replay.store(true, Ordering::Relaxed);
    }

    /// The operations recorded so far.
    pub fn recorded(&self) -> Vec<String> {
        let mut ops: Vec<String> = self
            .shared
            .answers
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        ops.sort();
        ops
    }

    /// Calls answered from memory, and the operations asked for that had no recording.
    pub fn replayed(&self) -> (usize, Vec<String>) {
        (
            self.shared.replayed.load(Ordering::Relaxed),
            self.shared.misses.lock().unwrap().clone(),
        )
    }
}

impl Drop for AwsStub {
    fn drop(&mut self) {
        self.server.abort();
    }
}
