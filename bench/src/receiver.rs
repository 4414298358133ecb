//! A webhook receiver that records arrival times, at the least cost per request.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};

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
