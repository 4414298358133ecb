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

/// The local sweeper: every `interval` (the first one `interval` after start-up, which has
/// swept already), [`Scheduler::recover`] re-arms what should be moving and is not (a
/// wake-up whose re-arm failed, a write whose arm failed), until `stop`.
async fn sweep_every(
    scheduler: Scheduler,
    scan: impl crate::ports::TaskScan,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match scheduler.recover(&scan, scheduler.now()).await {
            Ok(swept) if swept == Default::default() => {}
            Ok(swept) => warn!(
                rearmed = swept.rearmed,
                dead_letters = swept.dead_letters,
                failed = swept.failed,
                "sweep recovered stalled tasks"
            ),
            Err(e) => warn!(error = %e, "sweep failed; the next one tries again"),
        }
    }
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
    })
    .with_schedules(Arc::new(store.clone()));
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
    let sweeper = tokio::spawn(sweep_every(
        scheduler.clone(),
        store.clone(),
        config.sweep_interval,
        timer_stop.clone(),
    ));
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
    // The console's page is static and holds no data; its API calls are authenticated.
    let app = api::router_with(scheduler, auth, limit).merge(crate::console::router());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving HTTP")?;
    info!("HTTP stopped; finishing deliveries in flight");
    timer_stop.cancel();
    let _ = sweeper.await;
    let _ = timer.await;
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{TimeDelta, Utc};

    use super::*;
    use crate::app::SWEEP_GRACE;
    use crate::fakes::{Rig, ScriptedWebhook, TokioClock, create};
    use crate::ports::AllowAllTargets;

    /// The local sweeper runs every interval and re-arms a task whose wake-up was lost; it
    /// does not run before the first interval, and stops when told to.
    #[tokio::test(start_paused = true)]
    async fn the_local_sweeper_rearms_a_lost_wake_up_every_interval() {
        let clock = TokioClock::starting_at(Utc::now());
        let rig = Rig::with(
            ScriptedWebhook::default(),
            Arc::new(AllowAllTargets),
            Arc::new(clock),
        );
        let t = create(&rig.scheduler, clock.now() + TimeDelta::seconds(1), 3).await;
        // The wake-up is lost.
        rig.waker.armed.lock().unwrap().clear();
        let stop = CancellationToken::new();
        let interval = Duration::from_secs(10);
        let sweeper = tokio::spawn(sweep_every(
            rig.scheduler.clone(),
            rig.store.clone(),
            interval,
            stop.clone(),
        ));
        // The first sweeps come before the task is more than the grace late: nothing.
        let late_enough = t.run_at + SWEEP_GRACE;
        let mut sweeps = 0;
        while clock.now() + TimeDelta::from_std(interval).unwrap() <= late_enough {
            tokio::time::sleep(interval).await;
            sweeps += 1;
            assert!(rig.waker.armed.lock().unwrap().is_empty(), "sweep {sweeps}");
        }
        // The first sweep after it re-arms the task, for its due time.
        tokio::time::sleep(interval + Duration::from_millis(1)).await;
        assert_eq!(
            rig.waker.armed.lock().unwrap().as_slice(),
            &[(
                crate::domain::WakeUp {
                    task_id: t.id,
                    attempt: 1
                },
                t.run_at
            )]
        );
        assert!(clock.now() - late_enough <= TimeDelta::from_std(interval).unwrap() * 2);
        stop.cancel();
        sweeper.await.unwrap();
    }
}
