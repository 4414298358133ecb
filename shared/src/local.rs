//! The local host: `task-scheduler serve`. One process serves the API over the SQLite
//! store and fires wake-ups from the in-process timer.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{self, ApiToken, Auth};
use crate::app::{Ports, Scheduler};
use crate::ports::{Clock, NoDeadLetters, NoMetrics, SystemClock, TaskStore, Waker};
use crate::store::SqliteStore;
use crate::wake::{LocalWaker, local::FireFn};
use crate::webhook::{
    HttpWebhookClient, Signer,
    guard::{LOCAL_DEFAULT_ALLOWED, TargetGuard},
    signing::StandardWebhooksSigner,
};

/// When a wake-up that failed (a store error) is tried again: past the longest lease
/// (the 30 s maximum webhook timeout plus the grace).
const RETRY_FAILED_WAKE: chrono::TimeDelta = chrono::TimeDelta::seconds(61);

/// Configuration of `serve`, from the environment (and `--listen`).
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tokens: Vec<ApiToken>,
    pub max_concurrency: usize,
    pub timer_capacity: usize,
    /// Which non-public targets may be called (`SCHEDULER_ALLOWED_TARGETS`).
    pub targets: TargetGuard,
    /// `SCHEDULER_SIGNING_SECRET`; when unset a secret is generated into the data directory.
    pub signing_secret: Option<String>,
    /// Requests per second per owner (`SCHEDULER_RATE_LIMIT`, 0 = unlimited); burst twice that.
    pub rate_limit: u32,
}

fn env_number(
    name: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| range.contains(n))
            .with_context(|| {
                format!(
                    "{name} must be an integer between {} and {}",
                    range.start(),
                    range.end()
                )
            }),
    }
}

impl LocalConfig {
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:3000";

    /// `listen` (the `--listen` flag) wins over `PORT`; both default to 127.0.0.1:3000.
    pub fn from_env(listen: Option<String>) -> anyhow::Result<Self> {
        let listen = match (listen, std::env::var("PORT").ok()) {
            (Some(l), _) => l
                .parse()
                .with_context(|| format!("--listen {l}: not an address like 127.0.0.1:3000"))?,
            (None, Some(p)) => {
                let port: u16 = p
                    .trim()
                    .parse()
                    .with_context(|| format!("PORT={p}: not a port number"))?;
                SocketAddr::from(([127, 0, 0, 1], port))
            }
            (None, None) => Self::DEFAULT_LISTEN.parse()?,
        };
        let tokens =
            ApiToken::parse_list(&std::env::var("SCHEDULER_API_TOKENS").unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            listen,
            data_dir: std::env::var_os("SCHEDULER_DATA_DIR")
                .map_or_else(|| PathBuf::from(".scheduler"), PathBuf::from),
            tokens,
            max_concurrency: env_number("SCHEDULER_MAX_CONCURRENCY", 256, 1..=10_000)?,
            timer_capacity: env_number("SCHEDULER_TIMER_CAPACITY", 100_000, 100..=10_000_000)?,
            targets: TargetGuard::from_env(LOCAL_DEFAULT_ALLOWED)
                .map_err(|e| anyhow::anyhow!(e))?,
            rate_limit: u32::try_from(env_number("SCHEDULER_RATE_LIMIT", 1000, 0..=1_000_000)?)?,
            signing_secret: std::env::var("SCHEDULER_SIGNING_SECRET")
                .ok()
                .filter(|s| !s.trim().is_empty()),
        })
    }

    /// Without tokens the API is open; that is only acceptable on this machine.
    pub fn auth(&self) -> anyhow::Result<Auth> {
        if !self.tokens.is_empty() {
            return Ok(Auth::Bearer(self.tokens.clone()));
        }
        if !self.listen.ip().is_loopback() {
            bail!(
                "refusing to listen on {} without authentication: set SCHEDULER_API_TOKENS (name:token pairs) or listen on a loopback address",
                self.listen
            );
        }
        Ok(Auth::Open)
    }
}

