//! The Lambda figures that need AWS, on moto server (`AWS_ENDPOINT_URL`, which
//! `make bench-aws` provides through scripts/with-moto.sh): the release bootstrap against a
//! Runtime API on loopback (this file), over the rehearsal's table, queues, schedule group
//! and secret (`integration_tests::aws::AwsRig`).
//!
//! * AWS precision: N tasks due 2–3 h ahead. For each, its schedule is read (GetSchedule)
//!   and EventBridge Scheduler is played: a fresh function process whose clock
//!   (`REHEARSAL_CLOCK_OFFSET_MS`) stands at a uniform random moment of the schedule's at()
//!   minute is invoked with the schedule's Input. Its re-armed wake-up (the "wake-up
//!   queued" log line: DelaySeconds) is then played as SQS would: another fresh process
//!   whose clock stands at firing + DelaySeconds gets the message as a batch event.
//!   Lateness = arrival at the receiver, in that process's clock, − run_at.
//! * AWS calls per task, from moto's request recorder (the function's calls, by its
//!   User-Agent app id): due within 15 min, due in hours, one retry.
//! * Lambda RSS (VmRSS) after the process served one create and one wake-up, on cargo
//!   lambda's Runtime API emulator (the rehearsal's `Function`).
//! * Handler CPU per create and per fire: the process's user + system time over many, with
//!   every AWS call answered instantly by `bench::aws_stub` (answers recorded from moto).
//!
//! `cargo run --release -p bench --bin aws -- --bootstrap target/bench-lambda/x86_64/bootstrap [--tasks N]`

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bench::{Figure, aws_stub::AwsStub, percentile, write_results};
use chrono::{DateTime, TimeDelta, Utc};
use integration_tests::{
    Receiver, Reply,
    aws::{AwsRig, Function, Recorder, api_event, api_response, at_time, capture_lines, sqs_event},
    rfc3339,
};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

const OWNER: &str = "arn:aws:iam::123456789012:user/bench";
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:task-scheduler";

type Answer = oneshot::Sender<Result<Value, String>>;
type Pending = (String, Value, Answer);

/// One function process: the bootstrap polling its own minimal Runtime API on loopback
/// (next / response / error), as Lambda runs it. A process per clock offset is cheap here
/// (cold start ≈ 10 ms), which is what lets each firing happen at its own moment.
struct Lambda {
    invocations: mpsc::UnboundedSender<Pending>,
    child: tokio::process::Child,
    server: tokio::task::JoinHandle<()>,
    logs: Arc<Mutex<Vec<String>>>,
    /// The function's clock minus the wall clock.
    offset: TimeDelta,
}

