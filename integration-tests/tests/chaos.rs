//! The fault-injection rehearsal: the cloud rehearsal's rig (the real binary on
//! cargo lambda's Runtime API, moto, the test playing Scheduler and the SQS event source)
//! under faults, all drawn from one seeded random generator (`CHAOS_SEED`, printed):
//!
//! - the function's AWS calls go through [`FaultProxy`]: HTTP 500 and `ThrottlingException`
//!   before the call is applied, answers lost after it was applied, latency;
//! - the function is SIGKILLed at random moments mid-invocation and restarted;
//! - the SQS pump delivers some batches twice and moves a message to the infrastructure DLQ
//!   once it was received more than `maxReceiveCount` times;
//! - the Scheduler player drops some invocations (as Scheduler does once its retries end);
//! - `{"kind":"sweep"}` is invoked every `CHAOS_SWEEP_MS` (whatever the function answers).
//!
//! Hours-ahead tasks are created by a second function whose clock is two hours behind (so the
//! task is hours ahead for it and gets a Scheduler schedule two minutes before its due time),
//! and then run on the real clock: their schedules fire at a uniform random moment of their
//! minute, and the function re-arms each on the delay queue for the rest (a minute: due 60 to
//! 64 s after the create, so the run does not wait two minutes for them).
//!
//! At the end it checks the invariants (README, "Under faults"), prints them as a table and writes the
//! report to `$CHAOS_REPORT` (default `integration-tests/chaos-report.md`).
//!
//! Ignored by a plain `cargo test`: `make test-chaos` (bounded, 300 tasks) and `make chaos`
//! (longer) run it with moto up.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::{DateTime, TimeDelta, Utc};
use integration_tests::{
    Receiver, Reply,
    aws::{
        AwsRig, FaultProxy, FaultRates, Fleet, Invoked, api_event, api_response, at_time, sqs_event,
    },
    in_ms, parse_time, rfc3339,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

const OWNER: &str = "arn:aws:iam::123456789012:user/chaos";
/// Every task's webhook timeout here.
const TIMEOUT_SECONDS: i64 = 1;
/// The lease of a claimed attempt: the task's timeout plus the product's 30 s lease grace
/// (docs/architecture.md).
const LEASE: TimeDelta = TimeDelta::seconds(TIMEOUT_SECONDS + 30);
/// The sweeper's grace (docs/architecture.md, "Grace: 30 s"): it re-arms a task once the
/// moment it should have moved is this far past.
const SWEEP_GRACE: TimeDelta = TimeDelta::seconds(30);
/// How far behind the clock of the function that creates hours-ahead tasks stands.
const HOURS: i64 = 2;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
struct Config {
    seed: u64,
    tasks: usize,
    /// Creates are spread over this span.
    create_span: Duration,
    sweep_period: Duration,
    /// Execution environments of the function (Lambda's concurrency).
    concurrency: usize,
    kill_every: (u64, u64),
    duplicate_batches: f64,
    drop_schedules: f64,
    max_receive: i32,
    visibility: i32,
    rates: FaultRates,
}

impl Config {
    fn from_env() -> Config {
        let seed = env_or("CHAOS_SEED", rand::random::<u64>() % 1_000_000);
        Config {
            seed,
            tasks: env_or("CHAOS_TASKS", 300),
            // Within the minute the hours-ahead tasks take anyway: spreading the creates
            // costs no time and keeps the function's environments from queueing them.
            create_span: Duration::from_secs(env_or("CHAOS_CREATE_SECS", 40)),
            sweep_period: Duration::from_millis(env_or("CHAOS_SWEEP_MS", 5_000)),
            // Environments mostly wait (on the injected latency, the SDK's backoff after a
            // fault, a wake-up's last second): with too few, invocations queue behind them
            // and every task is late, which is the rig's limit, not the product's.
            concurrency: env_or("CHAOS_CONCURRENCY", 12),
            kill_every: (
                env_or("CHAOS_KILL_MIN_MS", 4_000),
                env_or("CHAOS_KILL_MAX_MS", 9_000),
            ),
            duplicate_batches: 0.1,
            drop_schedules: 0.15,
            max_receive: env_or("CHAOS_MAX_RECEIVE", 4),
            visibility: 3,
            rates: FaultRates {
                server_error: 0.04,
                throttle: 0.04,
                lost_response: 0.04,
                latency: 0.04,
                max_latency: Duration::from_millis(400),
                outage: 0.004,
                outage_len: Duration::from_millis(env_or("CHAOS_OUTAGE_MS", 2_500)),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Delay,
    Soon,
    Hours,
    Flaky,
    Doomed,
    DoomedRetried,
    Cancel,
}

impl Kind {
    /// Attempts the receiver fails on purpose.
    fn scripted_failures(self) -> usize {
        match self {
            Kind::Flaky => 1,
            Kind::Doomed | Kind::DoomedRetried => 2,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    n: usize,
    kind: Kind,
    path: String,
    /// Every answer to the create (status, body), or the reason none came.
    create_answers: Vec<Result<(u16, Value), String>>,
    id: Option<String>,
    run_at: Option<DateTime<Utc>>,
    cancel: Option<Result<(u16, Value), String>>,
    retries: Vec<Result<(u16, Value), String>>,
}

#[derive(Default)]
struct Stats {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn add(&self, k: &str, n: u64) {
        *self.counts.lock().unwrap().entry(k.to_owned()).or_default() += n;
    }
}

struct World {
    cfg: Config,
    rig: AwsRig,
    f: Fleet,
    receiver: Receiver,
    infra_dlq: String,
    stats: Stats,
    kills: Mutex<Vec<Instant>>,
    dead_letters: Mutex<Vec<Value>>,
    rng: Mutex<StdRng>,
    stop: AtomicBool,
    calm: AtomicBool,
}

impl World {
    fn rand(&self, lo: f64, hi: f64) -> f64 {
        self.rng.lock().unwrap().random_range(lo..hi)
    }

    fn chance(&self, p: f64) -> bool {
        self.rand(0.0, 1.0) < p
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

async fn api(
    f: &Fleet,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<(u16, Value), String> {
    match f
        .invoke(&api_event(method, path, body, Some(OWNER), headers))
        .await
    {
        Invoked::Answer(v) => Ok(api_response(&v)),
        Invoked::Error(e) => Err(format!("invocation error: {e}")),
        Invoked::Killed => Err("killed".into()),
    }
}

/// Plays the SQS event source on `queue` for `f` until the world stops.
async fn pump(w: Arc<World>, queue: String) {
    while !w.stopped() {
        let msgs = match w
            .rig
            .sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .visibility_timeout(w.cfg.visibility)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
        {
            Ok(r) => r.messages.unwrap_or_default(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Vec::new()
            }
        };
        if msgs.is_empty() {
            continue;
        }
        let mut batch = Vec::new();
        for m in msgs {
            let receives: i32 = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            w.stats.add("sqs: receives", 1);
            if receives > w.cfg.max_receive {
                // The redrive policy: past maxReceiveCount the message goes to the DLQ.
                let _ = w
                    .rig
                    .sqs
                    .send_message()
                    .queue_url(&w.infra_dlq)
                    .message_body(m.body().unwrap_or_default())
                    .send()
                    .await;
                let _ = w
                    .rig
                    .sqs
                    .delete_message()
                    .queue_url(&queue)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await;
                w.stats
                    .add("sqs: moved to the DLQ after maxReceiveCount", 1);
            } else {
                batch.push(m);
            }
        }
        if batch.is_empty() {
            continue;
        }
        let event = sqs_event(&queue, &batch);
        match w.f.invoke(&event).await {
            Invoked::Answer(out) => {
                let failed: Vec<String> = out["batchItemFailures"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                w.stats
                    .add("sqs: items reported failed", failed.len() as u64);
                for m in &batch {
                    if !failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
                        let _ = w
                            .rig
                            .sqs
                            .delete_message()
                            .queue_url(&queue)
                            .receipt_handle(m.receipt_handle().unwrap_or_default())
                            .send()
                            .await;
                    }
                }
            }
            Invoked::Error(_) => w.stats.add("sqs: batch invocations failed", 1),
            Invoked::Killed => w.stats.add("sqs: batch invocations killed", 1),
        }
        if !w.calm.load(Ordering::SeqCst) && w.chance(w.cfg.duplicate_batches) {
            // At-least-once: the same messages delivered once more.
            w.stats
                .add("sqs: messages delivered twice", batch.len() as u64);
            let _ = w.f.invoke(&event).await;
        }
    }
}

/// Plays EventBridge Scheduler: every schedule fires at a uniform random moment of its
/// at() minute (its Input is invoked, the schedule deletes itself), or is dropped.
async fn scheduler(w: Arc<World>) {
    let mut seen = std::collections::HashSet::new();
    // Schedules waiting for their moment here (until then, not read again).
    let waiting = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    while !w.stopped() {
        let names: Vec<String> = match w
            .rig
            .scheduler
            .list_schedules()
            .group_name(&w.rig.group)
            .send()
            .await
        {
            Ok(r) => r
                .schedules()
                .iter()
                .filter_map(|s| s.name().map(str::to_owned))
                .collect(),
            Err(_) => Vec::new(),
        };
        for name in names {
            if waiting.lock().unwrap().contains(&name) {
                continue;
            }
            let Some(s) = w.rig.get_schedule(&name).await else {
                continue;
            };
            let expression = s.schedule_expression().unwrap_or_default().to_owned();
            if !seen.insert((name.clone(), expression.clone())) {
                continue;
            }
            w.stats.add("scheduler: schedules seen", 1);
            let Some(input) = s
                .target()
                .and_then(|t| t.input())
                .and_then(|i| serde_json::from_str::<Value>(i).ok())
            else {
                continue;
            };
            let fire_at =
                at_time(&expression) + TimeDelta::milliseconds(w.rand(0.0, 60_000.0) as i64);
            let drop = w.chance(w.cfg.drop_schedules);
            let w = w.clone();
            waiting.lock().unwrap().insert(name.clone());
            let waiting = waiting.clone();
            tokio::spawn(async move {
                let wait = (fire_at - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                let _ = w
                    .rig
                    .scheduler
                    .delete_schedule()
                    .name(&name)
                    .group_name(&w.rig.group)
                    .send()
                    .await;
                waiting.lock().unwrap().remove(&name);
                if drop && !w.calm.load(Ordering::SeqCst) {
                    w.stats.add("scheduler: invocations dropped", 1);
                    return;
                }
                // Scheduler's retry policy: a failed invocation is retried.
                for _ in 0..5 {
                    w.stats.add("scheduler: invocations", 1);
                    if let Invoked::Answer(_) = w.f.invoke(&input).await {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                w.stats
                    .add("scheduler: invocations failed after retries", 1);
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Invokes the sweep every period; whatever it answers (an unknown event before the sweeper
/// exists) is counted, never fatal.
async fn sweeper(w: Arc<World>) {
    while !w.stopped() {
        tokio::time::sleep(w.cfg.sweep_period).await;
        let outcome = match w.f.invoke(&json!({"kind": "sweep"})).await {
            Invoked::Answer(v) => match v.get("result").and_then(Value::as_str) {
                Some(r) => format!("sweep: answered {r}"),
                None if v.get("retryable").is_some() => "sweep: refused (unknown event?)".into(),
                None => format!(
                    "sweep: answered {}",
                    v.to_string().chars().take(40).collect::<String>()
                ),
            },
            Invoked::Error(_) => "sweep: invocation failed".into(),
            Invoked::Killed => "sweep: killed".into(),
        };
        w.stats.add(&outcome, 1);
    }
}

async fn killer(w: Arc<World>) {
    while !w.stopped() && !w.calm.load(Ordering::SeqCst) {
        let (lo, hi) = w.cfg.kill_every;
        let wait = w.rand(lo as f64, hi as f64) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if w.calm.load(Ordering::SeqCst) {
            return;
        }
        let i = w.rand(0.0, 1_000.0) as usize;
        w.kills.lock().unwrap().push(Instant::now());
        w.f.kill_and_restart(i).await.expect("restart the function");
    }
}

/// Reads the dead letters (customers' failed tasks) as a consumer does, but keeps each
/// message in flight (12 h of visibility) instead of deleting it: SQS remembers a
/// deduplication id for 5 minutes whether or not its message was deleted, moto only while the
/// message is in the queue, and the run is shorter than 5 minutes.
async fn dead_letters(w: Arc<World>) {
    while !w.stopped() {
        let msgs = w
            .rig
            .sqs
            .receive_message()
            .queue_url(&w.rig.failed_tasks_queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(43_200)
            .wait_time_seconds(1)
            .send()
            .await
            .map(|r| r.messages.unwrap_or_default())
            .unwrap_or_default();
        for m in msgs {
            if let Ok(v) = serde_json::from_str::<Value>(m.body().unwrap_or("")) {
                w.dead_letters.lock().unwrap().push(v);
            }
        }
    }
}

fn dead_letters_for(w: &World, id: &str) -> usize {
    w.dead_letters
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d["task_id"] == id)
        .count()
}

/// Creates one task as a careful client does: with an idempotency key, retrying (3 tries)
/// when told nothing or 5xx.
async fn create(w: Arc<World>, past: Option<Arc<Fleet>>, mut e: Entry) -> Entry {
    let creator: &Fleet = match &past {
        Some(p) => p,
        None => &w.f,
    };
    let key = format!("chaos-{}-{}", w.cfg.seed, e.n);
    let url = w.receiver.url(&e.path);
    let mut body = json!({
        "action": "webhook",
        "payload": {"url": url, "method": "POST", "data": {"n": e.n}},
        "timeout_seconds": TIMEOUT_SECONDS,
        "retry": {"max_attempts": if matches!(e.kind, Kind::Flaky) { 3 } else { 2 }, "initial_backoff_seconds": 1, "max_backoff_seconds": 1},
    });
    match e.kind {
        Kind::Delay => body["delay_seconds"] = json!(w.rand(1.0, 7.0) as u64),
        Kind::Hours => body["run_at"] = json!(rfc3339(in_ms(60_000 + w.rand(0.0, 4_000.0) as i64))),
        _ => body["run_at"] = json!(rfc3339(in_ms(w.rand(2_000.0, 8_000.0) as i64))),
    }
    for _ in 0..3 {
        let answer = api(
            creator,
            "POST",
            "/tasks",
            Some(&body),
            &[("idempotency-key", key.as_str())],
        )
        .await;
        e.create_answers.push(answer.clone());
        if let Ok((200 | 201, t)) = &answer {
            e.id = t["task_id"].as_str().map(str::to_owned);
            e.run_at = t["run_at"].as_str().map(parse_time);
            break;
        }
        if let Ok((status, _)) = &answer
            && *status < 500
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (Some(id), Some(run_at)) = (e.id.clone(), e.run_at) else {
        return e;
    };
    match e.kind {
        Kind::Cancel => {
            // Racing the wake-up: around run_at.
            let at = run_at + TimeDelta::milliseconds(w.rand(-700.0, 500.0) as i64);
            tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
            e.cancel = Some(api(&w.f, "DELETE", &format!("/tasks/{id}"), None, &[]).await);
        }
        Kind::DoomedRetried => {
            // A /retry racing the wake-ups (refused unless failed), then one after the dead
            // letter came.
            let at = run_at + TimeDelta::milliseconds(w.rand(-500.0, 1_500.0) as i64);
            tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
            e.retries
                .push(api(&w.f, "POST", &format!("/tasks/{id}/retry"), None, &[]).await);
            let deadline = Instant::now() + Duration::from_secs(30);
            while dead_letters_for(&w, &id) == 0 && Instant::now() < deadline && !w.stopped() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if dead_letters_for(&w, &id) > 0 {
                tokio::time::sleep(Duration::from_millis(w.rand(0.0, 1_000.0) as u64)).await;
                e.retries
                    .push(api(&w.f, "POST", &format!("/tasks/{id}/retry"), None, &[]).await);
            }
        }
        _ => {}
    }
    e
}

/// Every task of the owner, through the API (faults off by then).
async fn list_all(f: &Fleet) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let path = match &cursor {
            Some(c) => format!(
                "/tasks?limit=100&cursor={}",
                integration_tests::query_escape(c)
            ),
            None => "/tasks?limit=100".into(),
        };
        let (status, page) = match api(f, "GET", &path, None, &[]).await {
            Ok(a) => a,
            Err(_) => continue,
        };
        if status != 200 {
            continue;
        }
        out.extend(page["tasks"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("listing the tasks did not end");
}

/// The documented recovery bound for a task as `t` shows it, or `None` when it has nothing
/// left to do. The moment it should have moved is its due time (`scheduled`: the next
/// attempt's, or `run_at`), its lease's end (`running`: claimed at `updated_at`), or its
/// failure (`failed` with its dead letter not seen yet). The sweeper re-arms it at most
/// [`SWEEP_GRACE`] + one sweep period after that; the re-armed attempt is then claimed and
/// runs within its [`LEASE`], or, if it is lost again, the bound moves with the new state.
fn recovery_bound(
    t: &Value,
    has_dead_letter: bool,
    sweep_period: TimeDelta,
) -> Option<DateTime<Utc>> {
    let time = |k: &str| t[k].as_str().map(parse_time);
    let should_have_moved = match t["status"].as_str()? {
        "scheduled" => time("next_attempt_at").or(time("run_at"))?,
        "running" => time("updated_at")? + LEASE,
        "failed" if !has_dead_letter => t["dead_letter"]["recorded_at"]
            .as_str()
            .map(parse_time)
            .or(time("updated_at"))?,
        _ => return None,
    };
    Some(should_have_moved + SWEEP_GRACE + sweep_period + LEASE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto and the sweeper: make test-chaos"]
async fn nothing_acknowledged_is_lost_under_faults() {
    let cfg = Config::from_env();
    println!(
        "chaos: seed {} (CHAOS_SEED={} to replay), {} tasks, sweep every {:?}, {} execution environments",
        cfg.seed, cfg.seed, cfg.tasks, cfg.sweep_period, cfg.concurrency
    );
    let started = Instant::now();
    let rig = AwsRig::create().await;
    let infra_dlq = testkit::create_queue(&rig.sqs, "infra-dlq").await;
    let proxy = FaultProxy::start(&rig.endpoint, cfg.seed, cfg.rates)
        .await
        .unwrap();
    let env: Vec<(String, String)> = rig
        .function_env()
        .into_iter()
        .map(|(k, v)| {
            if k == "AWS_ENDPOINT_URL" {
                (k, proxy.url())
            } else {
                (k, v)
            }
        })
        .collect();
    // The secret is read at start-up: no faults until both functions are up.
    proxy.calm_down();
    let f = Fleet::start(cfg.concurrency, &env, None).await.unwrap();
    let past = Arc::new(
        Fleet::start(1, &env, Some(TimeDelta::hours(-HOURS)))
            .await
            .unwrap(),
    );
    let receiver = Receiver::start().await;
    let w = Arc::new(World {
        rng: Mutex::new(StdRng::seed_from_u64(cfg.seed ^ 0x5eed)),
        cfg: cfg.clone(),
        rig,
        f,
        receiver,
        infra_dlq,
        stats: Stats::default(),
        kills: Mutex::new(Vec::new()),
        dead_letters: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        calm: AtomicBool::new(false),
    });
    proxy.resume();

    let mut background = vec![
        tokio::spawn(scheduler(w.clone())),
        tokio::spawn(sweeper(w.clone())),
        tokio::spawn(dead_letters(w.clone())),
    ];
    // The event source polls with several pollers, one batch per environment, up to its
    // maximum concurrency; half the environments here, the rest for the API and the sweep.
    // Each waits for its batch's slowest wake-up, so too few leave wake-ups queued late.
    for _ in 0..(cfg.concurrency / 2).max(2) {
        background.push(tokio::spawn(pump(w.clone(), w.rig.delay_queue_url.clone())));
    }
    let killer_task = tokio::spawn(killer(w.clone()));

    // The work: hours-ahead tasks first (they take longest), then the rest spread out.
    let mut entries = Vec::new();
    for n in 0..cfg.tasks {
        let x = w.rand(0.0, 1.0);
        let kind = match x {
            _ if x < 0.10 => Kind::Hours,
            _ if x < 0.40 => Kind::Delay,
            _ if x < 0.62 => Kind::Soon,
            _ if x < 0.74 => Kind::Flaky,
            _ if x < 0.80 => Kind::Doomed,
            _ if x < 0.88 => Kind::DoomedRetried,
            _ => Kind::Cancel,
        };
        let path = format!("/t/{n}");
        let fail = || Reply::status(500);
        match kind {
            Kind::Flaky => w.receiver.script(&path, [fail()], Reply::ok()),
            Kind::Doomed => w.receiver.script(&path, [], fail()),
            Kind::DoomedRetried => w.receiver.script(&path, [fail(), fail()], Reply::ok()),
            _ => w.receiver.script(&path, [], Reply::ok()),
        }
        entries.push(Entry {
            n,
            kind,
            path,
            create_answers: Vec::new(),
            id: None,
            run_at: None,
            cancel: None,
            retries: Vec::new(),
        });
    }
    entries.sort_by_key(|e| (e.kind != Kind::Hours, e.n));
    let span = cfg.create_span.as_secs_f64() / cfg.tasks as f64;
    let creators: Vec<_> = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let w = w.clone();
            let creator = (e.kind == Kind::Hours).then(|| past.clone());
            let slot = Duration::from_secs_f64(span * i as f64);
            tokio::spawn(async move {
                tokio::time::sleep(slot).await;
                create(w, creator, e).await
            })
        })
        .collect();
    let mut entries = Vec::new();
    for c in creators {
        entries.push(c.await.unwrap());
    }
    let acked: Vec<&Entry> = entries.iter().filter(|e| e.id.is_some()).collect();
    let last_due = acked
        .iter()
        .filter_map(|e| e.run_at)
        .max()
        .unwrap_or_else(Utc::now);
    println!(
        "chaos: {} creates answered, {} acknowledged, last due {}; {:?} in",
        entries.len(),
        acked.len(),
        rfc3339(last_due),
        started.elapsed()
    );
    // Faults go on until the last task is due, then stop: the rest is recovery.
    tokio::time::sleep(
        (last_due - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(3),
    )
    .await;
    w.calm.store(true, Ordering::SeqCst);
    proxy.calm_down();
    let _ = killer_task.await;
    let calm_at = Utc::now();
    let sweep_period = TimeDelta::from_std(cfg.sweep_period).unwrap();
    let ids: HashMap<&str, &Entry> = acked
        .iter()
        .map(|e| (e.id.as_deref().unwrap(), *e))
        .collect();
    // Recovery: wait while some task has work left and its bound, as its state now shows it,
    // has not passed. A task that keeps moving keeps moving its bound; one that stalls
    // passes it and is reported. (A cap, far beyond any bound, keeps a broken run finite.)
    let cap = Instant::now() + Duration::from_secs(300);
    let mut capped = true;
    while Instant::now() < cap {
        let tasks = list_all(&w.f).await;
        let now = Utc::now();
        let waiting: Vec<DateTime<Utc>> = tasks
            .iter()
            .filter(|t| ids.contains_key(t["task_id"].as_str().unwrap_or("")))
            .filter_map(|t| {
                let id = t["task_id"].as_str().unwrap_or("");
                recovery_bound(t, dead_letters_for(&w, id) > 0, sweep_period)
            })
            .collect();
        if waiting.is_empty() || waiting.iter().all(|bound| *bound < now) {
            capped = false;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Time for a late duplicate.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tasks = list_all(&w.f).await;
    let ended_at = Utc::now();
    w.stop.store(true, Ordering::SeqCst);
    for b in background.drain(..) {
        let _ = b.await;
    }

    // The invariants.
    let mut violations: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut note = |k: &'static str, v: String| violations.entry(k).or_default().push(v);
    if capped {
        note(
            "nothing left scheduled/running past its bound",
            "tasks still changing 5 minutes after the faults stopped".into(),
        );
    }
    let mut by_n: HashMap<u64, Vec<&Value>> = HashMap::new();
    for t in &tasks {
        if let Some(n) = t["payload"]["data"]["n"].as_u64() {
            by_n.entry(n).or_default().push(t);
        }
    }
    let lost_at = proxy.lost();
    let faulted = proxy.faulted();
    let kills = w.kills.lock().unwrap().clone();
    let mut duplicates: BTreeMap<&str, u64> = BTreeMap::new();
    let mut lateness_ms: Vec<i64> = Vec::new();
    let mut outcome: BTreeMap<String, u64> = BTreeMap::new();
    let mut lost = 0;
    for e in &entries {
        let found = by_n.get(&(e.n as u64)).cloned().unwrap_or_default();
        if found.len() > 1 {
            note(
                "one task per create (idempotency key)",
                format!("n={} made {} tasks", e.n, found.len()),
            );
        }
        let errors_5xx: Vec<&Value> = e
            .create_answers
            .iter()
            .filter_map(|a| a.as_ref().ok())
            .filter(|(s, _)| *s >= 500)
            .map(|(_, b)| b)
            .collect();
        let says_so = |b: &&Value| {
            let m = b.to_string().to_lowercase();
            m.contains("may have") || m.contains("unknown outcome") || m.contains("may exist")
        };
        // A 5xx that says nothing was changed lied if an earlier request's write made the
        // task: the acknowledgment is then 200 (an idempotent repeat of it), not 201 (made by
        // the acknowledged request itself), or there is a task and no acknowledgment at all.
        // A request that got no answer (killed) may be that writer: then nothing is claimed.
        let acked_with = e.create_answers.iter().find_map(|a| match a {
            Ok((s @ (200 | 201), _)) => Some(*s),
            _ => None,
        });
        let earlier_write = match acked_with {
            Some(201) => false,
            Some(_) => true,
            None => !found.is_empty(),
        };
        let unanswered = e.create_answers.iter().any(Result::is_err);
        if earlier_write && !unanswered && !errors_5xx.iter().all(says_so) {
            note(
                "no error answered for a committed effect",
                format!(
                    "create n={}: answered {} though the task exists",
                    e.n, errors_5xx[0]
                ),
            );
        }
        let Some(id) = e.id.as_deref() else {
            *outcome
                .entry("create never acknowledged".into())
                .or_default() += 1;
            continue;
        };
        let run_at = e.run_at.unwrap();
        let Some(t) = tasks.iter().find(|t| t["task_id"] == id) else {
            note(
                "every acknowledged task exists",
                format!("{id} ({:?}) is gone", e.kind),
            );
            continue;
        };
        let status = t["status"].as_str().unwrap_or("?").to_owned();
        let answered = |a: &Result<(u16, Value), String>| match a {
            Ok((s, _)) => s.to_string(),
            Err(e) => format!("no answer ({})", e.split(':').next().unwrap_or(e)),
        };
        for r in &e.retries {
            *outcome
                .entry(format!("/retry answered {}", answered(r)))
                .or_default() += 1;
        }
        if let Some(c) = &e.cancel {
            *outcome
                .entry(format!("cancel answered {} -> {status}", answered(c)))
                .or_default() += 1;
        }
        *outcome
            .entry(format!("{:?}: {status}", e.kind))
            .or_default() += 1;
        let arrivals = w.receiver.arrivals_at(&e.path);
        let letters = dead_letters_for(&w, id);
        if let Some(a) = arrivals.iter().find(|a| a.wall < run_at) {
            note(
                "no delivery before run_at",
                format!("{id}: {} ms early", (run_at - a.wall).num_milliseconds()),
            );
        }
        if let Some(first) = arrivals.first() {
            lateness_ms.push((first.wall - run_at).num_milliseconds());
        }
        let accepted_retries = e
            .retries
            .iter()
            .filter(|r| matches!(r, Ok((200, _))))
            .count();
        // A /retry with no answer (the function killed mid-request, an invocation error) or
        // answered `500 outcome_unknown` may have taken effect; one answered anything else
        // did not (a 500 "nothing was changed" that did is a violation).
        let unknown_retries = e
            .retries
            .iter()
            .filter(|r| match r {
                Err(_) => true,
                Ok((500, body)) => body["error"]["code"] == "outcome_unknown",
                Ok(_) => false,
            })
            .count();
        let retries_possible = accepted_retries..=accepted_retries + unknown_retries;
        match status.as_str() {
            "completed" if arrivals.is_empty() => {
                note("completed with a delivery", format!("{id} ({:?})", e.kind))
            }
            // Each failure sends one dead letter; an accepted /retry follows a failure.
            "failed" if letters == 0 || !retries_possible.contains(&(letters - 1)) => {
                if letters == 0 {
                    lost += 1;
                }
                note(
                    "failed with exactly one dead letter",
                    format!(
                        "{id} ({:?}): {letters} dead letters, {accepted_retries} accepted /retry, \
                         {unknown_retries} unanswered",
                        e.kind
                    ),
                )
            }
            "completed" if !retries_possible.contains(&letters) => note(
                "failed with exactly one dead letter",
                format!(
                    "{id} ({:?}): completed, {letters} dead letters, {accepted_retries} accepted /retry, \
                     {unknown_retries} unanswered",
                    e.kind
                ),
            ),
            "cancelled" if !arrivals.is_empty() => note(
                "cancelled before delivery",
                format!("{id}: {} deliveries", arrivals.len()),
            ),
            "cancelled" if matches!(&e.cancel, Some(Ok((s, _))) if *s != 200) => note(
                "no error answered for a committed effect",
                format!(
                    "{id}: cancelled, though the cancel was answered {:?}",
                    e.cancel
                ),
            ),
            "scheduled" | "running" => {
                let bound = recovery_bound(t, false, sweep_period).unwrap();
                if bound < ended_at {
                    lost += 1;
                    note(
                        "nothing left scheduled/running past its bound",
                        format!(
                            "{id} ({:?}) {status}, {} s past its bound (due + grace + sweep period + lease); faults stopped {} s before it",
                            e.kind,
                            (ended_at - bound).num_seconds(),
                            (bound - calm_at).num_seconds()
                        ),
                    );
                }
            }
            _ => {}
        }
        if let Some(Ok((status @ 500..=599, _))) = &e.cancel
            && t["status"] == "cancelled"
        {
            note(
                "no error answered for a committed effect",
                format!("{id}: cancel answered {status}"),
            );
        }
        // Duplicates: deliveries beyond the scripted failures and the final one.
        let expected = match status.as_str() {
            "failed" => 2,
            "completed" => e.kind.scripted_failures() + 1,
            _ => 1,
        };
        for (i, extra) in arrivals.iter().enumerate().skip(expected) {
            let prev = arrivals[i - 1].at;
            let from = prev.checked_sub(Duration::from_secs(1)).unwrap_or(prev);
            let by_kill = kills.iter().any(|k| *k >= from && *k <= extra.at);
            // Faults on this task's own calls count from its first delivery: the repeated
            // attempt is not always the last one (attempt 1 repeated after its record failed,
            // then attempt 2), and the receiver cannot tell attempts apart.
            let first = arrivals[0]
                .at
                .checked_sub(Duration::from_secs(1))
                .unwrap_or(from);
            let by_lost = lost_at
                .iter()
                .any(|l| l.at >= first && l.at <= extra.at && l.body.contains(id));
            // The attempt's record (or the claim) failed after the delivery: the outcome was
            // never stored, so the attempt is made again once its lease ends.
            let by_failed_write = faulted.iter().any(|f| {
                matches!(
                    f.op.as_str(),
                    "PutItem" | "TransactWriteItems" | "UpdateItem"
                ) && f.at >= first
                    && f.at <= extra.at
                    && f.body.contains(id)
            });
            let cause = match (by_kill, by_lost, by_failed_write) {
                (true, _, _) => "a kill",
                (_, true, _) => "a lost response",
                (_, _, true) => "a failed write of the attempt's outcome",
                _ => "unexplained",
            };
            *duplicates.entry(cause).or_default() += 1;
            if cause == "unexplained" {
                note(
                    "a second delivery only after a kill, a lost response or a failed write",
                    format!("{id} ({:?}): {} deliveries", e.kind, arrivals.len()),
                );
            }
        }
    }
    lateness_ms.sort_unstable();
    let (calls, faulted) = proxy.totals();
    let elapsed = started.elapsed();

    // The report.
    let mut r = String::new();
    r.push_str(&format!(
        "## Fault-injection rehearsal (`integration-tests/tests/chaos.rs`: `make test-chaos`, or `make chaos` for 1,000 tasks)\n\nSeed {} · {} tasks ({} acknowledged) · sweep every {:?} · {} execution environments · {} s\n\n",
        cfg.seed,
        entries.len(),
        acked.len(),
        cfg.sweep_period,
        cfg.concurrency,
        elapsed.as_secs()
    ));
    r.push_str(&format!(
        "### Faults on the function's AWS calls: {faulted} of {calls} ({:.0}%)\n\n{}\n",
        100.0 * faulted as f64 / calls.max(1) as f64,
        proxy.table()
    ));
    r.push_str("### Other faults and events\n\n| event | count |\n|---|---:|\n");
    r.push_str(&format!(
        "| function killed mid-invocation | {} |\n",
        w.f.kills()
    ));
    for (k, v) in w.stats.counts.lock().unwrap().iter() {
        r.push_str(&format!("| {k} | {v} |\n"));
    }
    r.push_str(&format!(
        "| dead letters | {} |\n",
        w.dead_letters.lock().unwrap().len()
    ));
    r.push_str("\n### Outcomes by kind\n\n| kind: status | tasks |\n|---|---:|\n");
    for (k, v) in &outcome {
        r.push_str(&format!("| {k} | {v} |\n"));
    }
    r.push_str("\n### Invariants\n\n| invariant | violations | first |\n|---|---:|---|\n");
    for inv in [
        "every acknowledged task exists",
        "completed with a delivery",
        "failed with exactly one dead letter",
        "cancelled before delivery",
        "no delivery before run_at",
        "a second delivery only after a kill, a lost response or a failed write",
        "nothing left scheduled/running past its bound",
        "no error answered for a committed effect",
        "one task per create (idempotency key)",
    ] {
        let v = violations.get(inv).cloned().unwrap_or_default();
        r.push_str(&format!(
            "| {inv} | {} | {} |\n",
            v.len(),
            v.first().cloned().unwrap_or_default()
        ));
    }
    let max_late = lateness_ms.last().copied().unwrap_or(0);
    let pct = |p: usize| {
        lateness_ms
            .get(lateness_ms.len().saturating_sub(1) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    let (p50, p99) = (pct(50), pct(99));
    r.push_str(&format!(
        "\n**Tasks lost: {lost}** (left scheduled/running, gone, or failed without a dead letter) · duplicates by cause: {} · first delivery after run_at: p50 {p50} ms, p99 {p99} ms, longest {max_late} ms (the longest recovery)\n",
        if duplicates.is_empty() {
            "none".to_owned()
        } else {
            duplicates.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        }
    ));
    println!("\n{r}");
    let report = std::env::var("CHAOS_REPORT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/chaos-report.md").to_owned());
    std::fs::write(&report, &r).expect("write the report");
    println!("chaos: report written to {report}");

    assert!(
        faulted as f64 >= 0.10 * calls as f64,
        "only {faulted} of {calls} calls faulted"
    );
    // The function's log lines about the first task each violation names.
    let logs = format!("{}\n{}", w.f.log_text(), past.log_text());
    let about: Vec<&str> = violations
        .values()
        .filter_map(|v| v.first())
        .filter_map(|v| v.split_whitespace().next())
        .filter(|id| id.len() == 26)
        .flat_map(|id| logs.lines().filter(move |l| l.contains(id)))
        .collect();
    assert!(
        violations.is_empty(),
        "invariants violated (seed {}): {violations:#?}\nthe function's logs about the first task of each:\n{}",
        cfg.seed,
        about.join("\n")
    );
}