/// An exclusive lock on the data directory, so two processes never share one store.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "{} is in use by another task-scheduler process",
            dir.display()
        )
    })?;
    Ok(file)
}

/// The signer: `SCHEDULER_SIGNING_SECRET`, else the secret kept in `dir/signing-secret`
/// (generated on first start, readable by the owner only).
fn signer(config: &LocalConfig) -> anyhow::Result<StandardWebhooksSigner> {
    if let Some(secret) = &config.signing_secret {
        return StandardWebhooksSigner::parse(secret)
            .map_err(|e| anyhow::anyhow!("SCHEDULER_SIGNING_SECRET: {e}"));
    }
    let path = config.data_dir.join("signing-secret");
    let secret = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = StandardWebhooksSigner::generate();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            std::io::Write::write_all(&mut file, secret.as_bytes())?;
            file.sync_all()?;
            secret
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    info!(
        secret_file = %path.display(),
        "deliveries are signed (Standard Webhooks); give receivers the secret: cat {}",
        path.display()
    );
    StandardWebhooksSigner::parse(secret.trim())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Runs the local scheduler until `shutdown` is cancelled.
pub async fn serve(config: LocalConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let auth = config.auth()?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let store = SqliteStore::open(&config.data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    // Claims left by a process that died cannot be live: make them re-claimable now.
    let now = clock.now();
    let mut recovered = 0;
    for task in store.running().await.map_err(|e| anyhow::anyhow!("{e}"))? {
        if let Some(released) = task.release_lease(now) {
            store
                .update(&released)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            recovered += 1;
        }
    }

    let waker = LocalWaker::new(config.timer_capacity, (config.timer_capacity / 4).max(100));
    let signer: Arc<dyn Signer> = Arc::new(signer(&config)?);
    let webhook = HttpWebhookClient::guarded(clock.clone(), Some(signer), config.targets.clone())
        .context("building the HTTP client")?;
    let scheduler = Scheduler::new(Ports {
        store: Arc::new(store.clone()),
        waker: waker.clone(),
        webhook: Arc::new(webhook),
        clock: clock.clone(),
        dead_letters: Arc::new(NoDeadLetters),
        metrics: Arc::new(NoMetrics),
        targets: Arc::new(config.targets.clone()),
    });

    let fire: FireFn = {
        let scheduler = scheduler.clone();
        let waker = waker.clone();
        let clock = clock.clone();
        Arc::new(move |wake| {
            let scheduler = scheduler.clone();
            let waker = waker.clone();
            let clock = clock.clone();
            Box::pin(async move {
                if let Err(e) = scheduler.fire(wake).await {
                    // The task is left as stored (perhaps `running` under a lease that no one
                    // will finish). Look again once any lease it may hold has expired, so the
                    // attempt is re-claimed rather than waiting for the next start.
                    let again = clock.now() + RETRY_FAILED_WAKE;
                    error!(task_id = %wake.task_id, attempt = wake.attempt, error = %e, retry_at = %again, "wake-up failed");
                    let _ = waker.arm(wake, again).await;
                }
            })
        })
    };
    let timer_stop = CancellationToken::new();
    let timer = tokio::spawn(waker.clone().run(
        Arc::new(store.clone()),
        clock,
        fire,
        config.max_concurrency,
        timer_stop.clone(),
        Duration::from_secs(35),
    ));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    if matches!(auth, Auth::Open) {
        warn!(
            "no SCHEDULER_API_TOKENS set: the API is open to anyone on this machine (loopback only)"
        );
    }
    let pending = store.pending().await.unwrap_or_default();
    info!(
        %addr,
        data = %store.path().display(),
        pending,
        recovered,
        "listening on http://{addr}"
    );
    let limit = api::RateLimit::per_second(config.rate_limit, config.rate_limit.saturating_mul(2));
    axum::serve(listener, api::router_with(scheduler, auth, limit))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving HTTP")?;
    info!("HTTP stopped; finishing deliveries in flight");
    timer_stop.cancel();
    let _ = timer.await;
    info!("stopped");
    Ok(())
}
