//! Handler CPU per create and per fire: the process's user + system time over many, with
//! every AWS call answered instantly by `bench::aws_stub` (answers recorded from moto).

use std::{path::Path, time::Duration};

use anyhow::Context;
use bench::{Figure, aws_stub::AwsStub, write_results};
use chrono::{TimeDelta, Utc};
use integration_tests::Receiver;
use serde_json::json;

use crate::{create, create_body, runtime_api::Lambda};

/// CPU time (user + system) of the function process per create and per fire (a wake-up
/// delivering a webhook), over `n` of each after one of each recorded through to moto. The
/// measured ones are answered by [`AwsStub`] from memory, so the figure is the process's own
/// work: our code, the SDK's signing and (de)serialisation, the webhook's HTTP request and
/// signature.
pub async fn measure(
    endpoint: &str,
    env: &[(String, String)],
    bootstrap: &Path,
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
    let pid = f.pid().context("the function exited")? as i32;
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

/// Writes `aws_handler`.
pub fn report(
    cpu_n: usize,
    create_cpu_ms: f64,
    fire_cpu_ms: f64,
    bootstrap: &Path,
) -> anyhow::Result<()> {
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
    )
}
