//! Lambda RSS (VmRSS) after the process served one create and one wake-up, on cargo
//! lambda's Runtime API emulator (the rehearsal's `Function`).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use bench::{Figure, write_results};
use chrono::{TimeDelta, Utc};
use integration_tests::{
    Receiver,
    aws::{AwsRig, Function, api_event, api_response},
};
use serde_json::json;

use crate::{OWNER, create_body};

/// VmRSS of the bootstrap under cargo lambda's Runtime API emulator (the README's bar):
/// once initialised, then after one API request (a create due in 2 s) and its wake-up,
/// which the rehearsal's pump hands over from the delay queue.
pub async fn measure(
    rig: &AwsRig,
    env: &[(String, String)],
    bootstrap: &Path,
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

/// Writes `aws_rss`.
pub fn report(rss_at_start: u64, rss_bytes: u64, bootstrap: &Path) -> anyhow::Result<()> {
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
    )
}
