//! CloudWatch embedded metric format: a JSON log line that CloudWatch Logs turns into metrics,
//! so a Lambda publishes them without an API call (and without `cloudwatch:PutMetricData`).
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>
//!
//! Namespace `Chronos`. Per queue (dimensions `Service`, `Queue`): `QueueDepth` (waiting + due
//! scheduled + due retrying), `BacklogPerWorker` (that ÷ the service's current count),
//! `OldestTaskAgeSeconds`. For the whole service (dimension `Service`): the same three over
//! every queue it serves (depth summed, age the maximum), which the alarms watch, and two of the
//! app's gauges under their Prometheus names: `chronos_outbox_length` (audit transitions not yet
//! in Postgres) and `chronos_queue_dead` (dead tasks in Redis).

use serde_json::{Value, json};

pub const NAMESPACE: &str = "Chronos";

/// The service-wide gauges of [`service_line`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub depth: u64,
    pub per_worker: f64,
    pub oldest_s: f64,
    pub outbox: u64,
    pub dead: u64,
}

/// The line for the whole service (dimension `Service`).
pub fn service_line(timestamp_ms: i64, service: &str, t: &Totals) -> Value {
    let mut v = line(timestamp_ms, service, None, t.depth, t.per_worker, t.oldest_s);
    let spec = &mut v["_aws"]["CloudWatchMetrics"][0]["Metrics"];
    if let Value::Array(metrics) = spec {
        metrics.push(json!({"Name": "chronos_outbox_length", "Unit": "Count"}));
        metrics.push(json!({"Name": "chronos_queue_dead", "Unit": "Count"}));
    }
    v["chronos_outbox_length"] = json!(t.outbox);
    v["chronos_queue_dead"] = json!(t.dead);
    v
}

/// A worker's line (dimension `Service`): attempts completed and failed since its last line,
/// as `chronos_tasks_completed_total` and `chronos_tasks_failed_total` (the counters' increase;
/// a period's `Sum` is the count in that period).
pub fn worker_line(timestamp_ms: i64, service: &str, completed: u64, failed: u64) -> Value {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Service"]],
                "Metrics": [
                    {"Name": "chronos_tasks_completed_total", "Unit": "Count"},
                    {"Name": "chronos_tasks_failed_total", "Unit": "Count"}
                ]
            }]
        },
        "Service": service,
        "chronos_tasks_completed_total": completed,
        "chronos_tasks_failed_total": failed,
    })
}

/// One metric line: per queue with `Some(queue)`, else the three metrics for the whole service.
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
        let total = service_line(1, "s", &Totals { depth: 1, per_worker: 1.0, oldest_s: 0.0, outbox: 7, dead: 2 });
        assert_eq!(total["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Service"]]));
        assert!(total.get("Queue").is_none());
        for m in total["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
            assert!(total[m["Name"].as_str().unwrap()].is_number(), "{m} missing from {total}");
        }
        assert_eq!((total["chronos_outbox_length"].as_u64(), total["chronos_queue_dead"].as_u64()), (Some(7), Some(2)));
        let w = worker_line(1, "s", 10, 3);
        for m in w["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
            assert!(w[m["Name"].as_str().unwrap()].is_number(), "{m} missing from {w}");
        }
        assert_eq!(w["chronos_tasks_failed_total"].as_u64(), Some(3));
    }
}
