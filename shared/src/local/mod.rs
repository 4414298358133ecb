//! The local host: `task-scheduler serve`. One process serves the API over the SQLite
//! store and fires wake-ups from the in-process timer.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod config;

pub use config::{ConfigError, LocalConfig};

use crate::api::{self, Auth};
use crate::app::{Ports, Scheduler};
use crate::ports::{Clock, NoDeadLetters, NoMetrics, SystemClock};
use crate::store::SqliteStore;
use crate::wake::{LocalWaker, local::FireFn};
use crate::webhook::{
    HttpWebhookClient, Signer,
    signing::{SECRET_FILE, StandardWebhooksSigner},
};

/// How long a stop waits for deliveries in flight: the longest one (the 30 s maximum
/// webhook timeout) plus a five-second margin to record its outcome. What is still running
/// after that stays `running` in the store and is recovered on the next start.
const DRAIN: Duration = Duration::from_secs(35);

/// The rate limit's burst, as a multiple of its per-second rate: a client may send two
/// seconds' worth at once.
const RATE_LIMIT_BURST: u32 = 2;

/// How many wake-ups the timer pages in from disk at a time: a quarter of what it may hold
/// (a refill is a bounded read, and leaves the set room for what is armed meanwhile), and
/// never fewer than [`MIN_TIMER_PAGE`].
fn timer_page(capacity: usize) -> usize {
    (capacity / 4).max(MIN_TIMER_PAGE)
}

/// The smallest refill worth a query.
const MIN_TIMER_PAGE: usize = 100;

/// The signer: `SCHEDULER_SIGNING_SECRET`, else the secret kept in the data directory.
fn signer(config: &LocalConfig) -> anyhow::Result<Arc<StandardWebhooksSigner>> {
    if let Some(signer) = &config.signing_secret {
        return Ok(signer.clone());
    }
    let path = config.data_dir.join(SECRET_FILE);
    let signer = StandardWebhooksSigner::load_or_generate(&path)?;
    info!(
        secret_file = %path.display(),
        "deliveries are signed (Standard Webhooks); give receivers the secret: cat {}",
        path.display()
    );
    Ok(Arc::new(signer))
}

/// Runs the local scheduler until `shutdown` is cancelled.
pub async fn serve(config: LocalConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let auth = config.auth()?;
    let store = SqliteStore::open(&config.data_dir)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let waker = LocalWaker::new(config.timer_capacity, timer_page(config.timer_capacity));
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
    // Before the timer starts, so that it pages the released attempts in.
    let recovered = scheduler
        .recover_leases(&store)
        .await
        .context("recovering the claims of a previous process")?;

    let fire: FireFn = {
        let scheduler = scheduler.clone();
        Arc::new(move |wake| {
            let scheduler = scheduler.clone();
            Box::pin(async move { scheduler.fire_or_rearm(wake).await })
        })
    };
    let timer_stop = CancellationToken::new();
    let timer = tokio::spawn(waker.clone().run(
        Arc::new(store.clone()),
        clock,
        fire,
        config.max_concurrency,
        timer_stop.clone(),
        DRAIN,
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
    let limit = api::RateLimit::per_second(
        config.rate_limit,
        config.rate_limit.saturating_mul(RATE_LIMIT_BURST),
    );
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
