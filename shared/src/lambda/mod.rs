//! The Lambda host: `task-scheduler lambda` (chosen automatically when
//! `AWS_LAMBDA_RUNTIME_API` is set). The same binary as `serve`, on `lambda_runtime`, wired to
//! DynamoDB, Scheduler + SQS, the SQS dead-letter queue and EMF metrics.
//!
//! Each invocation is read as raw JSON and classified by shape in a fixed order
//! ([`Invocation::from_json`]): an API Gateway HTTP API v2 request goes through the same axum
//! Router as the local host; a wake-up or an SQS batch of wake-ups goes to
//! `Scheduler::fire_due`, the original design's `custom.scheduler` execution event (which
//! names a task, not an attempt) to `Scheduler::fire_task`; anything else is logged as an
//! error naming its shape and acknowledged (retrying it could never succeed).
//!
//! Errors at this boundary are either retryable (an AWS dependency failed: the invocation
//! returns an error, so Lambda's async retries, Scheduler's retry policy or the SQS
//! redelivery try again) or not (a malformed event: logged, acknowledged, never retried).

mod config;
mod event;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use serde_json::{Value, json};
use tower::ServiceExt;
use tracing::{error, info, warn};

pub(crate) use config::{AwsConfig, ConfigError};
pub(crate) use event::{HttpApiRequest, Invocation, SqsRecord};

use crate::api::{self, Auth};
use crate::app::{AppError, Fired, Ports, Scheduler};
use crate::dead_letters::AwsDeadLetters;
use crate::domain::{Next, TaskId, WakeUp};
use crate::metrics::EmfMetrics;
use crate::ports::{Clock, SystemClock, TaskScan};
use crate::store::DynamoStore;
use crate::wake::aws::{AwsWaker, AwsWakerConfig};
use crate::webhook::{
    HttpWebhookClient, Signer, guard::TargetGuard, signing::StandardWebhooksSigner,
};

/// Why an invocation failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvocationError {
    #[error(
        "unrecognised event shape ({0}); expected an API Gateway HTTP API v2 request, a wake-up \
         {{\"kind\":\"wake\",...}}, a sweep {{\"kind\":\"sweep\"}}, an SQS batch or a custom.scheduler execution event"
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
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<AppError> for InvocationError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Unavailable(m) | AppError::OutcomeUnknown(m) => Self::Unavailable(m),
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
        Fired::DeadLetterSent => "dead_letter_sent",
        Fired::Dropped => "dropped",
    }
}

/// Logs what a wake-up led to and answers it.
fn handled(wake: WakeUp, fired: Fired) -> Value {
    info!(task_id = %wake.task_id, attempt = wake.attempt, result = fired_name(fired), "wake-up handled");
    json!({"task_id": wake.task_id.to_string(), "attempt": wake.attempt, "result": fired_name(fired)})
}

/// Serves invocations: the router for HTTP, the scheduler for wake-ups.
#[derive(Clone)]
pub(crate) struct LambdaHost {
    scheduler: Scheduler,
    router: Router,
    /// The pending index the sweeper reads.
    scan: Arc<dyn TaskScan>,
}

impl LambdaHost {
    #[cfg(test)]
    pub(crate) fn new(ports: Ports, scan: Arc<dyn TaskScan>) -> Self {
        Self::serving(Scheduler::new(ports), scan)
    }

    /// The host around a scheduler already built (with its schedule store).
    pub(crate) fn serving(scheduler: Scheduler, scan: Arc<dyn TaskScan>) -> Self {
        Self {
            router: api::router(scheduler.clone(), Auth::Host),
            scheduler,
            scan,
        }
    }

