//! Faults a network puts between the store and DynamoDB, injected by a loopback proxy in
//! front of moto server: a response lost after the request was applied (the SDK retries
//! and meets its own write), and an answer DynamoDB gives that moto never does
//! (`TransactionConflict`, two transactions on one item at once).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::domain::RetryHint;
use crate::store::contract::{claimed, delivery, owner, t0, task};

#[derive(Debug, Clone)]
enum Fault {
    /// Forward the request, wait for moto's answer (the write is applied), then close the
    /// connection without answering.
    LoseResponse,
    /// Answer this JSON error (HTTP 400) instead of forwarding.
    Answer(&'static str),
    /// Answer HTTP 500 `InternalServerError` instead of forwarding (nothing applied; the SDK
    /// retries it).
    ServerError,
}

#[derive(Default)]
struct Rules {
    /// (operation, fault, how many more times).
    pending: Vec<(String, Fault, usize)>,
    injected: usize,
}

/// The proxy: HTTP/1.1, one request per connection, on 127.0.0.1.
struct Proxy {
    endpoint: String,
    rules: Arc<Mutex<Rules>>,
}

impl Proxy {
    async fn start() -> Self {
        let upstream = testkit::emulator_endpoint()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let rules = Arc::new(Mutex::new(Rules::default()));
        let shared = rules.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream.clone(), shared.clone()));
            }
        });
        Self { endpoint, rules }
    }

    /// The next `times` calls of `op` (e.g. `UpdateItem`) meet `fault`.
    fn inject(&self, op: &str, fault: Fault, times: usize) {
        let mut rules = self.rules.lock().unwrap();
        rules
            .pending
            .push((format!("DynamoDB_20120810.{op}"), fault, times));
    }

    fn injected(&self) -> usize {
        self.rules.lock().unwrap().injected
    }

    /// Removes the faults not met yet.
    fn clear(&self) {
        self.rules.lock().unwrap().pending.clear();
    }

    /// A store on `table` whose calls go through the proxy (the SDK's default retries).
    async fn store(&self, table: &str) -> DynamoStore {
        let config = aws_sdk_dynamodb::config::Builder::from(&testkit::sdk_config().await)
            .endpoint_url(&self.endpoint)
            .build();
        DynamoStore::new(Client::from_conf(config), table, 30)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn serve(mut client: TcpStream, upstream: String, rules: Arc<Mutex<Rules>>) {
    // The request: head, then a Content-Length body (the SDK sends one).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let target = header("x-amz-target").unwrap_or_default();
    let fault = {
        let mut rules = rules.lock().unwrap();
        let hit = rules
            .pending
            .iter_mut()
            .find(|(op, _, left)| *op == target && *left > 0)
            .map(|(_, fault, left)| {
                *left -= 1;
                fault.clone()
            });
        if hit.is_some() {
            rules.injected += 1;
        }
        hit
    };
    let answer = match fault {
        Some(Fault::Answer(body)) => Some(("400 Bad Request", body)),
        Some(Fault::ServerError) => Some(("500 Internal Server Error", INTERNAL_SERVER_ERROR)),
        _ => None,
    };
    if let Some((status, body)) = answer {
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.write_all(response.as_bytes()).await;
        return;
    }
    // Forward with `connection: close`, so moto's answer ends with its connection.
    let mut forwarded: String = head
        .lines()
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    forwarded.push_str("connection: close\r\n\r\n");
    let Ok(mut up) = TcpStream::connect(&upstream).await else {
        return;
    };
    let mut request = forwarded.into_bytes();
    request.extend_from_slice(&buf[head_end..head_end + length]);
    if up.write_all(&request).await.is_err() {
        return;
    }
    let mut response = Vec::new();
    if up.read_to_end(&mut response).await.is_err() {
        return;
    }
    if matches!(fault, Some(Fault::LoseResponse)) {
        // Applied, and never answered.
        return;
    }
    // Tell the client the connection ends here too.
    let Some(line_end) = find(&response, b"\r\n") else {
        return;
    };
    let mut out = response[..line_end + 2].to_vec();
    out.extend_from_slice(b"connection: close\r\n");
    out.extend_from_slice(&response[line_end + 2..]);
    let _ = client.write_all(&out).await;
}

/// A fresh table, a store on it through a new proxy, and one straight to moto.
async fn rig() -> (Proxy, DynamoStore, DynamoStore, Client, String) {
    let (direct, client, table) = super::dynamo_store().await;
    let proxy = Proxy::start().await;
    let lossy = proxy.store(&table).await;
    (proxy, lossy, direct, client, table)
}

#[tokio::test]
#[ignore = "needs moto: make test-aws"]
async fn a_claim_whose_response_was_lost_is_still_ours_and_a_rival_still_loses() {
    let (proxy, lossy, direct, ..) = rig().await;
    let t = task(&owner(), t0(), None);
    direct.create(&t).await.unwrap();
    proxy.inject("UpdateItem", Fault::LoseResponse, 1);
    let running = claimed(lossy.claim(t.id, 1, t0()).await.unwrap());
    assert_eq!(proxy.injected(), 1, "the fault was met");
    assert_eq!((running.status, running.version), (Status::Running, 2));
    assert_eq!(
        direct.get(t.id).await.unwrap().unwrap(),
        running,
        "claimed once"
    );
    // A second claimer at the same instant (same lease time) is another writer: it loses,
    // whether or not its own response is lost.
    for lose in [false, true] {
        if lose {
            proxy.inject("UpdateItem", Fault::LoseResponse, 1);
        }
        match lossy.claim(t.id, 1, t0()).await.unwrap() {
            ClaimOutcome::Rejected(Some(seen)) => assert_eq!(seen, running),
            other => panic!("a rival claimer won: {other:?}"),
        }
    }
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), running);
}

