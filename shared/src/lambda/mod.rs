//! The Lambda host: `task-scheduler lambda` (chosen automatically when
//! `AWS_LAMBDA_RUNTIME_API` is set). The same binary as `serve`, on `lambda_runtime`, wired to
//! DynamoDB, Scheduler + SQS, the SQS dead-letter queue and EMF metrics.
//!
//! Each invocation is read as raw JSON and classified by shape in a fixed order
//! ([`Invocation::from_json`]): an API Gateway HTTP API v2 request goes through the same axum
//! Router as the local host; a wake-up, an SQS batch of wake-ups, or the original design's
//! `custom.scheduler` execution event goes to `Scheduler::fire`; anything else is logged as
//! an error naming its shape and acknowledged (retrying it could never succeed).
//!
//! Errors at this boundary are either retryable (an AWS dependency failed: the invocation
//! returns an error, so Lambda's async retries, Scheduler's retry policy or the SQS
//! redelivery try again) or not (a malformed event: logged, acknowledged, never retried).

mod config;
mod event;

use std::sync::Arc;

use axum::Router;
use serde_json::{Value, json};
use tower::ServiceExt;
use tracing::{error, info, warn};

pub use config::{AwsConfig, ConfigError};
pub use event::{HttpApiRequest, Invocation, SqsRecord};

use crate::api::{self, Auth};
use crate::app::{AppError, Fired, Ports, Scheduler};
use crate::domain::{Next, TaskId, WakeUp};
use crate::metrics::EmfMetrics;
use crate::ports::{Clock, SystemClock, TaskStore};
use crate::store::DynamoStore;
use crate::wake::aws::{AwsDeadLetters, AwsWaker, AwsWakerConfig};
use crate::webhook::{
    HttpWebhookClient, Signer, guard::TargetGuard, signing::StandardWebhooksSigner,
};

/// Why an invocation failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(
        "unrecognised event shape ({0}); expected an API Gateway HTTP API v2 request, a wake-up \
         {{\"kind\":\"wake\",...}}, an SQS batch or a custom.scheduler execution event"
    )]
    UnknownShape(String),
    #[error("malformed {shape}: {reason}")]
    Malformed { shape: &'static str, reason: String },
    #[error("task {0} does not exist")]
    UnknownTask(TaskId),
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
}

impl InvocationError {
    /// Only a failing dependency is worth another try; a bad event stays bad.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<AppError> for InvocationError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Malformed {
                shape: "wake-up",
                reason: other.to_string(),
            },
        }
    }
}

fn fired_name(f: Fired) -> &'static str {
    match f {
        Fired::Delivered(Next::Completed) => "completed",
        Fired::Delivered(Next::Retry { .. }) => "retry_scheduled",
        Fired::Delivered(Next::Failed) => "failed",
        Fired::Rearmed => "rearmed",
        Fired::Dropped => "dropped",
    }
}

/// Serves invocations: the router for HTTP, the scheduler for wake-ups.
#[derive(Clone)]
pub struct LambdaHost {
    scheduler: Scheduler,
    router: Router,
    store: Arc<dyn TaskStore>,
}

impl LambdaHost {
    /// `ports.store` must be the store the scheduler uses (the execution event reads it).
    pub fn new(ports: Ports) -> Self {
        let store = ports.store.clone();
        let scheduler = Scheduler::new(ports);
        Self {
            router: api::router(scheduler.clone(), Auth::Host),
            scheduler,
            store,
        }
    }

    /// Handles one payload; `Ok` is the response to return.
    pub async fn handle(&self, payload: &Value) -> Result<Value, InvocationError> {
        match Invocation::from_json(payload)? {
            Invocation::Http(req) => Ok(self.http(*req).await),
            Invocation::Wake(wake, due) => self.wake(wake, due).await,
            Invocation::Sqs(records) => Ok(self.sqs(records).await),
            Invocation::ExecutionEvent { task_id } => {
                let task = self
                    .store
                    .get(task_id)
                    .await
                    .map_err(|e| InvocationError::Unavailable(e.to_string()))?
                    .ok_or(InvocationError::UnknownTask(task_id))?;
                self.wake(
                    WakeUp {
                        task_id,
                        attempt: task.attempt_number(),
                    },
                    None,
                )
                .await
            }
        }
    }

    /// [`handle`](Self::handle) for the runtime: non-retryable errors are logged and
    /// acknowledged, retryable ones returned so that the invocation is retried.
    pub async fn invoke(&self, payload: &Value) -> Result<Value, InvocationError> {
        match self.handle(payload).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_retryable() => {
                error!(error = %e, retryable = true, "invocation failed; it will be retried");
                Err(e)
            }
            Err(e) => {
                error!(error = %e, retryable = false, "invocation rejected");
                Ok(json!({"error": e.to_string(), "retryable": false}))
            }
        }
    }

    async fn http(&self, req: HttpApiRequest) -> Value {
        let request = match req.into_http() {
            Ok(r) => r,
            Err(reason) => {
                warn!(%reason, "malformed API Gateway request");
                return event::error_response(400, "invalid_request", &reason);
            }
        };
        let response = match self.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        event::to_api_gateway_response(response).await
    }

    async fn wake(
        &self,
        wake: WakeUp,
        due: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Value, InvocationError> {
        let fired = self.scheduler.fire_due(wake, due).await?;
        info!(task_id = %wake.task_id, attempt = wake.attempt, result = fired_name(fired), "wake-up handled");
        Ok(
            json!({"task_id": wake.task_id.to_string(), "attempt": wake.attempt, "result": fired_name(fired)}),
        )
    }

    /// Fires every record; those that failed retryably are reported back so SQS redelivers
    /// only them (the event source mapping needs `ReportBatchItemFailures`).
    async fn sqs(&self, records: Vec<SqsRecord>) -> Value {
        let results = futures::future::join_all(records.iter().map(|r| async move {
            let outcome = match r.wake() {
                Ok((wake, due)) => self.wake(wake, due).await,
                Err(e) => Err(e),
            };
            (r, outcome)
        }))
        .await;
        let mut failures = Vec::new();
        for (record, outcome) in results {
            match outcome {
                Ok(_) => {}
                Err(e) if e.is_retryable() => {
                    error!(message_id = %record.message_id, error = %e, "wake-up failed; SQS will redeliver it");
                    failures.push(json!({"itemIdentifier": record.message_id}));
                }
                Err(e) => {
                    error!(message_id = %record.message_id, error = %e, "wake-up message dropped");
                }
            }
        }
        json!({"batchItemFailures": failures})
    }
}

