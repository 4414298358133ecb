//! A function whose bootstrap can be killed mid-invocation (as Lambda does on a timeout) and
//! restarted on the same Runtime API: the fault-injection rehearsal's function.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use chrono::TimeDelta;
use serde_json::Value;
use tokio::{process::Child, sync::Mutex};

use super::{FUNCTION, runtime_emulator, start_bootstrap};
use crate::launcher::{Output, Started};

/// How an invocation ended.
#[derive(Debug, Clone)]
pub enum Invoked {
    /// The function's answer.
    Answer(Value),
    /// The invocation failed (a retryable error returned by the handler, or a timeout).
    Error(String),
    /// The bootstrap was killed while it ran.
    Killed,
}

pub struct Killable {
    binary: PathBuf,
    env: Vec<(String, String)>,
    clock_offset: Option<TimeDelta>,
    runtime_api: String,
    port: u16,
    _watch: Child,
    bin: Mutex<(Child, Output)>,
    generation: tokio::sync::watch::Sender<u64>,
    kills: AtomicU64,
    /// One invocation at a time, as one Lambda execution environment runs them: the one
    /// holding this is the one a kill cuts; the others wait here, not in the emulator.
    running: Mutex<()>,
    /// Every output of every bootstrap, in order.
    outputs: std::sync::Mutex<Vec<Output>>,
    http: reqwest::Client,
}

impl Killable {
    pub async fn start(
        env: &[(String, String)],
        clock_offset: Option<TimeDelta>,
    ) -> anyhow::Result<Killable> {
        let (watch, port) = runtime_emulator().await?;
        let runtime_api = format!("http://127.0.0.1:{port}/.rt");
        let binary = crate::binary_path();
        let Started { child, output, .. } =
            start_bootstrap(&binary, env, &runtime_api, clock_offset).await?;
        Ok(Killable {
            binary,
            env: env.to_vec(),
            clock_offset,
            runtime_api,
            port,
            _watch: watch,
            bin: Mutex::new((child, output.clone())),
            generation: tokio::sync::watch::channel(0).0,
            kills: AtomicU64::new(0),
            running: Mutex::new(()),
            outputs: std::sync::Mutex::new(vec![output]),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(40))
                .build()?,
        })
    }

    /// Invokes the function; an invocation cut by a kill ends as [`Invoked::Killed`].
    pub async fn invoke(&self, event: &Value) -> Invoked {
        let _running = self.running.lock().await;
        let mut gen_rx = self.generation.subscribe();
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{FUNCTION}/invocations",
            self.port
        );
        let call = async {
            let resp = self.http.post(&url).json(event).send().await;
            match resp {
                Err(e) => Invoked::Error(e.to_string()),
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    match serde_json::from_str::<Value>(&text) {
                        Ok(v) if status.is_success() => Invoked::Answer(v),
                        _ => Invoked::Error(format!("{status}: {text}")),
                    }
                }
            }
        };
        tokio::select! {
            out = call => out,
            _ = gen_rx.changed() => Invoked::Killed,
        }
    }

    /// SIGKILLs the bootstrap, cutting its invocation, and starts a fresh one (a cold start).
    pub async fn kill_and_restart(&self) -> anyhow::Result<()> {
        let mut bin = self.bin.lock().await;
        let _ = bin.0.start_kill();
        let _ = bin.0.wait().await;
        self.kills.fetch_add(1, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
        // A cold start can fail on a faulted call (reading the signing secret): Lambda
        // starts another.
        let mut tries = 0;
        let Started { child, output, .. } = loop {
            tries += 1;
            match start_bootstrap(
                &self.binary,
                &self.env,
                &self.runtime_api,
                self.clock_offset,
            )
            .await
            {
                Ok(s) => break s,
                Err(e) if tries >= 5 => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        self.outputs.lock().unwrap().push(output.clone());
        *bin = (child, output);
        Ok(())
    }

    pub fn kills(&self) -> u64 {
        self.kills.load(Ordering::SeqCst)
    }

    /// The output of every bootstrap so far.
    pub fn log_text(&self) -> String {
        self.outputs
            .lock()
            .unwrap()
            .iter()
            .map(Output::text)
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }
}

/// Several execution environments of one function, as Lambda scales out: an invocation goes
/// to an idle one (else waits for one, round robin); a kill cuts one of them.
pub struct Fleet {
    envs: Vec<Killable>,
    next: AtomicU64,
}

impl Fleet {
    pub async fn start(
        n: usize,
        env: &[(String, String)],
        clock_offset: Option<TimeDelta>,
    ) -> anyhow::Result<Fleet> {
        // Started together: each is a runtime emulator and a cold start.
        let envs = futures::future::try_join_all(
            (0..n.max(1)).map(|_| Killable::start(env, clock_offset)),
        )
        .await?;
        Ok(Fleet {
            envs,
            next: AtomicU64::new(0),
        })
    }

    pub async fn invoke(&self, event: &Value) -> Invoked {
        let idle = self.envs.iter().find(|k| k.running.try_lock().is_ok());
        let k = idle.unwrap_or_else(|| {
            let i = self.next.fetch_add(1, Ordering::SeqCst) as usize;
            &self.envs[i % self.envs.len()]
        });
        k.invoke(event).await
    }

    /// Kills environment `i` (modulo their number) mid-invocation and restarts it.
    pub async fn kill_and_restart(&self, i: usize) -> anyhow::Result<()> {
        self.envs[i % self.envs.len()].kill_and_restart().await
    }

    pub fn kills(&self) -> u64 {
        self.envs.iter().map(Killable::kills).sum()
    }

    pub fn log_text(&self) -> String {
        self.envs
            .iter()
            .map(Killable::log_text)
            .collect::<Vec<_>>()
            .join("\n=== next environment ===\n")
    }
}
