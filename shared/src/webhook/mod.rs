//! Delivers a task's webhook with reqwest: the task's method, headers and JSON body, our
//! `User-Agent` and Standard Webhooks headers; a per-task timeout; redirects never followed;
//! every outcome classified for retry.

pub(crate) mod guard;
pub(crate) mod signing;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::{StatusCode, header};

use crate::domain::{AttemptOutcome, Delivery, RetryHint, Task};
use crate::ports::{Clock, WebhookClient};

pub(crate) const USER_AGENT: &str = concat!("task-scheduler/", env!("CARGO_PKG_VERSION"));
/// Bytes of a failing response kept in the attempt's error, for the user's debugging.
const ERROR_EXCERPT: usize = 200;
/// The most of a response body ever read: the prefix a failure's error text is cut from,
/// and room enough for a typical small body to end so the connection can be reused.
const BODY_READ_BYTES: usize = 4 * 1024;
/// How long the body is read once the status is known. The status decides the attempt, so
/// a body that streams slowly, never ends or breaks costs at most this, and never the
/// task's timeout.
const BODY_READ_TIME: Duration = Duration::from_millis(250);

/// Signs a delivery (Standard Webhooks): returns the `webhook-signature` value for
/// `"{id}.{timestamp}.{body}"`. [`signing::StandardWebhooksSigner`] is the HMAC-SHA256 one.
pub(crate) trait Signer: Send + Sync + 'static {
    fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String;
}

pub(crate) struct HttpWebhookClient {
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    signer: Option<Arc<dyn Signer>>,
}

impl HttpWebhookClient {
    /// A client that calls any target (tests only: the hosts always guard).
    #[cfg(test)]
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
        signer: Option<Arc<dyn Signer>>,
    ) -> Result<Self, reqwest::Error> {
        Self::build(clock, signer, None)
    }

    /// A client that connects only to addresses the guard allows, resolved by the guard
    /// itself (no second lookup for DNS rebinding to exploit).
    pub(crate) fn guarded(
        clock: Arc<dyn Clock>,
        signer: Option<Arc<dyn Signer>>,
        guard: guard::TargetGuard,
    ) -> Result<Self, reqwest::Error> {
        Self::build(clock, signer, Some(guard))
    }

    fn build(
        clock: Arc<dyn Clock>,
        signer: Option<Arc<dyn Signer>>,
        guard: Option<guard::TargetGuard>,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // A redirect is a failure (docs/api.md): following one would call a target nobody
            // checked.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .no_proxy();
        if let Some(guard) = guard {
            builder = builder.dns_resolver(Arc::new(guard::GuardedResolver(guard)));
        }
        Ok(Self {
            http: builder.build()?,
            clock,
            signer,
        })
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&Utc) - now).to_std().unwrap_or_default())
}

/// Which failures are worth retrying: 408, 425, 429 and 5xx; other statuses are final.
pub(crate) fn classify(status: StatusCode) -> RetryHint {
    match status.as_u16() {
        200..=299 => RetryHint::Success,
        408 | 425 | 429 | 500..=599 => RetryHint::Retryable { after: None },
        _ => RetryHint::Permanent,
    }
}