impl Lambda {
    async fn start(
        bootstrap: &PathBuf,
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
        let mut cmd = tokio::process::Command::new(bootstrap);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().cloned())
            .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "task-scheduler")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/task-scheduler")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("RUST_LOG", "info")
            .env(
                "REHEARSAL_CLOCK_OFFSET_MS",
                offset.num_milliseconds().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bootstrap.display()))?;
        let logs = capture_lines(&mut child);
        Ok(Lambda {
            invocations: tx,
            child,
            server,
            logs,
            offset,
        })
    }

    /// A process whose clock reads `at` in `lead` from now.
    async fn start_clocked(
        bootstrap: &PathBuf,
        env: &[(String, String)],
        at: DateTime<Utc>,
        lead: Duration,
    ) -> anyhow::Result<Lambda> {
        let offset = at - Utc::now() - TimeDelta::from_std(lead)?;
        Lambda::start(bootstrap, env, offset).await
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// Sleeps until this function's clock reads `at`.
    async fn wait_until(&self, at: DateTime<Utc>) {
        if let Ok(d) = (at - self.now()).to_std() {
            tokio::time::sleep(d).await;
        }
    }

    async fn invoke(&self, event: &Value) -> anyhow::Result<Value> {
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

    fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The `delay_seconds` of the last "wake-up queued" log line for `task_id`.
    async fn queued_delay(&self, task_id: &str) -> anyhow::Result<i64> {
        let started = Instant::now();
        loop {
            let found = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| {
                    v["fields"]["message"] == "wake-up queued" && v.to_string().contains(task_id)
                })
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

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.server.abort();
    }
}

fn create_body(url: &str, run_at: DateTime<Utc>) -> Value {
    json!({
        "action": "webhook",
        "payload": {"url": url, "method": "POST", "data": {"message": "bench"}},
        "run_at": rfc3339(run_at),
    })
}

async fn create(f: &Lambda, body: &Value) -> anyhow::Result<String> {
    let resp = f
        .invoke(&api_event("POST", "/tasks", Some(body), Some(OWNER), &[]))
        .await?;
    let (status, task) = api_response(&resp);
    anyhow::ensure!(status == 201, "create answered {status}: {task}");
    Ok(task["task_id"].as_str().context("task_id")?.to_owned())
}

/// Plays the SQS event source once: the visible delay-queue messages as one batch.
async fn pump(rig: &AwsRig, f: &Lambda, wait: Duration) -> anyhow::Result<usize> {
    let msgs = rig.receive(wait).await;
    if msgs.is_empty() {
        return Ok(0);
    }
    let out = f.invoke(&sqs_event(&rig.delay_queue_url, &msgs)).await?;
    anyhow::ensure!(
        out["batchItemFailures"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "batch failures: {out}"
    );
    Ok(msgs.len())
}

struct Precision {
    lateness_ms: Vec<f64>,
    /// run_at − message visible (firing + whole DelaySeconds, rounded down): how early the
    /// queue hands the wake-up over, the time the function then waits out.
    early_ms: Vec<f64>,
    delays: Vec<i64>,
    calls_2h: Vec<Vec<String>>,
}

/// One task of the precision run: schedule read, firing played, wake-up delivered.
async fn one_precision_task(
    rig: &AwsRig,
    env: &[(String, String)],
    bootstrap: &PathBuf,
    receiver: &Receiver,
    creator: &Lambda,
    i: usize,
) -> anyhow::Result<(f64, f64, i64, String)> {
    const LEAD: Duration = Duration::from_millis(300);
    let hours_ms = rand::rng().random_range(2 * 3_600_000..3 * 3_600_000);
    let run_at = bench::millis(Utc::now() + TimeDelta::milliseconds(hours_ms));
    let path = format!("/p{i}");
    let id = create(creator, &create_body(&receiver.url(&path), run_at)).await?;
    let name = format!("{id}-1");
    let s = rig
        .get_schedule(&name)
        .await
        .with_context(|| format!("no schedule {name}"))?;
    let at = at_time(s.schedule_expression().context("expression")?);
    let input: Value = serde_json::from_str(
        s.target()
            .and_then(|t| t.input())
            .context("the schedule's Input")?,
    )?;
    // Scheduler fires at a uniform random moment of the at() minute (flexible window OFF).
    let fire_at = at + TimeDelta::milliseconds(rand::rng().random_range(0..60_000));
    let f = Lambda::start_clocked(bootstrap, env, fire_at, LEAD).await?;
    f.wait_until(fire_at).await;
    let out = f.invoke(&input).await?;
    anyhow::ensure!(out["result"] == "rearmed", "firing answered {out}");
    let delay = f.queued_delay(&id).await?;
    f.stop().await;
    // SQS makes the message visible DelaySeconds after it was sent (the firing).
    let visible_at = fire_at + TimeDelta::seconds(delay);
    // The queued body is the schedule's Input: it carries `due`, so the process waits out the
    // fraction of a second DelaySeconds (rounded down) left.
    let body = input.clone();
    let f = Lambda::start_clocked(bootstrap, env, visible_at, LEAD).await?;
    f.wait_until(visible_at).await;
    let batch = json!({"Records": [{"messageId": format!("m-{i}"), "body": body.to_string(),
        "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs"}]});
    let out = f.invoke(&batch).await?;
    anyhow::ensure!(
        out == json!({"batchItemFailures": []}),
        "delivery answered {out}"
    );
    let arrivals = receiver.arrivals_at(&path);
    anyhow::ensure!(
        arrivals.len() == 1,
        "{} deliveries of {id}\n{}",
        arrivals.len(),
        f.log_text()
    );
    let lateness = arrivals[0].wall + f.offset - run_at;
    f.stop().await;
    let ms = |d: TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    Ok((ms(lateness), ms(run_at - visible_at), delay, id))
}

async fn precision(
    rig: &AwsRig,
    env: &[(String, String)],
    bootstrap: &PathBuf,
    recorder: &Recorder,
    tasks: usize,
) -> anyhow::Result<Precision> {
    let receiver = Receiver::start().await;
    let creator = Lambda::start(bootstrap, env, TimeDelta::zero()).await?;
    let mut out = Precision {
        lateness_ms: Vec::new(),
        early_ms: Vec::new(),
        delays: Vec::new(),
        calls_2h: Vec::new(),
    };
    let mut ids = Vec::new();
    for i in 0..tasks {
        let (late, early, delay, id) =
            one_precision_task(rig, env, bootstrap, &receiver, &creator, i).await?;
        out.lateness_ms.push(late);
        out.early_ms.push(early);
        out.delays.push(delay);
        ids.push(id);
    }
    creator.stop().await;
    for id in ids.iter().take(5) {
        out.calls_2h.push(recorder.function_calls_for(id).await);
    }
    Ok(out)
}

struct Short {
    calls_15min: Vec<String>,
    calls_retry: Vec<String>,
}

/// One process: one create (due in 2 s) and its wake-up; then a task whose first delivery
/// fails once (the calls with one retry).
async fn short_tasks(
    rig: &AwsRig,
    env: &[(String, String)],
    bootstrap: &PathBuf,
    recorder: &Recorder,
) -> anyhow::Result<Short> {
    let receiver = Receiver::start().await;
    receiver.script("/flaky", [Reply::status(500)], Reply::ok());
    let f = Lambda::start(bootstrap, env, TimeDelta::zero()).await?;
    let id = create(
        &f,
        &create_body(
            &receiver.url("/soon"),
            bench::millis(Utc::now() + TimeDelta::seconds(2)),
        ),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.arrivals_at("/soon").is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "the 2 s task was not delivered");
        pump(rig, &f, Duration::from_millis(500)).await?;
    }
    let calls_15min = recorder.function_calls_for(&id).await;

    let mut body = create_body(
        &receiver.url("/flaky"),
        bench::millis(Utc::now() + TimeDelta::milliseconds(500)),
    );
    body["retry"] =
        json!({"max_attempts": 3, "initial_backoff_seconds": 1, "max_backoff_seconds": 1});
    let retry_id = create(&f, &body).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.arrivals_at("/flaky").len() < 2 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the retried task was not delivered twice"
        );
        pump(rig, &f, Duration::from_millis(500)).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls_retry = recorder.function_calls_for(&retry_id).await;
    f.stop().await;
    Ok(Short {
        calls_15min,
        calls_retry,
    })
}