/// The claim of a schedule's pending occurrence is one transaction (claim, next occurrence,
/// schedule): when its response is lost, the SDK's retry meets its own write and the claim
/// is still ours, with exactly one next occurrence; a rival still loses.
#[tokio::test]
#[ignore = "needs moto: make test-aws"]
async fn an_occurrence_claim_whose_response_was_lost_moves_the_chain_on_once() {
    use crate::ports::ScheduleStore;
    let (proxy, lossy, direct, ..) = rig().await;
    let o = owner();
    let (s, first) = crate::store::contract::new_schedule(&o, None);
    direct.create_schedule(&s, Some(&first)).await.unwrap();
    proxy.inject("TransactWriteItems", Fault::LoseResponse, 1);
    let running = claimed(lossy.claim(first.id, 1, first.run_at).await.unwrap());
    assert_eq!(proxy.injected(), 1, "the fault was met");
    assert_eq!(
        direct.get(first.id).await.unwrap().unwrap(),
        running,
        "claimed once"
    );
    let moved = direct.get_schedule(s.id).await.unwrap().unwrap();
    let next = moved.pending.expect("the chain moved on");
    assert_eq!(running.occurrence.as_ref().unwrap().next, Some(next));
    let listed = direct
        .list(&ListQuery {
            owner: o.clone(),
            status: None,
            schedule_id: Some(s.id),
            limit: 10,
            after: None,
        })
        .await
        .unwrap()
        .tasks;
    assert_eq!(
        listed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![first.id, next.task_id],
        "exactly one next occurrence"
    );
    for lose in [false, true] {
        if lose {
            proxy.inject("UpdateItem", Fault::LoseResponse, 1);
        }
        match lossy.claim(first.id, 1, first.run_at).await.unwrap() {
            ClaimOutcome::Rejected(Some(seen)) => assert_eq!(seen, running),
            other => panic!("a rival claimer won: {other:?}"),
        }
    }
    assert_eq!(direct.get_schedule(s.id).await.unwrap().unwrap(), moved);
}

