//! The launcher keeps the shell's product variables away from the server under test: a
//! developer's `SCHEDULER_RATE_LIMIT` or `SCHEDULER_ALLOWED_TARGETS` must not change what the
//! black-box tests test. Its own binary: it changes this process's environment.

use integration_tests::{App, Receiver, launcher::PRODUCT_ENV};
use serde_json::json;

const LEAKED: &str = "leaked-from-the-shell";
const CONTROL: &str = "INTEGRATION_TESTS_LAUNCHER_CONTROL";

/// The child's environment, from /proc.
fn environ(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("the child's environ");
    raw.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shells_product_variables_never_reach_the_server() {
    for k in PRODUCT_ENV.iter().copied().chain([CONTROL]) {
        // SAFETY: this binary's only test, set before any other thread reads the environment.
        unsafe { std::env::set_var(k, LEAKED) };
    }
    // The values would refuse the start (rate limit, tokens, targets, secret, capacities) or
    // change the behaviour: the server starts, and answers as configured by the launch alone.
    let app = App::spawn().await;
    let env = environ(app.pid().expect("running"));
    // Control: other variables are inherited, so the check below would see a leak.
    assert!(
        env.contains(&(CONTROL.to_owned(), LEAKED.to_owned())),
        "the control variable did not reach the child: {env:?}"
    );
    let leaked: Vec<&String> = env
        .iter()
        .filter(|(k, v)| PRODUCT_ENV.contains(&k.as_str()) && v == LEAKED)
        .map(|(k, _)| k)
        .collect();
    assert!(leaked.is_empty(), "leaked into the server: {leaked:?}");

    // And it behaves as launched: loopback targets allowed, no tokens, no rate limit.
    let receiver = Receiver::start().await;
    let api = app.api();
    for _ in 0..5 {
        api.create_ok(&json!({
            "action": "webhook",
            "payload": {"url": receiver.url("/hook")},
            "run_at": integration_tests::rfc3339(chrono::Utc::now()),
        }))
        .await;
    }
    receiver
        .wait_for("/hook", 5, std::time::Duration::from_secs(10))
        .await;
}
