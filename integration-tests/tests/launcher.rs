//! The launcher keeps the shell's product variables away from the server under test: a
//! developer's `SCHEDULER_RATE_LIMIT` or `SCHEDULER_ALLOWED_TARGETS` must not change what the
//! black-box tests test. Its own binary: it changes this process's environment (nextest
//! runs each test in its own process; the scan below only reads files).

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

#[test]
fn the_shells_product_variables_never_reach_the_server() {
    for k in PRODUCT_ENV.iter().copied().chain([CONTROL]) {
        // SAFETY: set before this test starts its runtime's threads; the other test of this
        // binary reads no environment.
        unsafe { std::env::set_var(k, LEAKED) };
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(server_started_with_leaked_variables());
}

async fn server_started_with_leaked_variables() {
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

/// The string literals of the product's sources that look like environment variable names
/// (`SCREAMING_SNAKE`, as every variable it reads but `PORT` and `RUST_LOG` is).
fn variable_like_literals(dir: &std::path::Path, out: &mut std::collections::BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("product sources") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            variable_like_literals(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("source");
            for literal in text.split('"').skip(1).step_by(2) {
                let name_like = literal.contains('_')
                    && literal.starts_with(|c: char| c.is_ascii_uppercase())
                    && literal
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                // CARGO_*: read by env!() at compile time.
                if name_like && !literal.starts_with("CARGO_") {
                    out.insert(literal.to_owned());
                }
            }
        }
    }
}

/// The list cannot drift from the product again: a variable the product starts reading is
/// named in PRODUCT_ENV, or this fails.
#[test]
fn product_env_names_every_variable_the_product_reads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = std::collections::BTreeSet::new();
    for dir in ["shared/src", "lambdas/src"] {
        variable_like_literals(&root.join(dir), &mut names);
    }
    assert!(
        names.contains("SCHEDULER_RATE_LIMIT") && names.contains("TABLE_NAME"),
        "the scan finds nothing: {names:?}"
    );
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !PRODUCT_ENV.contains(&n.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in PRODUCT_ENV: {missing:?}");
}
