//! One rehearsal's AWS resources on moto, and the test playing EventBridge Scheduler and the
//! SQS event source against them.

use std::time::{Duration, Instant};

use aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput;
use serde_json::Value;

use super::{FUNCTION_APP_ID, Function, ROLE_ARN, emulator_endpoint, sqs_event, unique};

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
    /// Creates them on the emulator (`AWS_ENDPOINT_URL`); panics without it.
    pub async fn create() -> AwsRig {
        let config = testkit::sdk_config().await;
        let endpoint = emulator_endpoint();
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let scheduler = aws_sdk_scheduler::Client::new(&config);
        let table = unique("tasks");
        testkit::create_table(&dynamodb, &table)
            .await
            .expect("create table");
        let delay_queue_url = testkit::create_queue(&sqs, "delay").await;
        let dlq_url = testkit::create_queue(&sqs, "dlq").await;
        let failed_tasks_queue_url = testkit::create_fifo_queue(&sqs, "failed-tasks").await;
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
        let group = testkit::create_schedule_group(&scheduler, "wakeups").await;
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
        AwsRig {
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
        }
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
    /// Panics unless moto answers with a rule list, so an error cannot pass for "no rules".
    pub async fn eventbridge_rules(&self) -> Vec<Value> {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("reqwest client")
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
            .expect("ListRules");
        let status = resp.status();
        let text = resp.text().await.expect("ListRules body");
        assert!(status.is_success(), "ListRules answered {status}: {text}");
        let out: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("ListRules answer is not JSON ({e}): {text}"));
        out["Rules"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("ListRules answer without a Rules list: {text}"))
    }
}
