//! Delivery against real receivers on loopback and a fake resolver: what a DNS failure and
//! a 2xx whose body misbehaves do to an attempt, and to the task.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use super::guard::{Lookup, TargetGuard};
use super::*;
use crate::app::{CreateCommand, Created, Fired, Ports, Scheduler};
use crate::domain::*;
use crate::fakes::{RecordingDeadLetters, RecordingWaker};
use crate::ports::{AllowAllTargets, NoMetrics, SystemClock};

/// What the fake resolver answers to one lookup.
#[derive(Debug, Clone)]
enum Answer {
    /// Never answers (a resolver that timed out).
    Hang,
    /// `getaddrinfo` failed, as SERVFAIL (`EAI_AGAIN`) or NXDOMAIN (`EAI_NONAME`) do.
    Fail(&'static str),
    Addrs(Vec<IpAddr>),
}

#[derive(Debug)]
struct FakeLookup {
    script: Mutex<VecDeque<Answer>>,
    calls: AtomicUsize,
}

impl FakeLookup {
    fn answering(answers: &[Answer]) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(answers.iter().cloned().collect()),
            calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Lookup for FakeLookup {
    async fn lookup(&self, _host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .expect("a scripted answer");
        match answer {
            Answer::Hang => std::future::pending().await,
            Answer::Fail(msg) => Err(std::io::Error::other(msg)),
            Answer::Addrs(ips) => Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()),
        }
    }
}

const SERVFAIL: &str = "failed to lookup address information: Temporary failure in name resolution";
const NXDOMAIN: &str = "failed to lookup address information: Name or service not known";

fn task_for(url: &str, run_at: DateTime<Utc>) -> NewTask {
    NewTask {
        action: Action::Webhook(WebhookAction {
            url: WebhookUrl::parse(url).unwrap(),
            method: HttpMethod::Post,
            headers: WebhookHeaders::default(),
            data: Some(serde_json::json!({"k": "v"})),
        }),
        run_at,
        retry: RetryPolicy::parse(Some(3), Some(1), Some(1)).unwrap(),
        timeout: TimeoutSeconds::default(),
        local: None,
    }
}

fn task(url: &str) -> Task {
    Task::new(
        TaskId::generate(),
        Owner::parse("alice").unwrap(),
        task_for(url, Utc::now()),
        Utc::now(),
        None,
        None,
    )
}

fn loopback_guard(lookup: Arc<FakeLookup>) -> TargetGuard {
    TargetGuard::parse_allowed("127.0.0.0/8")
        .unwrap()
        .with_lookup(lookup)
}

/// A receiver on loopback that counts requests and answers 200 "ok".
async fn counting_receiver() -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        h.fetch_add(1, Ordering::SeqCst);
        async { "ok" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, hits)
}

#[tokio::test(start_paused = true)]
async fn the_guard_tells_a_refusal_from_a_name_that_does_not_resolve() {
    use super::guard::ResolveError;
    let ten = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let public = IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14));
    for (answer, refused) in [
        (Answer::Fail(SERVFAIL), false),
        (Answer::Fail(NXDOMAIN), false),
        (Answer::Addrs(Vec::new()), false),
        (Answer::Hang, false),
        (Answer::Addrs(vec![ten]), true),
        (
            Answer::Addrs(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), ten]),
            false,
        ),
    ] {
        let guard = loopback_guard(FakeLookup::answering(std::slice::from_ref(&answer)));
        let got = guard.resolve("hooks.example.test", 443).await;
        match (refused, &got) {
            (true, Err(ResolveError::Refused(why))) => {
                assert!(why.to_string().contains("not a public address"), "{why}")
            }
            (false, Err(ResolveError::Unresolved(why))) => {
                assert!(why.starts_with("hooks.example.test: "), "{why}")
            }
            // Loopback is allowed here: the refused address is dropped, the allowed one kept.
            (false, Ok(addrs)) => assert_eq!(
                addrs,
                &vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 443)]
            ),
            _ => panic!("{answer:?}: {got:?}"),
        }
    }
    // `localhost` is refused by name, before any lookup, when loopback is not allowed.
    let lookup = FakeLookup::answering(&[Answer::Addrs(vec![public])]);
    let strict = TargetGuard::public_only().with_lookup(lookup.clone());
    assert!(matches!(
        strict.resolve("localhost", 80).await,
        Err(ResolveError::Refused(_))
    ));
    assert_eq!(lookup.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_name_that_does_not_resolve_is_retried_not_refused() {
    for answer in [
        Answer::Fail(SERVFAIL),
        Answer::Fail(NXDOMAIN),
        Answer::Addrs(Vec::new()),
        Answer::Hang,
    ] {
        let lookup = FakeLookup::answering(std::slice::from_ref(&answer));
        let client =
            HttpWebhookClient::guarded(Arc::new(SystemClock), None, loopback_guard(lookup.clone()))
                .unwrap();
        let d = client
            .deliver(&task("http://hooks.example.test/x"), 1)
            .await;
        assert_eq!(
            (d.outcome, d.status_code, d.hint),
            (
                AttemptOutcome::Failed,
                None,
                RetryHint::Retryable { after: None }
            ),
            "{answer:?}: {d:?}"
        );
        let error = d.error.unwrap();
        assert!(
            error.starts_with("hooks.example.test: cannot resolve (")
                || error == "hooks.example.test: name resolution timed out after 3 s",
            "{answer:?}: {error}"
        );
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 1);
        if matches!(answer, Answer::Hang) {
            // The guard's own 3 s resolution timeout ends it, not the task's 10 s.
            assert!(
                d.duration >= Duration::from_secs(3) && d.duration < Duration::from_secs(4),
                "{:?}",
                d.duration
            );
            assert!(error.contains("timed out"), "{error}");
        }
    }
}

