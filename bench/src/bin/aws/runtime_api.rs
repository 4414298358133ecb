//! A minimal Lambda Runtime API on loopback (next / response / error) and the bootstrap
//! polling it ([`Lambda`]): a process per clock offset is cheap here (cold start ≈ 10 ms),
//! which is what lets each firing of the precision run happen at its own moment.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::bail;
use chrono::{DateTime, TimeDelta, Utc};
use integration_tests::{
    aws::start_bootstrap,
    launcher::{Output, Started},
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:task-scheduler";

type Answer = oneshot::Sender<Result<Value, String>>;
type Pending = (String, Value, Answer);

/// One function process: the bootstrap polling its own minimal Runtime API on loopback
/// (next / response / error), as Lambda runs it. A process per clock offset is cheap here
/// (cold start ≈ 10 ms), which is what lets each firing happen at its own moment.
pub struct Lambda {
    invocations: mpsc::UnboundedSender<Pending>,
    child: tokio::process::Child,
    server: tokio::task::JoinHandle<()>,
    output: Output,
    /// The function's clock minus the wall clock (moved by libfaketime).
    pub offset: TimeDelta,
}

impl Lambda {
    pub async fn start(
        bootstrap: &Path,
        env: &[(String, String)],
        offset: TimeDelta,
    ) -> anyhow::Result<Lambda> {
        let (tx, rx) = mpsc::unbounded_channel::<Pending>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let waiting: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let next = {
            let waiting = waiting.clone();
            move || {
                let rx = rx.clone();
                let waiting = waiting.clone();
                async move {
                    let Some((id, event, reply)) = rx.lock().await.recv().await else {
                        return std::future::pending::<axum::response::Response>().await;
                    };
                    waiting.lock().unwrap().insert(id.clone(), reply);
                    let deadline = (Utc::now() + TimeDelta::seconds(60)).timestamp_millis();
                    axum::response::IntoResponse::into_response((
                        [
                            ("lambda-runtime-aws-request-id", id),
                            ("lambda-runtime-deadline-ms", deadline.to_string()),
                            ("lambda-runtime-invoked-function-arn", FUNCTION_ARN.into()),
                            (
                                "lambda-runtime-trace-id",
                                "Root=1-00000000-000000000000000000000000".into(),
                            ),
                            ("content-type", "application/json".into()),
                        ],
                        event.to_string(),
                    ))
                }
            }
        };
        let answer = move |ok: bool| {
            let waiting = waiting.clone();
            move |axum::extract::Path(id): axum::extract::Path<String>, body: bytes::Bytes| {
                let waiting = waiting.clone();
                async move {
                    if let Some(reply) = waiting.lock().unwrap().remove(&id) {
                        let text = String::from_utf8_lossy(&body).into_owned();
                        let _ = reply.send(if ok {
                            serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
                        } else {
                            Err(text)
                        });
                    }
                    http::StatusCode::ACCEPTED
                }
            }
        };
        let app = axum::Router::new()
            .route(
                "/2018-06-01/runtime/invocation/next",
                axum::routing::get(next),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                axum::routing::post(answer(true)),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                axum::routing::post(answer(false)),
            )
            .fallback(|uri: http::Uri, body: bytes::Bytes| async move {
                eprintln!("runtime API: {uri}: {}", String::from_utf8_lossy(&body));
                http::StatusCode::ACCEPTED
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let moved = (!offset.is_zero()).then_some(offset);
        let Started { child, output, .. } =
            start_bootstrap(bootstrap, env, &api.to_string(), moved).await?;
        Ok(Lambda {
            invocations: tx,
            child,
            server,
            output,
            offset,
        })
    }

    /// A process whose clock reads `at` in `lead` from now.
    pub async fn start_clocked(
        bootstrap: &Path,
        env: &[(String, String)],
        at: DateTime<Utc>,
        lead: Duration,
    ) -> anyhow::Result<Lambda> {
        let offset = at - Utc::now() - TimeDelta::from_std(lead)?;
        Lambda::start(bootstrap, env, offset).await
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// Sleeps until this function's clock reads `at`.
    pub async fn wait_until(&self, at: DateTime<Utc>) {
        if let Ok(d) = (at - self.now()).to_std() {
            tokio::time::sleep(d).await;
        }
    }

    pub async fn invoke(&self, event: &Value) -> anyhow::Result<Value> {
        let (tx, rx) = oneshot::channel();
        let id = format!("req-{:016x}", rand::random::<u64>());
        self.invocations
            .send((id, event.clone(), tx))
            .map_err(|_| anyhow::anyhow!("runtime API gone"))?;
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => bail!("invocation error: {e}\nlogs:\n{}", self.log_text()),
            _ => bail!("no answer within 60 s\nlogs:\n{}", self.log_text()),
        }
    }

    pub fn log_text(&self) -> String {
        self.output.text()
    }

    /// The bootstrap's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The `delay_seconds` of the last "wake-up queued" log line for `task_id`.
    pub async fn queued_delay(&self, task_id: &str) -> anyhow::Result<i64> {
        let started = Instant::now();
        loop {
            let found = self
                .output
                .logs_with_message("wake-up queued")
                .into_iter()
                .filter(|v| v.to_string().contains(task_id))
                .filter_map(|v| v["fields"]["delay_seconds"].as_i64())
                .next_back();
            if let Some(d) = found {
                return Ok(d);
            }
            if started.elapsed() > Duration::from_secs(5) {
                bail!(
                    "no \"wake-up queued\" log line for {task_id}:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.server.abort();
    }
}
