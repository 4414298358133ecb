//! A real webhook receiver on loopback, scripted per path, recording every arrival.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::watch;

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
