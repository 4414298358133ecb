//! The Lambda host's configuration: environment only, checked at cold start.

pub(crate) use crate::config::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AwsConfig {
    pub(crate) table_name: String,
    pub(crate) schedule_group: String,
    pub(crate) scheduler_role_arn: String,
    pub(crate) delay_queue_url: String,
    /// The infrastructure dead-letter queue, given to Scheduler as each schedule's DLQ.
    pub(crate) dlq_arn: String,
    /// The customers' dead letters: one message per task that failed for good
    /// (`FAILED_TASKS_QUEUE_URL`), a queue of its own so that the infrastructure DLQ, whose
    /// alarm pages operators, holds infrastructure faults only.
    pub(crate) failed_tasks_queue_url: String,
    /// Days a finished task is kept before its TTL removes it (`TASK_RETENTION_DAYS`).
    pub(crate) retention_days: u32,
    /// The Secrets Manager secret deliveries are signed with; without it they are not signed.
    pub(crate) signing_secret_arn: Option<String>,
}

impl AwsConfig {
    pub(crate) fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        let arn = |name: &'static str, v: String| {
            if v.starts_with("arn:") && v.split(':').count() >= 6 {
                Ok(v)
            } else {
                Err(ConfigError::Invalid {
                    name,
                    reason: "not an ARN (arn:partition:service:region:account:resource)".into(),
                })
            }
        };
        let url = |name: &'static str, v: String| {
            if v.starts_with("https://") || v.starts_with("http://") {
                Ok(v)
            } else {
                Err(ConfigError::Invalid {
                    name,
                    reason: "not a queue URL (https://sqs...)".into(),
                })
            }
        };
        let retention_days = match get("TASK_RETENTION_DAYS").filter(|v| !v.trim().is_empty()) {
            None => crate::store::DynamoStore::DEFAULT_RETENTION_DAYS,
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|d| (1..=3650).contains(d))
                .ok_or(ConfigError::Invalid {
                    name: "TASK_RETENTION_DAYS",
                    reason: "must be a whole number of days between 1 and 3650".into(),
                })?,
        };
        let signing_secret_arn = match get("SIGNING_SECRET_ARN").filter(|v| !v.trim().is_empty()) {
            None => None,
            Some(v) => Some(arn("SIGNING_SECRET_ARN", v.trim().to_owned())?),
        };
        Ok(Self {
            table_name: required("TABLE_NAME")?,
            schedule_group: required("SCHEDULE_GROUP")?,
            scheduler_role_arn: arn("SCHEDULER_ROLE_ARN", required("SCHEDULER_ROLE_ARN")?)?,
            delay_queue_url: url("DELAY_QUEUE_URL", required("DELAY_QUEUE_URL")?)?,
            dlq_arn: arn("DLQ_ARN", required("DLQ_ARN")?)?,
            failed_tasks_queue_url: url(
                "FAILED_TASKS_QUEUE_URL",
                required("FAILED_TASKS_QUEUE_URL")?,
            )?,
            retention_days,
            signing_secret_arn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::lookup as env;

    const FULL: &[(&str, &str)] = &[
        ("TABLE_NAME", "tasks"),
        ("SCHEDULE_GROUP", "task-scheduler"),
        (
            "SCHEDULER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/invoke",
        ),
        (
            "DELAY_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/delay",
        ),
        ("DLQ_ARN", "arn:aws:sqs:us-east-1:123456789012:dlq"),
        (
            "FAILED_TASKS_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/failed-tasks",
        ),
    ];

    #[test]
    fn complete_environment_with_defaults() {
        let c = AwsConfig::from_lookup(env(FULL)).unwrap();
        assert_eq!(c.retention_days, 30);
        assert_eq!(c.signing_secret_arn, None);
        assert_eq!(c.table_name, "tasks");
        assert_eq!(c.dlq_arn, "arn:aws:sqs:us-east-1:123456789012:dlq");
        assert_eq!(
            c.failed_tasks_queue_url,
            "https://sqs.us-east-1.amazonaws.com/123456789012/failed-tasks"
        );
    }

    #[test]
    fn each_missing_variable_is_named() {
        for (skip, _) in FULL {
            let pairs: Vec<_> = FULL.iter().filter(|(k, _)| k != skip).copied().collect();
            let e = AwsConfig::from_lookup(env(&pairs)).unwrap_err();
            assert_eq!(e, ConfigError::Missing(skip));
            assert!(e.to_string().contains(skip));
        }
    }

    #[test]
    fn invalid_values_are_named() {
        let with = |k: &'static str, v: &'static str| {
            let mut pairs: Vec<_> = FULL.to_vec();
            pairs.push((k, v));
            AwsConfig::from_lookup(env(&pairs))
        };
        for (k, v) in [
            ("TASK_RETENTION_DAYS", "0"),
            ("TASK_RETENTION_DAYS", "thirty"),
            ("SIGNING_SECRET_ARN", "my-secret"),
            ("FAILED_TASKS_QUEUE_URL", "failed-tasks"),
        ] {
            let e = with(k, v).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
        assert_eq!(with("TASK_RETENTION_DAYS", "7").unwrap().retention_days, 7);
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:signing-AbCdEf";
        assert_eq!(
            with("SIGNING_SECRET_ARN", arn)
                .unwrap()
                .signing_secret_arn
                .as_deref(),
            Some(arn)
        );
        let mut bad = FULL.to_vec();
        bad[2] = ("SCHEDULER_ROLE_ARN", "invoke-role");
        assert!(
            AwsConfig::from_lookup(env(&bad))
                .unwrap_err()
                .to_string()
                .contains("SCHEDULER_ROLE_ARN")
        );
    }
}