#[tokio::test]
#[ignore = "needs moto: make test-aws"]
async fn updates_whose_response_was_lost_succeed_once_and_rivals_still_conflict() {
    let (proxy, lossy, direct, ..) = rig().await;
    let o = owner();
    // Recording an attempt (fire).
    let t = task(&o, t0(), None);
    direct.create(&t).await.unwrap();
    let running = claimed(direct.claim(t.id, 1, t0()).await.unwrap());
    let (failed, _) = running
        .record(1, &delivery(RetryHint::Permanent, t0()), t0(), 0.5)
        .unwrap();
    proxy.inject("PutItem", Fault::LoseResponse, 1);
    lossy.update(&failed).await.expect("the record is ours");
    assert_eq!(proxy.injected(), 1);
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), failed);
    // `/retry`.
    let revived = failed.retry_failed(t0() + TimeDelta::hours(1)).unwrap();
    proxy.inject("PutItem", Fault::LoseResponse, 1);
    lossy.update(&revived).await.expect("the retry is ours");
    assert_eq!(proxy.injected(), 2);
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), revived);
    // Cancel.
    let c = task(&o, t0(), None);
    direct.create(&c).await.unwrap();
    let cancelled = c.cancel(t0()).unwrap();
    proxy.inject("PutItem", Fault::LoseResponse, 1);
    lossy.update(&cancelled).await.expect("the cancel is ours");
    assert_eq!(proxy.injected(), 3);
    assert_eq!(direct.get(c.id).await.unwrap().unwrap(), cancelled);
    // A genuine rival from the same version still conflicts, lost response or not: a
    // second cancel, and a stale record.
    for lose in [false, true] {
        if lose {
            proxy.inject("PutItem", Fault::LoseResponse, 1);
        }
        let again = c.cancel(t0() + TimeDelta::seconds(1)).unwrap();
        assert!(matches!(
            lossy.update(&again).await,
            Err(PortError::Conflict)
        ));
        assert!(matches!(
            lossy.update(&failed).await,
            Err(PortError::Conflict)
        ));
    }
    assert_eq!(direct.get(c.id).await.unwrap().unwrap(), cancelled);
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), revived);
}

#[tokio::test]
#[ignore = "needs moto: make test-aws"]
async fn creates_whose_response_was_lost_are_created_once() {
    let (proxy, lossy, direct, ..) = rig().await;
    let o = owner();
    let t = task(&o, t0(), None);
    proxy.inject("PutItem", Fault::LoseResponse, 1);
    assert!(matches!(
        lossy.create(&t).await.unwrap(),
        CreateOutcome::Created
    ));
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), t);
    // With a key: created (201), not an idempotent repeat of itself (200).
    let k = task(&o, t0(), Some("lost-1"));
    proxy.inject("TransactWriteItems", Fault::LoseResponse, 1);
    assert!(matches!(
        lossy.create(&k).await.unwrap(),
        CreateOutcome::Created
    ));
    assert_eq!(proxy.injected(), 2);
    assert_eq!(direct.get(k.id).await.unwrap().unwrap(), k);
    // A real repeat is still one.
    let repeat = task(&o, t0(), Some("lost-1"));
    match lossy.create(&repeat).await.unwrap() {
        CreateOutcome::Existing(e) => assert_eq!(*e, k),
        CreateOutcome::Created => panic!("a repeated key created a task"),
    }
}

/// What DynamoDB answers when it failed internally (the SDK retries it).
const INTERNAL_SERVER_ERROR: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","Message":"Internal server error"}"#;

/// More server errors than the SDK makes tries: the call fails.
const OUTLASTS_RETRIES: usize = 10;

