//! Dead letters on AWS: a task whose last attempt failed is sent to the SQS dead-letter
//! queue, where an operator sees it. Locally the dead letter stays with the task and nothing
//! is sent (`ports::NoDeadLetters`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws_error::sdk_error;
use crate::domain::{Task, TaskId};
use crate::ports::{DeadLetters, PortError};

/// The dead letter sent to the failed-tasks queue when a task's last attempt fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeadLetterMessage {
    pub(crate) kind: String,
    pub(crate) task_id: TaskId,
    pub(crate) owner: String,
    pub(crate) url: String,
    pub(crate) attempts: u32,
    pub(crate) last_error: String,
    pub(crate) failed_at: DateTime<Utc>,
}

impl DeadLetterMessage {
    pub(crate) fn of(task: &Task) -> Self {
        let dl = task.dead_letter.clone();
        Self {
            kind: "dead_letter".into(),
            task_id: task.id,
            owner: task.owner.to_string(),
            url: task.action.webhook().url.as_url().to_string(),
            attempts: dl
                .as_ref()
                .map_or(task.attempts.len() as u32, |d| d.attempts),
            last_error: dl
                .as_ref()
                .map_or_else(|| "delivery failed".to_owned(), |d| d.last_error.clone()),
            failed_at: dl.map_or(task.updated_at, |d| d.recorded_at),
        }
    }
}

/// [`DeadLetters`] on the customers' failed-tasks queue (`FAILED_TASKS_QUEUE_URL`), not the
/// infrastructure DLQ that Scheduler and the delay queue's redrive use.
#[derive(Clone)]
pub(crate) struct AwsDeadLetters {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl AwsDeadLetters {
    pub(crate) fn new(sqs: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            sqs,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl DeadLetters for AwsDeadLetters {
    async fn send(&self, task: &Task) -> Result<(), PortError> {
        let body = serde_json::to_string(&DeadLetterMessage::of(task))
            .map_err(|e| PortError::Unavailable(format!("dead letter: {e}")))?;
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| sdk_error("sqs SendMessage (failed-tasks queue)", &e))?;
        tracing::warn!(task_id = %task.id, attempts = task.attempts.len(), "dead letter sent");
        Ok(())
    }
}