/// VmRSS of the bootstrap under cargo lambda's Runtime API emulator (the README's bar):
/// once initialised, then after one API request (a create due in 2 s) and its wake-up,
/// which the rehearsal's pump hands over from the delay queue.
async fn lambda_rss(
    rig: &AwsRig,
    env: &[(String, String)],
    bootstrap: &std::path::Path,
) -> anyhow::Result<(u64, u64)> {
    let receiver = Receiver::start().await;
    let f = Function::start_binary(bootstrap, env, None).await?;
    let pid = f.pid().context("the function exited")? as i32;
    // Initialised: it answers an invocation (an unknown task's wake-up is dropped).
    f.invoke(&json!({"kind": "wake", "task_id": "01JF3Q8R5V2Z6X4W9YH7K1M0NB", "attempt": 1}))
        .await?;
    let at_start = bench::proc_memory(pid)?.0;
    let run_at = bench::millis(Utc::now() + TimeDelta::seconds(2));
    let resp = f
        .invoke(&api_event(
            "POST",
            "/tasks",
            Some(&create_body(&receiver.url("/rss"), run_at)),
            Some(OWNER),
            &[],
        ))
        .await?;
    let (status, task) = api_response(&resp);
    anyhow::ensure!(status == 201, "create answered {status}: {task}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.arrivals_at("/rss").is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "the 2 s task was not delivered");
        rig.pump_delay_queue(&f, Duration::from_millis(500)).await;
    }
    let after = bench::proc_memory(pid)?.0;
    f.stop().await;
    Ok((at_start, after))
}