#[tokio::test]
async fn a_name_that_resolves_to_a_refused_address_stays_refused() {
    for ip in [
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
        "fd00:ec2::254".parse().unwrap(),
    ] {
        let lookup = FakeLookup::answering(&[Answer::Addrs(vec![ip])]);
        let client =
            HttpWebhookClient::guarded(Arc::new(SystemClock), None, loopback_guard(lookup))
                .unwrap();
        let d = client
            .deliver(&task("http://hooks.example.test/x"), 1)
            .await;
        assert_eq!(
            (d.outcome, d.hint),
            (AttemptOutcome::Failed, RetryHint::Permanent),
            "{ip}: {d:?}"
        );
        assert!(
            d.error.as_deref().unwrap().starts_with("target refused: "),
            "{d:?}"
        );
    }
}

/// A clock the test moves by hand.
struct ManualClock(Mutex<DateTime<Utc>>);

impl crate::ports::Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

#[tokio::test]
async fn a_task_whose_name_failed_to_resolve_is_delivered_on_the_next_attempt() {
    let (port, hits) = counting_receiver().await;
    // The first lookup fails as a SERVFAIL does; the second finds the receiver.
    let lookup = FakeLookup::answering(&[
        Answer::Fail(SERVFAIL),
        Answer::Addrs(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
    ]);
    let clock = Arc::new(ManualClock(Mutex::new(Utc::now())));
    let dir = tempfile::tempdir().unwrap();
    let dead_letters = Arc::new(RecordingDeadLetters::default());
    let scheduler = Scheduler::new(Ports {
        store: Arc::new(crate::store::SqliteStore::open(dir.path()).unwrap()),
        waker: Arc::new(RecordingWaker::default()),
        webhook: Arc::new(
            HttpWebhookClient::guarded(clock.clone(), None, loopback_guard(lookup.clone()))
                .unwrap(),
        ),
        clock: clock.clone(),
        dead_letters: dead_letters.clone(),
        metrics: Arc::new(NoMetrics),
        targets: Arc::new(AllowAllTargets),
    });
    let alice = Owner::parse("alice").unwrap();
    let now = clock.now();
    let Created::New(t) = scheduler
        .create(CreateCommand {
            owner: alice.clone(),
            task: task_for(&format!("http://hooks.example.test:{port}/x"), now),
            idempotency: None,
        })
        .await
        .unwrap()
    else {
        panic!()
    };

    let fired = scheduler
        .fire(WakeUp {
            task_id: t.id,
            attempt: 1,
        })
        .await
        .unwrap();
    let Fired::Delivered(Next::Retry { at, wake }) = fired else {
        panic!("a resolution failure must be retried: {fired:?}")
    };
    assert_eq!(wake.attempt, 2);
    assert!(at >= now && at <= now + TimeDelta::seconds(1), "{at}");
    let after_one = scheduler.get(&alice, t.id).await.unwrap();
    assert_eq!(after_one.status, Status::Scheduled);
    assert!(
        after_one.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("cannot resolve"),
        "{:?}",
        after_one.attempts
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert!(dead_letters.0.lock().unwrap().is_empty(), "no dead letter");

    *clock.0.lock().unwrap() = at;
    assert_eq!(
        scheduler.fire(wake).await.unwrap(),
        Fired::Delivered(Next::Completed)
    );
    let done = scheduler.get(&alice, t.id).await.unwrap();
    assert_eq!(
        (
            done.status,
            done.attempts.len(),
            done.attempts[1].status_code
        ),
        (Status::Completed, 2, Some(200))
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(lookup.calls.load(Ordering::SeqCst), 2);
}

/// What a raw receiver does after the status line and headers.
#[derive(Debug, Clone, Copy)]
enum BodyThen {
    /// Announces 1 MB, sends a few bytes, then holds the connection open, silent.
    Stall,
    /// Announces 1 MB, sends a few bytes, then resets the connection (RST).
    Reset,
    /// Streams a chunked body that never ends, as fast as it is read.
    Endless,
}

/// Reads one request (headers, then a `Content-Length` body) off the socket.
async fn read_request(sock: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "request cut short");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "request body cut short");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A receiver on loopback, in raw TCP so it can misbehave after its headers: answers
/// `status` and then does `then`. Counts the requests it receives.
async fn raw_receiver(status: &'static str, then: BodyThen) -> (u16, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let counted = counted.clone();
            tokio::spawn(async move {
                read_request(&mut sock).await;
                counted.fetch_add(1, Ordering::SeqCst);
                match then {
                    BodyThen::Stall | BodyThen::Reset => {
                        let head = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: 1000000\r\n\r\nupstream says"
                        );
                        sock.write_all(head.as_bytes()).await.unwrap();
                        sock.flush().await.unwrap();
                        if matches!(then, BodyThen::Reset) {
                            sock.set_zero_linger().unwrap();
                            drop(sock);
                        } else {
                            // Hold the connection, silent, until the test ends.
                            std::future::pending::<()>().await;
                        }
                    }
                    BodyThen::Endless => {
                        let head = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
                        );
                        sock.write_all(head.as_bytes()).await.unwrap();
                        let mut line = b"upstream exploded ".to_vec();
                        line.resize(16 * 1024, b'x');
                        let chunk =
                            [format!("{:x}\r\n", line.len()).as_bytes(), &line, b"\r\n"].concat();
                        while sock.write_all(&chunk).await.is_ok() {}
                    }
                }
            });
        }
    });
    (port, hits)
}