/// A write whose first try was applied and lost its answer, and whose retries then failed
/// (an outage), is recognised by reading it back: a create is created, an update (cancel,
/// `/retry`, a recorded attempt) and a claim are ours. When the read fails too, the outcome
/// is unknown, never "nothing was changed"; a write none of whose tries was applied still
/// says so.
#[tokio::test]
#[ignore = "needs moto: make test-aws"]
async fn writes_applied_before_an_outage_are_recognised_and_an_unreadable_one_is_unknown() {
    let (proxy, lossy, direct, ..) = rig().await;
    let o = owner();
    let lost_then_down = |op: &str| {
        proxy.inject(op, Fault::LoseResponse, 1);
        proxy.inject(op, Fault::ServerError, OUTLASTS_RETRIES);
    };
    // Create, without and with a key.
    let t = task(&o, t0(), None);
    lost_then_down("PutItem");
    let created = lossy.create(&t).await;
    proxy.clear();
    assert!(matches!(created, Ok(CreateOutcome::Created)), "{created:?}");
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), t);
    let k = task(&o, t0(), Some("outage"));
    lost_then_down("TransactWriteItems");
    let created = lossy.create(&k).await;
    proxy.clear();
    assert!(matches!(created, Ok(CreateOutcome::Created)), "{created:?}");
    assert_eq!(direct.get(k.id).await.unwrap().unwrap(), k);
    // Claim.
    lost_then_down("UpdateItem");
    let claim = lossy.claim(t.id, 1, t0()).await;
    proxy.clear();
    let running = match claim {
        Ok(ClaimOutcome::Claimed(r)) => r,
        other => panic!("the claim was ours: {other:?}"),
    };
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), running);
    // Cancel (a versioned PutItem) and a keyed task's cancel (the transaction).
    let w = task(&o, t0(), None);
    direct.create(&w).await.unwrap();
    for (task, op) in [(&w, "PutItem"), (&k, "TransactWriteItems")] {
        let cancelled = task.cancel(t0()).unwrap();
        lost_then_down(op);
        let written = lossy.update(&cancelled).await;
        proxy.clear();
        assert!(written.is_ok(), "{op}: {written:?}");
        assert_eq!(direct.get(task.id).await.unwrap().unwrap(), cancelled);
    }
    // Nothing applied: an honest failure, and nothing changed.
    let u = task(&o, t0(), None);
    proxy.inject("PutItem", Fault::ServerError, OUTLASTS_RETRIES);
    let refused = lossy.create(&u).await;
    proxy.clear();
    assert!(
        matches!(refused, Err(PortError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(direct.get(u.id).await.unwrap().is_none());
    // Applied, lost, and the read back fails too: unknown.
    let v = task(&o, t0(), None);
    lost_then_down("PutItem");
    proxy.inject("GetItem", Fault::ServerError, OUTLASTS_RETRIES);
    let unknown = lossy.create(&v).await;
    proxy.clear();
    assert!(
        matches!(unknown, Err(PortError::OutcomeUnknown(_))),
        "{unknown:?}"
    );
    assert!(direct.get(v.id).await.unwrap().is_some(), "it was applied");
}

/// What DynamoDB answers a transaction that met another one on the same item.
const TRANSACTION_CONFLICT: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]","CancellationReasons":[{"Code":"None"},{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}]}"#;

#[tokio::test]
#[ignore = "needs moto: make test-aws"]
async fn concurrent_creates_with_one_key_never_fail() {
    let (proxy, lossy, direct, ..) = rig().await;
    let o = owner();
    // The rival's transaction wins while ours conflicts with it: ours is a repeat of it.
    let winner = task(&o, t0(), Some("together"));
    let loser = task(&o, t0(), Some("together"));
    proxy.inject("TransactWriteItems", Fault::Answer(TRANSACTION_CONFLICT), 1);
    assert!(matches!(
        direct.create(&winner).await.unwrap(),
        CreateOutcome::Created
    ));
    match lossy.create(&loser).await {
        Ok(CreateOutcome::Existing(e)) => assert_eq!(*e, winner),
        other => panic!("expected the winner's task, got {other:?}"),
    }
    assert_eq!(proxy.injected(), 1);
    assert!(direct.get(loser.id).await.unwrap().is_none());
    // Both conflicted and neither was written: ours tries again and creates.
    let alone = task(&o, t0(), Some("alone"));
    proxy.inject("TransactWriteItems", Fault::Answer(TRANSACTION_CONFLICT), 2);
    assert!(matches!(
        lossy.create(&alone).await.unwrap(),
        CreateOutcome::Created
    ));
    assert_eq!(proxy.injected(), 3);
    assert_eq!(direct.get(alone.id).await.unwrap().unwrap(), alone);
}

/// The use cases, unchanged, over a store whose responses get lost: fire (claim, record,
/// dead letter), `/retry` and cancel each go on, once.
#[tokio::test]
#[ignore = "needs moto: make test-aws"]
async fn fire_retry_and_cancel_go_on_after_lost_responses() {
    use crate::app::{Fired, Ports, Scheduler};
    use crate::domain::{Next, WakeUp};
    use crate::fakes::{RecordingDeadLetters, RecordingWaker, ScriptedWebhook};
    use std::sync::Arc;

    let (proxy, lossy, direct, ..) = rig().await;
    let webhook = Arc::new(ScriptedWebhook::answering(&[RetryHint::Permanent]));
    let dead_letters = Arc::new(RecordingDeadLetters::default());
    let s = Scheduler::new(Ports {
        store: Arc::new(lossy),
        waker: Arc::new(RecordingWaker::default()),
        webhook: webhook.clone(),
        clock: Arc::new(crate::ports::SystemClock),
        dead_letters: dead_letters.clone(),
        metrics: Arc::new(crate::ports::NoMetrics),
        targets: Arc::new(crate::ports::AllowAllTargets),
    });
    let o = owner();
    let due = crate::domain::to_millis(Utc::now()) - TimeDelta::seconds(1);
    // A keyed task: its finishing and reviving writes are transactions (the key's TTL).
    let t = task(&o, due, Some("fire"));
    direct.create(&t).await.unwrap();
    proxy.inject("UpdateItem", Fault::LoseResponse, 1);
    proxy.inject("TransactWriteItems", Fault::LoseResponse, 1);
    let fired = s
        .fire(WakeUp {
            task_id: t.id,
            attempt: 1,
        })
        .await
        .unwrap();
    assert_eq!(fired, Fired::Delivered(Next::Failed));
    assert_eq!(
        proxy.injected(),
        2,
        "the claim's and the record's responses were lost"
    );
    assert_eq!(webhook.call_count(), 1);
    assert_eq!(
        dead_letters.0.lock().unwrap().len(),
        1,
        "the dead letter is sent"
    );
    let failed = direct.get(t.id).await.unwrap().unwrap();
    assert_eq!((failed.status, failed.attempts.len()), (Status::Failed, 1));
    // `/retry`, its response lost: 200, not 409.
    proxy.inject("TransactWriteItems", Fault::LoseResponse, 1);
    let revived = s.retry(&o, t.id).await.expect("the retry is ours");
    assert_eq!(revived.status, Status::Scheduled);
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), revived);
    // Cancel, its response lost: 200, not 409.
    proxy.inject("TransactWriteItems", Fault::LoseResponse, 1);
    let cancelled = s.cancel(&o, t.id).await.expect("the cancel is ours");
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), cancelled);
    let u = task(&o, due, None);
    direct.create(&u).await.unwrap();
    proxy.inject("PutItem", Fault::LoseResponse, 1);
    let cancelled = s.cancel(&o, u.id).await.expect("the cancel is ours");
    assert_eq!(direct.get(u.id).await.unwrap().unwrap(), cancelled);
    assert_eq!(proxy.injected(), 5);
}