/// The cloud rehearsal plays EventBridge Scheduler firing hours ahead by starting the
/// function with its clock moved forward (`REHEARSAL_CLOCK_OFFSET_MS`). Honoured only
/// against an emulator (`AWS_ENDPOINT_URL` set), so it can never skew a deployed function.
fn rehearsal_clock_offset() -> anyhow::Result<Option<chrono::TimeDelta>> {
    let Ok(raw) = std::env::var("REHEARSAL_CLOCK_OFFSET_MS") else {
        return Ok(None);
    };
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        warn!("REHEARSAL_CLOCK_OFFSET_MS ignored: only honoured with AWS_ENDPOINT_URL (emulators)");
        return Ok(None);
    }
    let ms: i64 = raw
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("REHEARSAL_CLOCK_OFFSET_MS={raw}: not an integer"))?;
    warn!(offset_ms = ms, "rehearsal clock offset in effect");
    Ok(Some(chrono::TimeDelta::milliseconds(ms)))
}

struct OffsetClock(chrono::TimeDelta);

impl Clock for OffsetClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + self.0
    }
}

/// Builds the AWS host from the environment: clients once per cold start.
pub async fn host_from_env(config: &AwsConfig) -> anyhow::Result<(LambdaHost, AwsWaker)> {
    // Honours AWS_ENDPOINT_URL (emulators), AWS_REGION and the function's role credentials.
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let clock: Arc<dyn Clock> = match rehearsal_clock_offset()? {
        Some(offset) => Arc::new(OffsetClock(offset)),
        None => Arc::new(SystemClock),
    };
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let waker = AwsWaker::new(
        sqs.clone(),
        aws_sdk_scheduler::Client::new(&sdk),
        clock.clone(),
        AwsWakerConfig {
            delay_queue_url: config.delay_queue_url.clone(),
            schedule_group: config.schedule_group.clone(),
            scheduler_role_arn: config.scheduler_role_arn.clone(),
            dlq_arn: config.dlq_arn.clone(),
        },
    );
    // On AWS the default is public targets only: the function runs next to the instance
    // metadata service and the VPC. SCHEDULER_ALLOWED_TARGETS widens it deliberately.
    let targets = TargetGuard::from_env("").map_err(|e| anyhow::anyhow!(e))?;
    let signer: Option<Arc<dyn Signer>> = match &config.signing_secret_arn {
        Some(arn) => Some(Arc::new(signer_from_secret(&sdk, arn).await?)),
        None => {
            warn!("SIGNING_SECRET_ARN is not set: deliveries are not signed");
            None
        }
    };
    let webhook = HttpWebhookClient::guarded(clock.clone(), signer, targets.clone())
        .map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))?;
    let host = LambdaHost::new(Ports {
        store: Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            &config.table_name,
            config.retention_days,
        )),
        waker: Arc::new(waker.clone()),
        webhook: Arc::new(webhook),
        clock,
        dead_letters: Arc::new(AwsDeadLetters::new(sqs, &config.failed_tasks_queue_url)),
        metrics: Arc::new(EmfMetrics::stdout()),
        targets: Arc::new(targets),
    });
    Ok((host, waker))
}

/// Reads the signing secret once per cold start. A `whsec_` value is decoded; a generated
/// string (what the CDK app creates) is used as raw key bytes.
async fn signer_from_secret(
    sdk: &aws_config::SdkConfig,
    arn: &str,
) -> anyhow::Result<StandardWebhooksSigner> {
    let value = aws_sdk_secretsmanager::Client::new(sdk)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "secretsmanager GetSecretValue {arn}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            )
        })?;
    let secret = value.secret_string().ok_or_else(|| {
        anyhow::anyhow!("SIGNING_SECRET_ARN {arn}: the secret has no string value")
    })?;
    StandardWebhooksSigner::parse(secret)
        .map_err(|e| anyhow::anyhow!("SIGNING_SECRET_ARN {arn}: {e}"))
}

/// Runs the function until the runtime stops it. Configuration errors end the cold start
/// with a message naming the variable.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    let config = AwsConfig::from_env()?;
    let (host, waker) = host_from_env(&config).await?;
    info!(table = %config.table_name, group = %config.schedule_group, "lambda host ready");
    let host = Arc::new(host);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Value>| {
            let host = host.clone();
            let waker = waker.clone();
            async move {
                // The schedules' target: this very function, from the first invocation.
                let arn = &event.context.invoked_function_arn;
                if !arn.starts_with("arn:") {
                    warn!(%arn, "invoked function ARN does not look like an ARN (a local emulator?)");
                }
                waker.set_target_arn(arn);
                host.invoke(&event.payload)
                    .await
                    .map_err(lambda_runtime::Error::from)
            }
        },
    ))
    .await
}

#[cfg(test)]
mod tests;