/// The task timeout of the tests below: long enough that an attempt that waits for the
/// body is plainly told from one that does not.
const TIMEOUT_S: i64 = 4;

fn body_task(port: u16) -> NewTask {
    NewTask {
        timeout: TimeoutSeconds::parse(TIMEOUT_S).unwrap(),
        local: None,
        ..task_for(&format!("http://127.0.0.1:{port}/hook"), Utc::now())
    }
}

/// A scheduler over SQLite with the real HTTP client, and the waker it arms.
fn scheduler(dir: &tempfile::TempDir) -> (Scheduler, Arc<RecordingWaker>) {
    let waker = Arc::new(RecordingWaker::default());
    let scheduler = Scheduler::new(Ports {
        store: Arc::new(crate::store::SqliteStore::open(dir.path()).unwrap()),
        waker: waker.clone(),
        webhook: Arc::new(HttpWebhookClient::new(Arc::new(SystemClock), None).unwrap()),
        clock: Arc::new(SystemClock),
        dead_letters: Arc::new(RecordingDeadLetters::default()),
        metrics: Arc::new(NoMetrics),
        targets: Arc::new(AllowAllTargets),
    });
    (scheduler, waker)
}

/// A 2xx followed by `then`: the attempt succeeded, the task is completed, and the receiver
/// got exactly one request.
async fn a_2xx_is_a_success_delivered_once(then: BodyThen) {
    let (port, hits) = raw_receiver("200 OK", then).await;
    let dir = tempfile::tempdir().unwrap();
    let (scheduler, waker) = scheduler(&dir);
    let alice = Owner::parse("alice").unwrap();
    let Created::New(t) = scheduler
        .create(CreateCommand {
            owner: alice.clone(),
            task: body_task(port),
            idempotency: None,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    let wake = WakeUp {
        task_id: t.id,
        attempt: 1,
    };
    assert_eq!(
        scheduler.fire(wake).await.unwrap(),
        Fired::Delivered(Next::Completed),
        "{then:?}"
    );
    let done = scheduler.get(&alice, t.id).await.unwrap();
    assert_eq!(done.status, Status::Completed, "{then:?}");
    let attempt = &done.attempts[..];
    assert_eq!(attempt.len(), 1, "{then:?}: {attempt:?}");
    assert_eq!(
        (
            attempt[0].outcome,
            attempt[0].status_code,
            &attempt[0].error
        ),
        (AttemptOutcome::Succeeded, Some(200), &None),
        "{then:?}"
    );
    // The status decided it, not the body: well inside the task's timeout.
    assert!(
        attempt[0].duration_ms < 2_000,
        "{then:?}: {} ms",
        attempt[0].duration_ms
    );
    // Nothing else is armed, and a duplicate wake-up sends nothing.
    assert_eq!(waker.armed.lock().unwrap().len(), 1, "{then:?}");
    assert_eq!(scheduler.fire(wake).await.unwrap(), Fired::Dropped);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "{then:?}: one request");
}

#[tokio::test]
async fn a_2xx_whose_body_stalls_is_a_success_delivered_once() {
    a_2xx_is_a_success_delivered_once(BodyThen::Stall).await;
}

#[tokio::test]
async fn a_2xx_whose_connection_resets_mid_body_is_a_success_delivered_once() {
    a_2xx_is_a_success_delivered_once(BodyThen::Reset).await;
}

#[tokio::test]
async fn a_2xx_whose_body_never_ends_is_a_success_delivered_once() {
    a_2xx_is_a_success_delivered_once(BodyThen::Endless).await;
}

#[tokio::test]
async fn a_2xx_body_is_waited_for_briefly_and_no_longer() {
    let (port, _hits) = raw_receiver("200 OK", BodyThen::Stall).await;
    let client = HttpWebhookClient::new(Arc::new(SystemClock), None).unwrap();
    let t = Task::new(
        TaskId::generate(),
        Owner::parse("alice").unwrap(),
        body_task(port),
        Utc::now(),
        None,
        None,
    );
    let d = client.deliver(&t, 1).await;
    assert_eq!((d.hint, d.status_code), (RetryHint::Success, Some(200)));
    // The body read gives up after BODY_READ_TIME of silence; the status has decided.
    assert!(
        d.duration >= BODY_READ_TIME && d.duration < BODY_READ_TIME + Duration::from_secs(1),
        "{:?}",
        d.duration
    );
}

/// A 503 followed by `then`: a retryable failure with the status and the start of the body
/// in its error, decided as fast as a 2xx.
async fn a_503_keeps_a_bounded_prefix_of_its_body(then: BodyThen) {
    let (port, hits) = raw_receiver("503 Service Unavailable", then).await;
    let client = HttpWebhookClient::new(Arc::new(SystemClock), None).unwrap();
    let t = Task::new(
        TaskId::generate(),
        Owner::parse("alice").unwrap(),
        body_task(port),
        Utc::now(),
        None,
        None,
    );
    let d = client.deliver(&t, 1).await;
    assert_eq!(
        (d.outcome, d.status_code, d.hint),
        (
            AttemptOutcome::Failed,
            Some(503),
            RetryHint::Retryable { after: None }
        ),
        "{then:?}: {d:?}"
    );
    let error = d.error.unwrap();
    assert!(
        error.starts_with("HTTP 503 Service Unavailable: upstream"),
        "{then:?}: {error}"
    );
    assert!(error.len() <= 64 + ERROR_EXCERPT, "{then:?}: {error}");
    assert!(
        d.duration < Duration::from_secs(2),
        "{then:?}: {:?}",
        d.duration
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_503_whose_body_stalls_keeps_what_arrived() {
    a_503_keeps_a_bounded_prefix_of_its_body(BodyThen::Stall).await;
}

#[tokio::test]
async fn a_503_whose_connection_resets_mid_body_keeps_what_arrived() {
    a_503_keeps_a_bounded_prefix_of_its_body(BodyThen::Reset).await;
}

#[tokio::test]
async fn a_503_whose_body_never_ends_keeps_a_bounded_prefix() {
    a_503_keeps_a_bounded_prefix_of_its_body(BodyThen::Endless).await;
}
