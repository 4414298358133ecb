//! Support for the cloud rehearsal: the AWS resources on moto server ([`AwsRig`]), the real
//! binary on cargo lambda's Lambda Runtime API ([`Function`]), API Gateway v2 events with an
//! IAM authorizer context ([`api_event`]), and the test playing EventBridge Scheduler and the
//! SQS event source ([`AwsRig::pump_delay_queue`], [`AwsRig::fire_schedule`]).
//!
//! Needs `AWS_ENDPOINT_URL` (moto) and `cargo-lambda` (`$CARGO_LAMBDA`, else on PATH);
//! `make test-aws` provides both.

use std::{
    net::TcpListener,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput;
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub use shared::aws_testing::{emulator_endpoint, unique};

/// The function's name on cargo lambda's Runtime API (`--only-lambda-apis` serves `_`).
pub const FUNCTION: &str = "_";
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/task-scheduler-scheduler";
/// The SDK's app id in the function's User-Agent: tells its AWS calls from the test's.
pub const FUNCTION_APP_ID: &str = "task-scheduler-fn";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One rehearsal's AWS resources on moto, named uniquely so tests run side by side.
pub struct AwsRig {
    pub endpoint: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub table: String,
    pub group: String,
    pub delay_queue_url: String,
    /// The infrastructure DLQ (Scheduler's dead-letter config).
    pub dlq_url: String,
    pub dlq_arn: String,
    /// The customers' dead letters (`FAILED_TASKS_QUEUE_URL`).
    pub failed_tasks_queue_url: String,
    /// The signing secret (`whsec_...`) and its Secrets Manager ARN.
    pub signing_secret: String,
    pub signing_secret_arn: String,
}

impl AwsRig {
    /// `None` (after a skip notice) without an emulator; panics under `REQUIRE_EMULATORS=1`.
    pub async fn create(test: &str) -> Option<AwsRig> {
        let config = shared::aws_testing::sdk_config(test).await?;
        let endpoint = emulator_endpoint(test)?;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let scheduler = aws_sdk_scheduler::Client::new(&config);
        let table = unique("tasks");
        shared::store::DynamoStore::create_table(&dynamodb, &table)
            .await
            .expect("create table");
        let queue = |name: String| {
            let sqs = sqs.clone();
            async move {
                sqs.create_queue()
                    .queue_name(name)
                    .send()
                    .await
                    .expect("create queue")
                    .queue_url
                    .expect("queue url")
            }
        };
        let delay_queue_url = queue(unique("delay")).await;
        let dlq_url = queue(unique("dlq")).await;
        let failed_tasks_queue_url = queue(unique("failed-tasks")).await;
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .expect("queue arn");
        let group = unique("wakeups");
        scheduler
            .create_schedule_group()
            .name(&group)
            .send()
            .await
            .expect("create schedule group");
        let signing_secret = format!(
            "whsec_{}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                rand::random::<[u8; 32]>()
            )
        );
        let signing_secret_arn = aws_sdk_secretsmanager::Client::new(&config)
            .create_secret()
            .name(unique("signing"))
            .secret_string(&signing_secret)
            .send()
            .await
            .expect("create secret")
            .arn
            .expect("secret arn");
        Some(AwsRig {
            signing_secret,
            signing_secret_arn,
            endpoint,
            dynamodb,
            sqs,
            scheduler,
            table,
            group,
            delay_queue_url,
            dlq_url,
            dlq_arn,
            failed_tasks_queue_url,
        })
    }

    /// The function's environment, exactly the variables the CDK app sets.
    pub fn function_env(&self) -> Vec<(String, String)> {
        [
            ("TABLE_NAME", self.table.as_str()),
            ("SCHEDULE_GROUP", &self.group),
            ("SCHEDULER_ROLE_ARN", ROLE_ARN),
            ("DELAY_QUEUE_URL", &self.delay_queue_url),
            ("DLQ_ARN", &self.dlq_arn),
            ("FAILED_TASKS_QUEUE_URL", &self.failed_tasks_queue_url),
            ("TASK_RETENTION_DAYS", "30"),
            ("SIGNING_SECRET_ARN", &self.signing_secret_arn),
            // The receivers of the rehearsal are on loopback, which the AWS host refuses by
            // default; allowing it here is also the override's test.
            ("SCHEDULER_ALLOWED_TARGETS", "127.0.0.0/8"),
            ("AWS_ENDPOINT_URL", &self.endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_SDK_UA_APP_ID", FUNCTION_APP_ID),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Visible delay-queue messages (waiting up to `wait` for the first).
    pub async fn receive(&self, wait: Duration) -> Vec<aws_sdk_sqs::types::Message> {
        let deadline = Instant::now() + wait;
        loop {
            let msgs = self
                .sqs
                .receive_message()
                .queue_url(&self.delay_queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .send()
                .await
                .expect("receive")
                .messages
                .unwrap_or_default();
            if !msgs.is_empty() || Instant::now() >= deadline {
                return msgs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Plays the SQS event source once: the visible messages become one batch event; those
    /// not reported in `batchItemFailures` are deleted. Returns the invocation's answer and
    /// the bodies sent.
    pub async fn pump_delay_queue(
        &self,
        f: &Function,
        wait: Duration,
    ) -> Option<(Value, Vec<Value>)> {
        let msgs = self.receive(wait).await;
        if msgs.is_empty() {
            return None;
        }
        let bodies: Vec<Value> = msgs
            .iter()
            .map(|m| serde_json::from_str(m.body().unwrap_or("null")).unwrap_or(Value::Null))
            .collect();
        let event = sqs_event(&self.delay_queue_url, &msgs);
        let out = f.invoke(&event).await.expect("invoke with an SQS batch");
        let failed: Vec<&str> = out["batchItemFailures"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["itemIdentifier"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for m in &msgs {
            if !failed.contains(&m.message_id().unwrap_or_default()) {
                self.sqs
                    .delete_message()
                    .queue_url(&self.delay_queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete message");
            }
        }
        Some((out, bodies))
    }

    /// Counts of the delay queue's visible and delayed messages.
    pub async fn delay_queue_depth(&self) -> (u64, u64) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.delay_queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        let n = |k: A| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            n(A::ApproximateNumberOfMessages),
            n(A::ApproximateNumberOfMessagesDelayed),
        )
    }

    pub async fn dead_letters(&self) -> Vec<Value> {
        let msgs = self
            .sqs
            .receive_message()
            .queue_url(&self.failed_tasks_queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive failed-tasks queue")
            .messages
            .unwrap_or_default();
        msgs.iter()
            .map(|m| serde_json::from_str(m.body().unwrap_or("null")).expect("JSON dead letter"))
            .collect()
    }

    pub async fn schedule_names(&self) -> Vec<String> {
        self.scheduler
            .list_schedules()
            .group_name(&self.group)
            .send()
            .await
            .expect("list schedules")
            .schedules()
            .iter()
            .filter_map(|s| s.name().map(str::to_owned))
            .collect()
    }

    pub async fn get_schedule(&self, name: &str) -> Option<GetScheduleOutput> {
        self.scheduler
            .get_schedule()
            .name(name)
            .group_name(&self.group)
            .send()
            .await
            .ok()
    }

    /// Plays EventBridge Scheduler firing `name`: the schedule deletes itself
    /// (`ActionAfterCompletion DELETE`) and the function is invoked with its `Input`.
    pub async fn fire_schedule(&self, f: &Function, name: &str) -> Value {
        let s = self.get_schedule(name).await.expect("the schedule exists");
        let input: Value =
            serde_json::from_str(s.target().expect("target").input().expect("input"))
                .expect("JSON input");
        self.scheduler
            .delete_schedule()
            .name(name)
            .group_name(&self.group)
            .send()
            .await
            .expect("delete fired schedule");
        f.invoke(&input)
            .await
            .expect("invoke with the schedule's input")
    }

    /// EventBridge rules on the default bus (moto, raw JSON protocol: there must be none).
    pub async fn eventbridge_rules(&self) -> Vec<Value> {
        let out: Value = reqwest::Client::new()
            .post(&self.endpoint)
            .header("X-Amz-Target", "AWSEvents.ListRules")
            .header("Content-Type", "application/x-amz-json-1.1")
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/events/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body("{}")
            .send()
            .await
            .expect("ListRules")
            .json()
            .await
            .expect("ListRules JSON");
        out["Rules"].as_array().cloned().unwrap_or_default()
    }
}

/// An SQS batch event as the Lambda event source mapping builds it.
pub fn sqs_event(queue_url: &str, msgs: &[aws_sdk_sqs::types::Message]) -> Value {
    let queue = queue_url.rsplit('/').next().unwrap_or("delay");
    let records: Vec<Value> = msgs
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue}"),
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({"Records": records})
}

/// An API Gateway HTTP API v2 event as API Gateway sends it for an IAM-signed request
/// (`owner` = the caller's ARN; `None` = no authorizer context).
pub fn api_event(
    method: &str,
    path_and_query: &str,
    body: Option<&Value>,
    owner: Option<&str>,
    headers: &[(&str, &str)],
) -> Value {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut h = serde_json::Map::new();
    h.insert("content-type".into(), json!("application/json"));
    h.insert(
        "host".into(),
        json!("abcdef1234.execute-api.us-east-1.amazonaws.com"),
    );
    for (k, v) in headers {
        h.insert((*k).into(), json!(v));
    }
    let mut ctx = json!({
        "accountId": "123456789012",
        "apiId": "abcdef1234",
        "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "rehearsal"},
        "requestId": unique("req"),
        "routeKey": "$default",
        "stage": "$default",
        "timeEpoch": Utc::now().timestamp_millis(),
    });
    if let Some(arn) = owner {
        ctx["authorizer"] = json!({"iam": {"accountId": "123456789012", "userArn": arn, "callerId": "AIDAEXAMPLE"}});
    }
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": h,
        "requestContext": ctx,
        "body": body.map(Value::to_string),
        "isBase64Encoded": false,
    })
}

/// The API's JSON answer inside an API Gateway v2 response: `(status, body)`.
pub fn api_response(resp: &Value) -> (u16, Value) {
    let status = resp["statusCode"].as_u64().unwrap_or(0) as u16;
    let raw = resp["body"].as_str().unwrap_or("");
    let text = if resp["isBase64Encoded"] == json!(true) {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap_or_default(),
        )
        .unwrap_or_default()
    } else {
        raw.to_owned()
    };
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Collects a child's stdout and stderr, line by line, as they come.
pub fn capture_lines(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let logs = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                logs.lock().unwrap().push(line);
            }
        });
    }
    logs
}

/// The `cargo-lambda` program: `$CARGO_LAMBDA`, else `cargo-lambda` on PATH.
pub fn cargo_lambda() -> String {
    std::env::var("CARGO_LAMBDA").unwrap_or_else(|_| "cargo-lambda".into())
}

/// Starts cargo lambda's Runtime API emulator (`cargo lambda watch --only-lambda-apis`) on a
/// free loopback port, from the workspace root, and waits until it accepts connections.
/// Returns the process (killed on drop) and its port; a bootstrap reaches it as
/// `AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:{port}/.rt`.
pub async fn runtime_emulator() -> anyhow::Result<(Child, u16)> {
    let port = free_port();
    let cargo_lambda = cargo_lambda();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut watch = Command::new(&cargo_lambda)
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "--invoke-address",
            "127.0.0.1",
        ])
        .args(["--invoke-port", &port.to_string()])
        .current_dir(&workspace)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("starting {cargo_lambda} lambda watch (pip install cargo-lambda)")
        })?;
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Some(status) = watch.try_wait()? {
            bail!("cargo lambda watch exited: {status}");
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("cargo lambda watch did not listen on {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((watch, port))
}

/// The function: cargo lambda's Runtime API (`watch --only-lambda-apis`) and the real binary
/// polling it, as Lambda runs the bootstrap. Both die with this value.
pub struct Function {
    pub port: u16,
    watch: Child,
    bin: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl Function {
    /// Starts the Runtime API and the binary with `env` (plus `REHEARSAL_CLOCK_OFFSET_MS`
    /// when `clock_offset` is given).
    pub async fn start(
        env: &[(String, String)],
        clock_offset: Option<TimeDelta>,
    ) -> anyhow::Result<Function> {
        Self::start_binary(&crate::binary_path(), env, clock_offset).await
    }

    /// [`start`](Self::start) with another build of the binary (the benchmarks' release
    /// bootstrap).
    pub async fn start_binary(
        binary: &Path,
        env: &[(String, String)],
        clock_offset: Option<TimeDelta>,
    ) -> anyhow::Result<Function> {
        let (watch, port) = runtime_emulator().await?;
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().cloned())
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(offset) = clock_offset {
            cmd.env(
                "REHEARSAL_CLOCK_OFFSET_MS",
                offset.num_milliseconds().to_string(),
            );
        }
        let mut bin = cmd.spawn().context("starting the task-scheduler binary")?;
        let logs = capture_lines(&mut bin);
        Ok(Function {
            port,
            watch,
            bin,
            logs,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        })
    }

    /// Invokes the function synchronously (the Lambda Invoke API) and returns its answer.
    pub async fn invoke(&self, event: &Value) -> anyhow::Result<Value> {
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{FUNCTION}/invocations",
            self.port
        );
        let resp = self.http.post(&url).json(event).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!(
                "invoke answered {status}: {text}\nlogs:\n{}",
                self.log_text()
            );
        }
        serde_json::from_str(&text).with_context(|| format!("invoke answer is not JSON: {text}"))
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The binary's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.bin.id()
    }

    /// The EMF metric values printed so far, by metric name.
    pub fn metric_values(&self, name: &str) -> Vec<f64> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TaskScheduler")
            .filter_map(|v| v[name].as_f64())
            .collect()
    }

    pub async fn stop(mut self) {
        let _ = self.bin.kill().await;
        let _ = self.watch.kill().await;
    }
}

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
            if !body.contains(task_id) && !url.contains(task_id) {
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

/// Waits until `f` returns `Some`, polling every 50 ms, up to `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The at() time of a schedule expression.
pub fn at_time(expression: &str) -> DateTime<Utc> {
    let inner = expression
        .strip_prefix("at(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not an at() expression: {expression}"));
    chrono::NaiveDateTime::parse_from_str(inner, "%Y-%m-%dT%H:%M:%S")
        .expect("at() time")
        .and_utc()
}
