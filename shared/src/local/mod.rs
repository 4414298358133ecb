//! The local host: `task-scheduler serve`. One process serves the API over the SQLite
//! store and fires wake-ups from the in-process timer.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

mod config;

pub use config::{ConfigError, LocalConfig};

use crate::api::{self, Auth};
use crate::app::{Ports, Scheduler};
use crate::ports::{Clock, NoDeadLetters, NoMetrics, SystemClock, TaskStore, Waker};
use crate::store::SqliteStore;
use crate::wake::{LocalWaker, local::FireFn};
use crate::webhook::{HttpWebhookClient, Signer, signing::StandardWebhooksSigner};

/// When a wake-up that failed (a store error) is tried again: past the longest lease
/// (the 30 s maximum webhook timeout plus the grace).
const RETRY_FAILED_WAKE: chrono::TimeDelta = chrono::TimeDelta::seconds(61);

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
fn signer(config: &LocalConfig) -> anyhow::Result<Arc<StandardWebhooksSigner>> {
    if let Some(signer) = &config.signing_secret {
        return Ok(signer.clone());
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
        .map(Arc::new)
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
    let signer: Arc<dyn Signer> = signer(&config)?;
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
