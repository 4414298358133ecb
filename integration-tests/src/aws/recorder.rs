//! moto's request recorder: which AWS operations the function made for one task.

use base64::Engine;
use serde_json::Value;

use super::FUNCTION_APP_ID;

/// moto's request recorder: which AWS operations the function made for one task.
pub struct Recorder {
    endpoint: String,
}

impl Recorder {
    /// Starts recording (idempotent; the recording is shared by concurrent tests, which is
    /// why calls are attributed to tasks by id and to the function by its User-Agent).
    pub async fn start(endpoint: &str) -> Recorder {
        reqwest::Client::new()
            .post(format!("{endpoint}/moto-api/recorder/start-recording"))
            .send()
            .await
            .expect("start recording");
        Recorder {
            endpoint: endpoint.to_owned(),
        }
    }

    /// The function's AWS operations mentioning `task_id`, in order.
    pub async fn function_calls_for(&self, task_id: &str) -> Vec<String> {
        self.function_calls_mentioning(&[task_id]).await
    }

    /// The function's AWS operations mentioning any of `ids` (a schedule and its
    /// occurrences), in order, each once.
    pub async fn function_calls_mentioning(&self, ids: &[&str]) -> Vec<String> {
        let text = reqwest::get(format!(
            "{}/moto-api/recorder/download-recording",
            self.endpoint
        ))
        .await
        .expect("download recording")
        .text()
        .await
        .expect("recording text");
        let mut out = Vec::new();
        for line in text.lines() {
            let Ok(rec) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let headers = &rec["headers"];
            let ua = format!(
                "{} {}",
                headers["User-Agent"].as_str().unwrap_or(""),
                headers["X-Amz-User-Agent"]
                    .as_str()
                    .or(headers["x-amz-user-agent"].as_str())
                    .unwrap_or("")
            );
            if !ua.contains(FUNCTION_APP_ID) {
                continue;
            }
            let body = match (rec["body"].as_str(), rec["body_encoded"].as_bool()) {
                (Some(b), Some(true)) => String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .unwrap_or_default(),
                )
                .unwrap_or_default(),
                (Some(b), _) => b.to_owned(),
                _ => String::new(),
            };
            let url = rec["url"].as_str().unwrap_or("");
            if !ids.iter().any(|id| body.contains(id) || url.contains(id)) {
                continue;
            }
            let op = match headers["X-Amz-Target"].as_str() {
                Some(t) => t.rsplit('.').next().unwrap_or(t).to_owned(),
                None => {
                    let method = rec["method"].as_str().unwrap_or("");
                    let path = url
                        .split("://")
                        .nth(1)
                        .and_then(|r| r.split_once('/'))
                        .map_or("", |(_, p)| p);
                    match (method, path.starts_with("schedules/")) {
                        ("POST", true) => "CreateSchedule".into(),
                        ("DELETE", true) => "DeleteSchedule".into(),
                        ("GET", true) => "GetSchedule".into(),
                        _ => body
                            .split("Action=")
                            .nth(1)
                            .map(|a| a.split('&').next().unwrap_or(a).to_owned())
                            .unwrap_or_else(|| format!("{method} /{path}")),
                    }
                }
            };
            out.push(op);
        }
        out
    }
}