    /// Handles one payload; `Ok` is the response to return.
    pub(crate) async fn handle(&self, payload: &Value) -> Result<Value, InvocationError> {
        match Invocation::from_json(payload)? {
            Invocation::Http(req) => Ok(self.http(*req).await),
            Invocation::Wake(wake, due) => self.wake(wake, due).await,
            Invocation::Sweep => self.sweep().await,
            Invocation::Sqs(records) => Ok(self.sqs(records).await),
            Invocation::ExecutionEvent { task_id } => {
                // The one AppError this boundary reads more closely: the event named the task.
                let (wake, fired) = match self.scheduler.fire_task(task_id).await {
                    Ok(fired) => fired,
                    Err(AppError::NotFound) => return Err(InvocationError::UnknownTask(task_id)),
                    Err(e) => return Err(e.into()),
                };
                Ok(handled(wake, fired))
            }
        }
    }

    /// [`handle`](Self::handle) for the runtime: non-retryable errors are logged and
    /// acknowledged, retryable ones returned so that the invocation is retried.
    pub(crate) async fn invoke(&self, payload: &Value) -> Result<Value, InvocationError> {
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

    /// Runs the sweeper. A task it could not recover makes the invocation fail (so it shows
    /// in the function's errors, and Scheduler retries it; the next sweep would anyway).
    async fn sweep(&self) -> Result<Value, InvocationError> {
        let swept = self
            .scheduler
            .recover(self.scan.as_ref(), self.scheduler.now())
            .await?;
        let out = json!({"result": "swept", "rearmed": swept.rearmed,
            "dead_letters": swept.dead_letters, "failed": swept.failed});
        if swept.failed > 0 {
            return Err(InvocationError::Unavailable(format!(
                "sweep: {} stalled tasks could not be recovered ({out})",
                swept.failed
            )));
        }
        info!(
            rearmed = swept.rearmed,
            dead_letters = swept.dead_letters,
            "sweep done"
        );
        Ok(out)
    }

    async fn http(&self, req: HttpApiRequest) -> Value {
        let request = match req.into_http() {
            Ok(r) => r,
            Err(reason) => {
                warn!(%reason, "malformed API Gateway request");
                return event::error_response(400, "invalid_request", &reason.to_string());
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
        Ok(handled(wake, fired))
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

/// Builds the AWS host from the environment: clients once per cold start.
pub(crate) async fn host_from_env(config: &AwsConfig) -> anyhow::Result<(LambdaHost, AwsWaker)> {
    // Honours AWS_ENDPOINT_URL (emulators), AWS_REGION and the function's role credentials.
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
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
    let targets =
        TargetGuard::parse_allowed(&std::env::var("SCHEDULER_ALLOWED_TARGETS").unwrap_or_default())
            .map_err(|e| ConfigError::Invalid {
                name: "SCHEDULER_ALLOWED_TARGETS",
                reason: e.to_string(),
            })?;
    let signer: Option<Arc<dyn Signer>> = match &config.signing_secret_arn {
        Some(arn) => Some(Arc::new(signer_from_secret(&sdk, arn).await?)),
        None => {
            warn!("SIGNING_SECRET_ARN is not set: deliveries are not signed");
            None
        }
    };
    let webhook = HttpWebhookClient::guarded(clock.clone(), signer, targets.clone())
        .context("building the HTTP client")?;
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        &config.table_name,
        config.retention_days,
    ));
    let host = LambdaHost::serving(
        Scheduler::new(Ports {
            store: store.clone(),
            waker: Arc::new(waker.clone()),
            webhook: Arc::new(webhook),
            clock,
            dead_letters: Arc::new(AwsDeadLetters::new(sqs, &config.failed_tasks_queue_url)),
            metrics: Arc::new(EmfMetrics::stdout()),
            targets: Arc::new(targets),
        })
        // Schedules live in the tasks' table: a claim moves a chain on in one transaction.
        .with_schedules(store.clone()),
        store,
    );
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
        .map_err(|e| crate::aws_error::sdk_error("secretsmanager GetSecretValue", &e))
        .with_context(|| format!("SIGNING_SECRET_ARN {arn}"))?;
    let secret = value
        .secret_string()
        .with_context(|| format!("SIGNING_SECRET_ARN {arn}: the secret has no string value"))?;
    StandardWebhooksSigner::parse(secret).with_context(|| format!("SIGNING_SECRET_ARN {arn}"))
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
