//! CloudWatch metrics through the embedded metric format (EMF): one JSON line on stdout per
//! event, which Lambda ships to CloudWatch Logs and CloudWatch turns into metrics. No
//! `PutMetricData` call, no extra latency. Namespace `TaskScheduler`, no dimensions; the names
//! and units are listed in `shared/metrics.json`, which the CDK dashboard and alarms read too,
//! and the tests below hold this file to that list.

use std::sync::Arc;

use serde_json::json;

use crate::ports::Metrics;

pub(crate) const NAMESPACE: &str = "TaskScheduler";

type Sink = Arc<dyn Fn(String) + Send + Sync>;

/// [`Metrics`] as EMF lines.
#[derive(Clone)]
pub(crate) struct EmfMetrics {
    sink: Sink,
}

impl Default for EmfMetrics {
    fn default() -> Self {
        Self::stdout()
    }
}

impl EmfMetrics {
    /// Prints each record on stdout (one `println!`, so lines never interleave).
    pub(crate) fn stdout() -> Self {
        Self::with_sink(|line| println!("{line}"))
    }

    /// Hands each record to `sink` (tests).
    pub(crate) fn with_sink(sink: impl Fn(String) + Send + Sync + 'static) -> Self {
        Self {
            sink: Arc::new(sink),
        }
    }

    /// One EMF record: `values` are `(name, unit, value)`.
    pub(crate) fn record(values: &[(&str, &str, f64)]) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp_millis();
        let mut doc = json!({
            "_aws": {
                "Timestamp": now,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [[]],
                    "Metrics": values
                        .iter()
                        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
                        .collect::<Vec<_>>(),
                }],
            }
        });
        for (name, _, value) in values {
            doc[*name] = json!(value);
        }
        doc
    }

    fn emit(&self, values: &[(&str, &str, f64)]) {
        (self.sink)(Self::record(values).to_string());
    }

    fn count(&self, name: &str) {
        self.emit(&[(name, "Count", 1.0)]);
    }
}

impl Metrics for EmfMetrics {
    fn task_created(&self) {
        self.count("TasksCreated");
    }
    fn task_delivered(&self, lateness_ms: i64) {
        self.emit(&[
            ("TasksDelivered", "Count", 1.0),
            (
                "DeliveryLatenessMs",
                "Milliseconds",
                lateness_ms.max(0) as f64,
            ),
        ]);
    }
    fn task_failed(&self) {
        self.count("TasksFailed");
    }
    fn task_retried(&self) {
        self.count("TasksRetried");
    }
    fn task_cancelled(&self) {
        self.count("TasksCancelled");
    }
    fn task_recovered(&self) {
        self.count("TasksRecovered");
    }
    fn wake_up_deferred(&self) {
        self.count("WakeUpsDeferred");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    #[test]
    fn emits_emf_lines_with_the_dashboard_names() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let m = EmfMetrics::with_sink(move |l| sink.lock().unwrap().push(l));
        m.task_created();
        m.task_delivered(420);
        m.task_failed();
        m.task_retried();
        m.task_cancelled();
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 5);
        let docs: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for d in &docs {
            let cw = &d["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(cw["Namespace"], "TaskScheduler");
            assert_eq!(cw["Dimensions"], json!([[]]));
            assert!(d["_aws"]["Timestamp"].is_i64());
            // Every metric declared has its value at the top level.
            for m in cw["Metrics"].as_array().unwrap() {
                assert!(d[m["Name"].as_str().unwrap()].is_number());
            }
        }
        assert_eq!(docs[0]["TasksCreated"], json!(1.0));
        assert_eq!(
            docs[1]["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": "TasksDelivered", "Unit": "Count"},
                   {"Name": "DeliveryLatenessMs", "Unit": "Milliseconds"}])
        );
        assert_eq!(docs[1]["DeliveryLatenessMs"], json!(420.0));
        for (i, name) in [
            (2, "TasksFailed"),
            (3, "TasksRetried"),
            (4, "TasksCancelled"),
        ] {
            assert_eq!(docs[i][name], json!(1.0), "{name}");
        }
    }

    /// Every `(name, unit)` that one call of each [`Metrics`] method emits.
    fn emitted() -> BTreeSet<(String, String)> {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let m = EmfMetrics::with_sink(move |l| sink.lock().unwrap().push(l));
        m.task_created();
        m.task_delivered(1);
        m.task_failed();
        m.task_retried();
        m.task_cancelled();
        m.task_recovered();
        m.wake_up_deferred();
        let lines = lines.lock().unwrap();
        lines
            .iter()
            .flat_map(|l| {
                let doc: serde_json::Value = serde_json::from_str(l).unwrap();
                doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        (
                            m["Name"].as_str().unwrap().to_owned(),
                            m["Unit"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn emits_exactly_the_metrics_of_the_list_the_cdk_app_reads() {
        // shared/metrics.json: the dashboard and alarms of cdk/lib/operations.ts use these names.
        let list: serde_json::Value =
            serde_json::from_str(include_str!("../metrics.json")).unwrap();
        assert_eq!(list["namespace"], NAMESPACE);
        let listed: Vec<(String, String)> = list["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_owned(),
                    m["unit"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let listed_set: BTreeSet<_> = listed.iter().cloned().collect();
        assert_eq!(
            listed_set.len(),
            listed.len(),
            "a metric is listed twice: {listed:?}"
        );
        let emitted = emitted();
        assert_eq!(
            emitted.difference(&listed_set).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "emitted but not in shared/metrics.json"
        );
        assert_eq!(
            listed_set.difference(&emitted).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "in shared/metrics.json but never emitted"
        );
    }
}
