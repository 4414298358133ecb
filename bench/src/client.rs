//! A lean HTTP/1.1 keep-alive client ([`Client`]) and the load driver ([`drive`]).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

use crate::{Server, proc_cpu, rfc3339};

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
    drive_to(server, "/tasks", n, concurrency, body).await
}

/// [`drive`] to another create route (`/schedules`); each must answer 201.
pub async fn drive_to(
    server: &Server,
    path: &'static str,
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
                let result = client.post(path, b).await;
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