/// CPU time (user + system) of the function process per create and per fire (a wake-up
/// delivering a webhook), over `n` of each after one of each recorded through to moto. The
/// measured ones are answered by [`AwsStub`] from memory, so the figure is the process's own
/// work: our code, the SDK's signing and (de)serialisation, the webhook's HTTP request and
/// signature.
async fn handler_cpu(
    endpoint: &str,
    env: &[(String, String)],
    bootstrap: &PathBuf,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let receiver = Receiver::start().await;
    // The function talks to the instant stub, which records one answer per operation from
    // moto (the first create and fire, plus the cold start's GetSecretValue) and replays it
    // for the measured requests: the CPU figure is then ours, not the emulator's.
    let stub = AwsStub::start(endpoint).await?;
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            let v = if k == "AWS_ENDPOINT_URL" {
                &stub.url
            } else {
                v
            };
            (k.clone(), v.clone())
        })
        .collect();
    let f = Lambda::start(bootstrap, &env, TimeDelta::zero()).await?;
    let pid = f.child.id().context("the function exited")? as i32;
    let fire = |id: &str| {
        let body = json!({"kind": "wake", "task_id": id, "attempt": 1}).to_string();
        json!({"Records": [{"messageId": format!("cpu-{id}"), "body": body,
            "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs"}]})
    };
    let warm_at = bench::millis(Utc::now() + TimeDelta::seconds(1));
    let warm = create(&f, &create_body(&receiver.url("/cpu"), warm_at)).await?;
    f.wait_until(warm_at).await;
    let out = f.invoke(&fire(&warm)).await?;
    anyhow::ensure!(
        out == json!({"batchItemFailures": []}),
        "fire answered {out}"
    );
    stub.replay();
    println!(
        "handler CPU: AWS answers recorded for {:?}",
        stub.recorded()
    );

    // Due in 10 minutes: the delay-queue path (PutItem, SendMessage).
    let run_at = bench::millis(Utc::now() + TimeDelta::minutes(10));
    let before = bench::proc_cpu(pid)?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(create(&f, &create_body(&receiver.url("/cpu"), run_at)).await?);
    }
    let create_cpu = bench::proc_cpu(pid)? - before;
    // Each fire claims (the replayed UpdateItem hands back the recorded, due task), delivers
    // to the receiver and records (PutItem).
    let before = bench::proc_cpu(pid)?;
    for id in &ids {
        let out = f.invoke(&fire(id)).await?;
        anyhow::ensure!(
            out == json!({"batchItemFailures": []}),
            "fire answered {out}"
        );
    }
    let fire_cpu = bench::proc_cpu(pid)? - before;
    let (replayed, misses) = stub.replayed();
    anyhow::ensure!(misses.is_empty(), "the stub had no answer for {misses:?}");
    anyhow::ensure!(
        replayed == 4 * n,
        "{replayed} AWS calls answered by the stub, expected {}",
        4 * n
    );
    anyhow::ensure!(
        receiver.arrivals_at("/cpu").len() == n + 1,
        "{} deliveries, expected {}",
        receiver.arrivals_at("/cpu").len(),
        n + 1
    );
    f.stop().await;
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
    Ok((per(create_cpu), per(fire_cpu)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bootstrap: PathBuf = bench::arg(
        "bootstrap",
        PathBuf::from("target/bench-lambda/x86_64/bootstrap"),
    );
    let tasks: usize = bench::arg("tasks", if bench::quick() { 10 } else { 40 });
    anyhow::ensure!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run under scripts/with-moto.sh (make bench-aws does)"
    );
    let Some(rig) = AwsRig::create("bench aws").await else {
        bail!("no emulator");
    };
    let env = rig.function_env();
    if bench::arg("cpu-only", false) {
        // For profiling the handler (e.g. `perf record -p` on the bootstrap): no results written.
        let n: usize = bench::arg("cpu-requests", 200);
        let (c, f) = handler_cpu(&rig.endpoint, &env, &bootstrap, n).await?;
        println!("handler CPU per create {c:.3} ms, per fire {f:.3} ms (mean of {n})");
        return Ok(());
    }
    let recorder = Recorder::start(&rig.endpoint).await;
    let t0 = Instant::now();

    let short = short_tasks(&rig, &env, &bootstrap, &recorder).await?;
    let (rss_at_start, rss_bytes) = lambda_rss(&rig, &env, &bootstrap).await?;
    println!("short tasks done in {:.1} s", t0.elapsed().as_secs_f64());
    let cpu_n: usize = bench::arg("cpu-requests", if bench::quick() { 200 } else { 1000 });
    let (create_cpu_ms, fire_cpu_ms) = handler_cpu(&rig.endpoint, &env, &bootstrap, cpu_n).await?;
    println!("handler CPU done in {:.1} s", t0.elapsed().as_secs_f64());
    let p = precision(&rig, &env, &bootstrap, &recorder, tasks).await?;
    println!("precision done in {:.1} s", t0.elapsed().as_secs_f64());

    let mut sorted = p.lateness_ms.clone();
    bench::sort_f64(&mut sorted);
    let n = sorted.len();
    let mut early = p.early_ms.clone();
    bench::sort_f64(&mut early);
    let figures = vec![
        Figure::new(
            "aws_precision_p50",
            format!("AWS precision (rehearsal, Scheduler's minute simulated): lateness p50 of {n}"),
            percentile(&sorted, 50.0),
            "ms",
        ),
        Figure::new(
            "aws_precision_p99",
            "AWS precision: lateness p99 (arrival in the function's clock − run_at)",
            percentile(&sorted, 99.0),
            "ms",
        )
        .at_most(1000.0),
        Figure::new(
            "aws_precision_max",
            "AWS precision: lateness max",
            sorted[n - 1],
            "ms",
        ),
        Figure::new(
            "aws_precision_early_max",
            "queued wake-up visible before run_at (DelaySeconds rounded down), waited out: max",
            early[early.len() - 1],
            "ms",
        ),
        Figure::check(
            "aws_precision_all_delivered",
            "every task delivered once, never early",
            n == tasks && sorted[0] >= 0.0,
        ),
    ];
    write_results(
        "aws_precision",
        json!({"tasks": tasks, "due": "uniform in 2–3 h", "firing": "uniform random moment of the schedule's at() minute",
               "bootstrap": bootstrap,
               "method": "a fresh function process per firing and per delivery, its clock moved by REHEARSAL_CLOCK_OFFSET_MS; the re-armed wake-up (it carries its due time) delivered as an SQS batch at firing + DelaySeconds, which the function waits out to run_at"}),
        &figures,
        json!({"lateness_ms": p.lateness_ms, "run_at_minus_visible_ms": p.early_ms, "delay_seconds": p.delays}),
    )?;

    let hours = p.calls_2h.first().cloned().unwrap_or_default();
    let consistent = p.calls_2h.iter().all(|c| *c == hours);
    let figures = vec![
        Figure::new(
            "aws_calls_15min",
            format!(
                "AWS calls per task due within 15 min ({})",
                short.calls_15min.join(", ")
            ),
            short.calls_15min.len() as f64,
            "calls",
        )
        .at_most(4.0),
        Figure::new(
            "aws_calls_hours",
            format!("AWS calls per task due in 2–3 h ({})", hours.join(", ")),
            hours.len() as f64,
            "calls",
        )
        .at_most(5.0),
        Figure::new(
            "aws_calls_retry",
            format!(
                "AWS calls per task with one retry, due within 15 min ({})",
                short.calls_retry.join(", ")
            ),
            short.calls_retry.len() as f64,
            "calls",
        ),
        Figure::check(
            "aws_calls_hours_consistent",
            format!(
                "the same calls for each of {} tasks due in hours",
                p.calls_2h.len()
            ),
            consistent,
        ),
    ];
    write_results(
        "aws_calls",
        json!({"source": "moto's request recorder, the function's calls (User-Agent app id) mentioning the task id"}),
        &figures,
        json!({"due_within_15_min": short.calls_15min, "due_in_hours": p.calls_2h, "one_retry": short.calls_retry}),
    )?;

    write_results(
        "aws_rss",
        json!({"bootstrap": bootstrap, "arch": std::env::consts::ARCH,
               "runtime_api": "cargo lambda's Runtime API emulator (integration_tests::aws::Function), AWS on moto"}),
        &[Figure::new(
            "lambda_rss_after_request_and_wakeup",
            format!(
                "Lambda RSS after one API request and one wake-up (cargo lambda's emulator, moto; {:.1} MB after the first invocation)",
                rss_at_start as f64 / 1e6
            ),
            rss_bytes as f64 / 1e6,
            "MB",
        )
        .at_most(25.0)],
        json!({"rss_bytes": rss_bytes, "rss_after_first_invocation_bytes": rss_at_start}),
    )?;
    write_results(
        "aws_handler",
        json!({"requests": cpu_n, "bootstrap": bootstrap,
               "method": "utime + stime of the function process (/proc/PID/stat, clock ticks) over the requests, after one create and one fire; every AWS call answered instantly by bench/src/aws_stub.rs, replaying one answer per operation recorded from moto"}),
        &[
            Figure::new(
                "lambda_cpu_per_create",
                format!("handler CPU per create (POST /tasks, due in 10 min: PutItem + SendMessage), process user+sys time, AWS answered by an instant stub, mean of {cpu_n}"),
                create_cpu_ms,
                "ms",
            )
            .at_most(1.0),
            Figure::new(
                "lambda_cpu_per_fire",
                format!("handler CPU per fire (SQS wake-up: UpdateItem, signed webhook on loopback, PutItem), same method, mean of {cpu_n}"),
                fire_cpu_ms,
                "ms",
            ),
        ],
        json!({"create_cpu_ms": create_cpu_ms, "fire_cpu_ms": fire_cpu_ms}),
    )?;
    println!("aws bench: {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
