//! CloudWatch embedded metric format: a JSON log line that CloudWatch Logs turns into metrics,
//! so a Lambda publishes them without an API call (and without `cloudwatch:PutMetricData`).
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>
//!
//! Namespace `Chronos`. Per queue (dimensions `Service`, `Queue`): `QueueDepth` (waiting + due
//! scheduled + due retrying), `BacklogPerWorker` (that ÷ the service's current count),
//! `OldestTaskAgeSeconds`. For the whole service (dimension `Service`): the same three over
//! every queue it serves (depth summed, age the maximum), which the alarms watch.

use serde_json::{Value, json};

pub const NAMESPACE: &str = "Chronos";

/// One metric line.
pub fn line(timestamp_ms: i64, service: &str, queue: Option<&str>, depth: u64, per_worker: f64, oldest_s: f64) -> Value {
    let dims: Vec<&str> = if queue.is_some() { vec!["Service", "Queue"] } else { vec!["Service"] };
    let mut v = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dims],
                "Metrics": [
                    {"Name": "QueueDepth", "Unit": "Count"},
                    {"Name": "BacklogPerWorker", "Unit": "Count"},
                    {"Name": "OldestTaskAgeSeconds", "Unit": "Seconds"}
                ]
            }]
        },
        "Service": service,
        "QueueDepth": depth,
        "BacklogPerWorker": per_worker,
        "OldestTaskAgeSeconds": oldest_s,
    });
    if let Some(q) = queue {
        v["Queue"] = Value::String(q.to_owned());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_every_metric_it_carries_and_its_dimensions() {
        let v = line(1_700_000_000_000, "chronos-workers", Some("mail"), 250, 125.0, 3.5);
        let spec = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(spec["Namespace"], "Chronos");
        for m in spec["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap();
            assert!(v[name].is_number(), "{name} missing from {v}");
        }
        for d in spec["Dimensions"][0].as_array().unwrap() {
            assert!(v[d.as_str().unwrap()].is_string(), "{d} missing from {v}");
        }
        assert_eq!((v["QueueDepth"].as_u64(), v["Queue"].as_str()), (Some(250), Some("mail")));
        let total = line(1, "s", None, 1, 1.0, 0.0);
        assert_eq!(total["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Service"]]));
        assert!(total.get("Queue").is_none());
    }
}