/// `PATCH` and `/run` whose write's response was lost: the move is ours (`200`, not `409`),
/// its wake-up is armed for the new time, and a rival move from the old version still loses.
#[tokio::test]
#[ignore = "needs moto: make test-aws"]
async fn moves_whose_response_was_lost_are_ours_and_a_rival_still_conflicts() {
    use crate::app::{Ports, Scheduler};
    use crate::domain::WakeUp;
    use crate::fakes::{RecordingDeadLetters, RecordingWaker, ScriptedWebhook};
    use std::sync::Arc;

    let (proxy, lossy, direct, _, table) = rig().await;
    let waker = Arc::new(RecordingWaker::default());
    let s = Scheduler::new(Ports {
        store: Arc::new(lossy),
        waker: waker.clone(),
        webhook: Arc::new(ScriptedWebhook::default()),
        clock: Arc::new(crate::ports::SystemClock),
        dead_letters: Arc::new(RecordingDeadLetters::default()),
        metrics: Arc::new(crate::ports::NoMetrics),
        targets: Arc::new(crate::ports::AllowAllTargets),
    });
    let o = owner();
    let t = task(&o, t0() + TimeDelta::hours(1), None);
    direct.create(&t).await.unwrap();
    let wake = WakeUp {
        task_id: t.id,
        attempt: 1,
    };
    let new = t0() + TimeDelta::hours(2);
    proxy.inject("PutItem", Fault::LoseResponse, 1);
    let moved = s
        .reschedule(&o, t.id, new, None)
        .await
        .expect("the move is ours");
    assert_eq!(proxy.injected(), 1, "the fault was met");
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), moved);
    assert_eq!(moved.next_attempt_at, Some(new));
    assert_eq!(waker.armed.lock().unwrap().last(), Some(&(wake, new)));
    proxy.inject("PutItem", Fault::LoseResponse, 1);
    let due = s.run_now(&o, t.id).await.expect("the run is ours");
    assert_eq!(proxy.injected(), 2);
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), due);
    // A move decided on the first version is a rival now, lost response or not.
    let other = proxy.store(&table).await;
    for lose in [false, true] {
        if lose {
            proxy.inject("PutItem", Fault::LoseResponse, 1);
        }
        let stale = t.reschedule(t0(), None, t0()).unwrap();
        assert!(matches!(
            other.update(&stale).await,
            Err(PortError::Conflict)
        ));
    }
    assert_eq!(direct.get(t.id).await.unwrap().unwrap(), due);
}