/// Reads at most [`BODY_READ_BYTES`] of the body, for at most [`BODY_READ_TIME`]. An error
/// (a reset, the task's timeout) ends the read like the end of the body does: what arrived
/// is kept, and the attempt's outcome is the status's alone.
async fn read_prefix(resp: &mut reqwest::Response) -> Vec<u8> {
    let mut head = Vec::new();
    let read = async {
        while head.len() < BODY_READ_BYTES {
            match resp.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
    };
    let _ = tokio::time::timeout(BODY_READ_TIME, read).await;
    head.truncate(BODY_READ_BYTES);
    head
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_EXCERPT)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[async_trait]
impl WebhookClient for HttpWebhookClient {
    async fn deliver(&self, task: &Task, _attempt: u32) -> Delivery {
        let hook = task.action.webhook();
        let started_at = self.clock.now();
        let clock_start = tokio::time::Instant::now();
        let body = hook
            .data
            .as_ref()
            .map(|d| serde_json::to_vec(d).unwrap_or_default());
        let msg_id = task.id.to_string();
        let timestamp = started_at.timestamp();
        let method =
            reqwest::Method::from_bytes(hook.method.as_str().as_bytes()).expect("valid method");
        let mut req = self
            .http
            .request(method, hook.url.as_url().clone())
            .timeout(task.timeout.duration())
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(signer) = &self.signer {
            let signature = signer.sign(&msg_id, timestamp, body.as_deref().unwrap_or_default());
            req = req.header("webhook-signature", signature);
        }
        if body.is_some() && !hook.headers.contains("content-type") {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in hook.headers.iter() {
            req = req.header(name, value);
        }
        if let Some(body) = body {
            req = req.body(body);
        }

        let result = async {
            let resp = req.send().await?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, started_at));
            // The status decides the attempt (docs/api.md, Delivery): once it is here, nothing
            // the body does can turn a 2xx into a failure. The body is read only for a
            // bounded prefix (4 KiB, 250 ms): a failure's error text is cut from it, and a
            // small body that ends in time lets the connection be reused. After a 2xx it is
            // discarded.
            let mut resp = resp;
            let head = read_prefix(&mut resp).await;
            Ok::<_, reqwest::Error>((status, retry_after, head))
        }
        .await;
        let duration = clock_start.elapsed();

        let (outcome, status_code, error, hint) = match result {
            Ok((status, retry_after, head)) => match classify(status) {
                RetryHint::Success => (
                    AttemptOutcome::Succeeded,
                    Some(status.as_u16()),
                    None,
                    RetryHint::Success,
                ),
                hint => {
                    let hint = match hint {
                        RetryHint::Retryable { .. } => RetryHint::Retryable { after: retry_after },
                        other => other,
                    };
                    let what = if status.is_redirection() {
                        " (redirects are not followed)"
                    } else {
                        ""
                    };
                    let text = excerpt(&head);
                    let error = if text.is_empty() {
                        format!("HTTP {status}{what}")
                    } else {
                        format!("HTTP {status}{what}: {text}")
                    };
                    (
                        AttemptOutcome::Failed,
                        Some(status.as_u16()),
                        Some(error),
                        hint,
                    )
                }
            },
            Err(e) if e.is_timeout() => (
                AttemptOutcome::TimedOut,
                None,
                Some(format!("timed out after {} s", task.timeout.get())),
                RetryHint::Retryable { after: None },
            ),
            Err(e) => {
                // The chain says what actually failed (refused, DNS, TLS ...). A target the
                // guard refused is final, not worth a retry; a name that did not resolve
                // (`guard::Unresolved`) is an ordinary connection error, retried.
                let mut msg = e.to_string();
                let mut refused = None;
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    if let Some(r) = s.downcast_ref::<guard::Refused>() {
                        refused = Some(r.to_string());
                    }
                    if let Some(u) = s.downcast_ref::<guard::Unresolved>() {
                        // The guard's own words name the host and the resolver's answer;
                        // the layers reqwest and hyper wrap around them add nothing.
                        msg = u.to_string();
                        break;
                    }
                    src = s.source();
                }
                match refused {
                    Some(r) => (AttemptOutcome::Failed, None, Some(r), RetryHint::Permanent),
                    None if e.is_builder() => (
                        AttemptOutcome::Failed,
                        None,
                        Some(msg),
                        RetryHint::Permanent,
                    ),
                    None => (
                        AttemptOutcome::Failed,
                        None,
                        Some(msg),
                        RetryHint::Retryable { after: None },
                    ),
                }
            }
        };
        Delivery {
            started_at,
            duration,
            outcome,
            status_code,
            error,
            hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classification_follows_the_contract() {
        for code in [200, 201, 204, 299] {
            assert_eq!(
                classify(StatusCode::from_u16(code).unwrap()),
                RetryHint::Success
            );
        }
        for code in [408, 425, 429, 500, 502, 503, 599] {
            assert!(
                matches!(
                    classify(StatusCode::from_u16(code).unwrap()),
                    RetryHint::Retryable { .. }
                ),
                "{code}"
            );
        }
        for code in [301, 302, 307, 400, 401, 403, 404, 410, 422] {
            assert_eq!(
                classify(StatusCode::from_u16(code).unwrap()),
                RetryHint::Permanent,
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    fn task_for(url: &str) -> Task {
        use crate::domain::*;
        let new = NewTask {
            action: Action::Webhook(WebhookAction {
                url: WebhookUrl::parse(url).unwrap(),
                method: HttpMethod::Post,
                headers: WebhookHeaders::default(),
                data: Some(serde_json::json!({"k": "v"})),
            }),
            run_at: Utc::now(),
            retry: RetryPolicy::default(),
            timeout: TimeoutSeconds::default(),
            local: None,
        };
        Task::new(
            TaskId::generate(),
            Owner::parse("alice").unwrap(),
            new,
            Utc::now(),
            None,
            None,
        )
    }

    /// A receiver on loopback that counts requests and answers 200.
    async fn receiver() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().fallback(move || {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { "ok" }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, hits)
    }

    #[tokio::test]
    async fn the_guarded_client_never_connects_to_a_refused_address() {
        let (port, hits) = receiver().await;
        let clock: Arc<dyn Clock> = Arc::new(crate::ports::SystemClock);
        let strict =
            HttpWebhookClient::guarded(clock.clone(), None, guard::TargetGuard::public_only())
                .unwrap();
        // A name that resolves to loopback: refused by the client's own resolver, for good.
        let d = strict
            .deliver(&task_for(&format!("http://localhost:{port}/x")), 1)
            .await;
        assert_eq!(d.hint, RetryHint::Permanent, "{d:?}");
        assert!(
            d.error.as_deref().unwrap().contains("target refused"),
            "{d:?}"
        );
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "no request reached the receiver"
        );
        // The same target with loopback allowed is delivered.
        let local = HttpWebhookClient::guarded(
            clock,
            None,
            guard::TargetGuard::parse_allowed("127.0.0.0/8,::1/128").unwrap(),
        )
        .unwrap();
        let d = local
            .deliver(&task_for(&format!("http://localhost:{port}/x")), 1)
            .await;
        assert_eq!(
            (d.hint, d.status_code),
            (RetryHint::Success, Some(200)),
            "{d:?}"
        );
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_signed_delivery_carries_one_signature_per_secret() {
        // The receiver keeps what it got: the headers and the body, as bytes.
        let seen = Arc::new(std::sync::Mutex::new(None));
        let s = seen.clone();
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                *s.lock().unwrap() = Some((headers, body));
                async { "ok" }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let (a, b) = (
            signing::StandardWebhooksSigner::generate(),
            signing::StandardWebhooksSigner::generate(),
        );
        let signer = Arc::new(signing::StandardWebhooksSigner::parse(&format!("{a},{b}")).unwrap());
        let client =
            HttpWebhookClient::new(Arc::new(crate::ports::SystemClock), Some(signer)).unwrap();
        let task = task_for(&format!("http://127.0.0.1:{port}/"));
        let d = client.deliver(&task, 1).await;
        assert_eq!(d.hint, RetryHint::Success);
        let (headers, body) = seen.lock().unwrap().take().expect("delivered");
        assert_eq!(&body[..], br#"{"k":"v"}"#);
        assert_eq!(headers["webhook-id"], task.id.to_string());
        let sig = headers["webhook-signature"].to_str().unwrap().to_owned();
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2, "{sig}");
        // Each signature, alone, is verified by the reference library with its own secret
        // over what the receiver got (id, timestamp, body), and by no other secret.
        for (part, (mine, other)) in parts.iter().zip([(&a, &b), (&b, &a)]) {
            let mut one = headers.clone();
            one.insert("webhook-signature", part.parse().unwrap());
            standardwebhooks::Webhook::new(mine)
                .unwrap()
                .verify(&body, &one)
                .expect("verified with its own secret");
            assert!(
                standardwebhooks::Webhook::new(other)
                    .unwrap()
                    .verify(&body, &one)
                    .is_err()
            );
        }
    }
}

#[cfg(test)]
mod delivery_tests;
