//! Delivers a task's webhook with reqwest: the task's method, headers and JSON body, our
//! `User-Agent` and Standard Webhooks headers; a per-task timeout; redirects never followed;
//! every outcome classified for retry.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::{StatusCode, header};

use crate::domain::{AttemptOutcome, Delivery, RetryHint, Task};
use crate::ports::{Clock, WebhookClient};

pub const USER_AGENT: &str = concat!("task-scheduler/", env!("CARGO_PKG_VERSION"));
/// Bytes of a failing response kept in the attempt's error, for the user's debugging.
const ERROR_EXCERPT: usize = 200;

/// Signs a delivery (Standard Webhooks): returns the `webhook-signature` value for
/// `"{id}.{timestamp}.{body}"`. The signing issue plugs its HMAC in here.
pub trait Signer: Send + Sync + 'static {
    fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String;
}

pub struct HttpWebhookClient {
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    signer: Option<Arc<dyn Signer>>,
}

impl HttpWebhookClient {
    pub fn new(
        clock: Arc<dyn Clock>,
        signer: Option<Arc<dyn Signer>>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // A redirect is a failure (API.md): following one would call a target nobody
            // checked.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .no_proxy()
            .build()?;
        Ok(Self {
            http,
            clock,
            signer,
        })
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&Utc) - now).to_std().unwrap_or_default())
}

/// Which failures are worth retrying: 408, 425, 429 and 5xx; other statuses are final.
pub fn classify(status: StatusCode) -> RetryHint {
    match status.as_u16() {
        200..=299 => RetryHint::Success,
        408 | 425 | 429 | 500..=599 => RetryHint::Retryable { after: None },
        _ => RetryHint::Permanent,
    }
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
            // Read (a bounded part of) the body so the connection can be reused and a
            // failure can say what the receiver answered.
            let mut resp = resp;
            let mut head = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                if head.len() < ERROR_EXCERPT {
                    head.extend_from_slice(&chunk);
                }
                if head.len() > 64 * 1024 {
                    break;
                }
            }
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
                // The chain says what actually failed (refused, DNS, TLS ...).
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    src = s.source();
                }
                let hint = if e.is_builder() {
                    RetryHint::Permanent
                } else {
                    RetryHint::Retryable { after: None }
                };
                (AttemptOutcome::Failed, None, Some(msg), hint)
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
}
