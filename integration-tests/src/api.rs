//! A small client of the HTTP API, as a user calls it ([`Api`], from [`App::api`]).
//!
//! [`App::api`]: crate::App::api

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::launcher::Output;

/// A response: status, headers and the body as JSON (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self.body
    }

    /// Asserts a JSON error of docs/api.md: `{"error": {"code", "message", ...}}`.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Value {
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = self.expect(status);
        assert!(
            ct.starts_with("application/json"),
            "error content-type {ct:?}"
        );
        assert_eq!(body["error"]["code"], code, "error body {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without message: {body}"
        );
        body
    }
}

#[derive(Clone)]
pub struct Api {
    pub(crate) client: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: Option<String>,
    /// The server's output, shown when a request fails.
    pub(crate) output: Output,
}

pub fn query_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Api {
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                // Let the readers take the last lines of a dying server.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "request to the server failed: {e:?}\nthe server's output:\n{}",
                    self.output.text()
                )
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    /// `POST path` with a JSON body and an optional `Idempotency-Key`.
    pub async fn post_json(&self, path: &str, body: &Value, idempotency_key: Option<&str>) -> Resp {
        let mut req = self.request(Method::POST, path).json(body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        self.send(req).await
    }

    /// `POST /tasks`.
    pub async fn create(&self, body: &Value) -> Resp {
        self.post_json("/tasks", body, None).await
    }

    /// `POST /tasks`, asserting 201; the task.
    pub async fn create_ok(&self, body: &Value) -> Value {
        self.create(body).await.expect(201)
    }

    pub async fn get(&self, id: &str) -> Resp {
        self.send(self.request(Method::GET, &format!("/tasks/{id}")))
            .await
    }

    pub async fn cancel(&self, id: &str) -> Resp {
        self.send(self.request(Method::DELETE, &format!("/tasks/{id}")))
            .await
    }

    pub async fn retry(&self, id: &str) -> Resp {
        self.send(self.request(Method::POST, &format!("/tasks/{id}/retry")))
            .await
    }

    /// `GET /tasks?{query}` (query already encoded, may be empty).
    pub async fn list(&self, query: &str) -> Resp {
        let path = if query.is_empty() {
            "/tasks".to_owned()
        } else {
            format!("/tasks?{query}")
        };
        self.send(self.request(Method::GET, &path)).await
    }

    /// Every task of the caller (all pages), optionally in one status.
    pub async fn list_all(&self, status: Option<&str>) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = vec!["limit=100".to_owned()];
            if let Some(s) = status {
                q.push(format!("status={s}"));
            }
            if let Some(c) = &cursor {
                q.push(format!("cursor={}", query_escape(c)));
            }
            let page = self.list(&q.join("&")).await.expect(200);
            out.extend(page["tasks"].as_array().expect("tasks").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// Polls `GET /tasks/{id}` until its status is `status`; panics with the last view after
    /// `within`.
    pub async fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let task = self.get(id).await.expect(200);
            if task["status"] == status {
                return task;
            }
            if Instant::now() >= deadline {
                panic!("task {id} not {status} within {within:?}; last seen: {task:#}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
