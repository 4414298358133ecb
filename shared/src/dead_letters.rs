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

/// The sender of dead letters to the failed-tasks queue.
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

/// The failed-tasks queue's deduplication id of `task`'s dead letter: the task and how many
/// attempts it had made when it failed. Every send of one failure (the SDK's retry of a send
/// whose answer was lost, a send repeated because marking it sent failed, a redelivered
/// wake-up, the sweeper) carries the same id, so the FIFO queue keeps one message per
/// failure within its 5-minute deduplication window; a failure after `/retry` follows at
/// least one more attempt, so it has its own id and its own dead letter.
pub(crate) fn deduplication_id(task: &Task) -> String {
    format!("{}-{}", task.id, task.attempts.len())
}

/// [`DeadLetters`] on the customers' failed-tasks queue (`FAILED_TASKS_QUEUE_URL`, a FIFO
/// queue), not the infrastructure DLQ that Scheduler and the delay queue's redrive use.
/// Exactly one message per failure within SQS's 5-minute deduplication window (see
/// [`deduplication_id`]); a repeat later than that (the send's mark failed and the sweeper
/// sent it again more than 5 minutes on) is a second copy with the same
/// `MessageDeduplicationId`, which the reader can drop. The message group is the task: no
/// ordering across tasks is needed, and a high-throughput FIFO queue scales per group.
#[async_trait]
impl DeadLetters for AwsDeadLetters {
    async fn send(&self, task: &Task) -> Result<(), PortError> {
        let body = serde_json::to_string(&DeadLetterMessage::of(task))
            .map_err(|e| PortError::Unavailable(format!("dead letter: {e}")))?;
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(task.id.to_string())
            .message_deduplication_id(deduplication_id(task))
            .send()
            .await
            .map_err(|e| sdk_error("sqs SendMessage (failed-tasks queue)", &e))?;
        tracing::warn!(task_id = %task.id, attempts = task.attempts.len(), "dead letter sent");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RetryHint, Status};
    use crate::store::contract::{delivery, owner, t0, task};

    /// `task` claimed for its current attempt and failed for good.
    fn fail(t: &Task) -> Task {
        let running = t.claim(t.attempt_number(), t0()).unwrap();
        let (failed, _) = running
            .record(
                t.attempt_number(),
                &delivery(RetryHint::Permanent, t0()),
                t0(),
                0.5,
            )
            .unwrap();
        assert_eq!(failed.status, Status::Failed);
        failed
    }

    async fn messages(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<DeadLetterMessage> {
        let mut out = Vec::new();
        loop {
            let got = sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap()
                .messages
                .unwrap_or_default();
            if got.is_empty() {
                return out;
            }
            for m in got {
                out.push(serde_json::from_str(m.body().unwrap()).unwrap());
            }
        }
    }

    /// One dead letter per failure, however often it is sent; a failure after `/retry` gets
    /// its own.
    #[tokio::test]
    #[ignore = "needs moto: make test-aws"]
    async fn one_dead_letter_per_failure_however_often_it_is_sent() {
        let sqs = aws_sdk_sqs::Client::new(&testkit::sdk_config().await);
        let queue = testkit::create_fifo_queue(&sqs, "failed-tasks").await;
        let letters = AwsDeadLetters::new(sqs.clone(), &queue);
        let failed = fail(&task(&owner(), t0(), None));
        for _ in 0..3 {
            letters.send(&failed).await.unwrap();
        }
        let again = fail(&failed.retry_failed(t0()).unwrap());
        letters.send(&again).await.unwrap();
        letters.send(&again).await.unwrap();
        let got = messages(&sqs, &queue).await;
        assert_eq!(
            got,
            vec![
                DeadLetterMessage::of(&failed),
                DeadLetterMessage::of(&again)
            ]
        );
    }
}
