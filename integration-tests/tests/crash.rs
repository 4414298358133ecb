//! Crash safety: under a steady stream of creates and deliveries the server is killed with
//! SIGKILL at random moments, several times. After the last restart every task that was
//! answered `201` is delivered and `completed`; a task is delivered twice only if its first
//! delivery was in flight when a kill landed (at-least-once), and the test counts those.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{App, Receiver, Reply};
use rand::Rng;
use serde_json::json;

/// How long the receiver holds each delivery, so that some are in flight at every kill.
const HOLD: Duration = Duration::from_millis(40);
const KILLS: usize = 5;
const CREATORS: usize = 4;

/// Creates tasks until the server stops answering; returns the paths answered with 201.
async fn create_until_refused(
    base: String,
    recv: Arc<Receiver>,
    next: Arc<Mutex<u64>>,
) -> Vec<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    loop {
        let n = {
            let mut g = next.lock().unwrap();
            *g += 1;
            *g
        };
        let path = format!("/crash/{n}");
        recv.script(&path, [], Reply::ok().delay(HOLD));
        // Due between now and 1.5 s from now, so deliveries and creates overlap.
        let delay_ms = rand::rng().random_range(0..1500);
        let run_at = chrono::Utc::now() + chrono::TimeDelta::milliseconds(delay_ms);
        let body = json!({
            "action": "webhook",
            "payload": {"url": recv.url(&path), "data": {"n": n}},
            "run_at": integration_tests::rfc3339(run_at),
        });
        match client
            .post(format!("{base}/tasks"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 201 => acked.push(path),
            Ok(r) => panic!(
                "unexpected {} while creating: {:?}",
                r.status(),
                r.text().await
            ),
            // Refused or cut off by the kill: the client was told nothing, so nothing is owed.
            Err(_) => return acked,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    let recv = Arc::new(Receiver::start().await);
    let mut app = App::spawn().await;
    let next = Arc::new(Mutex::new(0u64));
    let mut acked: Vec<String> = Vec::new();
    let mut kills: Vec<Instant> = Vec::new();

    for _ in 0..KILLS {
        let creators: Vec<_> = (0..CREATORS)
            .map(|_| {
                tokio::spawn(create_until_refused(
                    app.base_url(),
                    recv.clone(),
                    next.clone(),
                ))
            })
            .collect();
        let run_for = Duration::from_millis(rand::rng().random_range(300..1200));
        tokio::time::sleep(run_for).await;
        app.kill9().await;
        kills.push(Instant::now());
        for c in creators {
            acked.extend(c.await.unwrap());
        }
        app.restart().await;
    }

    // After the last restart, every acknowledged task arrives.
    let wanted: HashSet<String> = acked.iter().cloned().collect();
    assert_eq!(wanted.len(), acked.len());
    assert!(
        acked.len() > 100,
        "too few tasks to mean anything: {}",
        acked.len()
    );
    let delivered = recv
        .wait_until(Duration::from_secs(30), |arrivals| {
            let got: HashSet<&str> = arrivals.iter().map(|a| a.path.as_str()).collect();
            wanted.iter().all(|p| got.contains(p.as_str()))
        })
        .await;
    if let Err(arrivals) = delivered {
        let got: HashSet<String> = arrivals.into_iter().map(|a| a.path).collect();
        let lost: Vec<&String> = wanted
            .iter()
            .filter(|p| !got.contains(*p))
            .take(10)
            .collect();
        panic!(
            "acknowledged tasks never delivered (first 10): {lost:?}\n{}",
            app.output().text()
        );
    }
    // Time for a late duplicate to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut by_path: HashMap<String, Vec<Instant>> = HashMap::new();
    for a in recv.arrivals() {
        by_path.entry(a.path.clone()).or_default().push(a.at);
    }
    // Every delivery but the last must have been cut short by a kill: it arrived at most a
    // hold (plus the time to record it) before that kill, and the next one after it. A task
    // in flight at two kills (a redelivery after a restart, cut by the next kill on a loaded
    // machine) is delivered three times, each extra delivery explained by its own kill.
    let mut duplicates = 0;
    for (path, times) in &by_path {
        if times.len() < 2 {
            continue;
        }
        duplicates += times.len() - 1;
        assert!(
            times.len() <= KILLS + 1,
            "{path} delivered {} times with {KILLS} kills",
            times.len()
        );
        for pair in times.windows(2) {
            let (cut_short, next) = (pair[0], pair[1]);
            let cut = kills.iter().any(|&k| {
                cut_short <= k
                    && k.duration_since(cut_short) <= HOLD + Duration::from_millis(300)
                    && next > k
            });
            assert!(
                cut,
                "{path} was delivered again without a kill during its earlier delivery: {times:?}"
            );
        }
    }

    let completed = app.api().list_all(Some("completed")).await;
    let completed_ids = completed.len();
    let owed_and_done = completed
        .iter()
        .filter(|t| {
            let url = t["payload"]["url"].as_str().unwrap();
            wanted.iter().any(|p| url.ends_with(p.as_str()))
        })
        .count();
    assert_eq!(
        owed_and_done,
        wanted.len(),
        "every acknowledged task is completed"
    );
    println!(
        "crash safety: {KILLS} kills, {} tasks acknowledged, {} delivered in all ({} completed), {duplicates} extra deliveries (each in flight at a kill)",
        wanted.len(),
        by_path.len(),
        completed_ids
    );
}
