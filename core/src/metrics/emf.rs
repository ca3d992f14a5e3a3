//! The process's metrics as CloudWatch embedded-metric-format lines (`CHRONOS_METRICS=emf`):
//! JSON log lines that CloudWatch Logs turns into metrics, so no `PutMetricData` call is made.
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>
//!
//! Every period, one line per label set of the recorder (the same text `/metrics` serves):
//! counters as their increase since the last line (a period's `Sum` is the count in it),
//! histograms as the mean of the period's observations (absent when there were none), gauges as
//! they are. Namespace `Chronos`; the dimensions are `Service` and the labels, capitalised
//! (`Queue`, `Name`, `Status`), and every metric is also published under `Service` alone, which
//! the deployment's alarms read.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "Chronos";

/// Counter values at the last line, by series, to turn totals into increases.
#[derive(Debug, Default)]
pub struct Deltas {
    last: HashMap<String, f64>,
}

/// A series' labels, in the exposition's order (`le` and `quantile` left out).
type Labels = Vec<(String, String)>;
/// Metric name → (value, EMF unit).
type Values = BTreeMap<String, (f64, &'static str)>;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Deltas {
    fn delta(&mut self, series: &str, now: f64) -> f64 {
        let before = self.last.insert(series.to_owned(), now).unwrap_or(0.0);
        // A counter never goes down; one that did belongs to a restarted recorder.
        if now >= before { now - before } else { now }
    }
}

/// The EMF lines for one Prometheus text exposition (`crate::metrics::render`).
pub fn lines(exposition: &str, deltas: &mut Deltas, service: &str, timestamp_ms: i64) -> Vec<Value> {
    let mut kinds: HashMap<&str, Kind> = HashMap::new();
    let mut groups: BTreeMap<Labels, Values> = BTreeMap::new();
    // histogram sums and counts, by (labels, name), to divide once both are read
    let mut hist: BTreeMap<(Labels, String), (f64, f64)> = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                let k = match kind {
                    "counter" => Kind::Counter,
                    "histogram" | "summary" => Kind::Histogram,
                    _ => Kind::Gauge,
                };
                kinds.insert(name, k);
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = split_series(series);
        if let Some(base) = name.strip_suffix("_sum").or_else(|| name.strip_suffix("_count"))
            && kinds.get(base) == Some(&Kind::Histogram)
        {
            let d = deltas.delta(series, value);
            let e = hist.entry((labels, base.to_owned())).or_default();
            if name.ends_with("_sum") {
                e.0 = d
            } else {
                e.1 = d
            }
            continue;
        }
        if name.ends_with("_bucket") || !value.is_finite() {
            continue;
        }
        let (v, unit) = match kinds.get(name) {
            Some(Kind::Counter) => (deltas.delta(series, value), "Count"),
            _ => (value, if name.ends_with("_seconds") { "Seconds" } else { "None" }),
        };
        groups.entry(labels).or_default().insert(name.to_owned(), (v, unit));
    }
    for ((labels, name), (sum, count)) in hist {
        if count > 0.0 {
            let unit = if name.ends_with("_seconds") { "Seconds" } else { "None" };
            groups.entry(labels).or_default().insert(name, (sum / count, unit));
        }
    }
    groups
        .into_iter()
        .filter(|(_, metrics)| !metrics.is_empty())
        // A directive holds at most 100 metrics.
        .flat_map(|(labels, metrics)| {
            let metrics: Vec<_> = metrics.into_iter().collect();
            metrics.chunks(100).map(|c| line(&labels, c, service, timestamp_ms)).collect::<Vec<_>>()
        })
        .collect()
}

fn line(labels: &[(String, String)], metrics: &[(String, (f64, &'static str))], service: &str, timestamp_ms: i64) -> Value {
    let mut root = Map::new();
    let mut dims = vec!["Service".to_owned()];
    root.insert("Service".into(), json!(service));
    for (k, v) in labels {
        let dim = capitalise(k);
        root.insert(dim.clone(), json!(v));
        dims.push(dim);
    }
    let sets = if dims.len() > 1 { json!([["Service"], dims]) } else { json!([dims]) };
    let mut defs = Vec::new();
    for (name, (v, unit)) in metrics {
        defs.push(json!({ "Name": name, "Unit": unit }));
        root.insert(name.clone(), json!(v));
    }
    root.insert(
        "_aws".into(),
        json!({ "Timestamp": timestamp_ms, "CloudWatchMetrics": [{ "Namespace": NAMESPACE, "Dimensions": sets, "Metrics": defs }] }),
    );
    Value::Object(root)
}

fn capitalise(label: &str) -> String {
    let mut c = label.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

/// `name{a="x",b="y"}` → (`name`, [(a, x), (b, y)]). Label values here never hold `,` or `"`
/// escapes that matter: queue and task names are plain (the model refuses control characters).
fn split_series(series: &str) -> (&str, Vec<(String, String)>) {
    let Some((name, rest)) = series.split_once('{') else { return (series, Vec::new()) };
    let mut labels = Vec::new();
    for pair in rest.trim_end_matches('}').split("\",") {
        if let Some((k, v)) = pair.split_once('=') {
            labels.push((k.to_owned(), v.trim_matches('"').replace("\\\"", "\"").replace("\\\\", "\\")));
        }
    }
    labels.retain(|(k, _)| k != "le" && k != "quantile");
    (name, labels)
}

/// How often [`Emitter`] writes by default (`CHRONOS_METRICS_INTERVAL_S`, 1–3600).
pub const DEFAULT_INTERVAL_S: u64 = 60;

/// Writes the process's metrics as EMF lines on stdout, each period: a loop in a long-running
/// process ([`Emitter::run`]), at the end of an invocation (or of a request once the period is
/// over) in a Lambda function, whose background tasks do not run between invocations.
pub struct Emitter {
    service: String,
    every: std::time::Duration,
    state: tokio::sync::Mutex<(Deltas, Option<std::time::Instant>)>,
}

impl Emitter {
    /// From `CHRONOS_METRICS` (`emf` on, `prometheus` off; unset: `on_by_default`),
    /// `CHRONOS_METRICS_INTERVAL_S` and `CHRONOS_METRICS_SERVICE` (default `service`). Installs
    /// the recorder when it is on.
    pub fn from_env(service: &str, on_by_default: bool) -> Result<Option<Emitter>, crate::config::ConfigError> {
        use crate::config::{ConfigError, parse_var, var};
        let on = match var("CHRONOS_METRICS").as_deref().map(str::trim) {
            None | Some("") => on_by_default,
            Some("prometheus") => false,
            Some("emf") => true,
            Some(other) => {
                return Err(ConfigError { var: "CHRONOS_METRICS", message: format!("{other:?} is neither emf nor prometheus") });
            }
        };
        if !on {
            return Ok(None);
        }
        let every = parse_var("CHRONOS_METRICS_INTERVAL_S", DEFAULT_INTERVAL_S, "a number of seconds from 1 to 3600", |v| {
            v.parse().ok().filter(|s| (1..=3600).contains(s))
        })?;
        crate::metrics::install();
        Ok(Some(Emitter {
            service: var("CHRONOS_METRICS_SERVICE").unwrap_or_else(|| service.to_owned()),
            every: std::time::Duration::from_secs(every),
            state: tokio::sync::Mutex::new((Deltas::default(), None)),
        }))
    }

    /// Write one period's lines now (with the queue gauges read from `engine`, when given).
    pub async fn write(&self, engine: Option<&crate::queue::Engine>) {
        let mut state = self.state.lock().await;
        self.write_locked(&mut state, engine).await;
    }

    /// Whether a period has passed since the last lines (or none were written yet).
    pub fn due(&self) -> bool {
        self.state.try_lock().is_ok_and(|s| s.1.is_none_or(|at| at.elapsed() >= self.every))
    }

    async fn write_locked(&self, state: &mut (Deltas, Option<std::time::Instant>), engine: Option<&crate::queue::Engine>) {
        use std::io::Write;
        let text = match engine {
            Some(e) => crate::metrics::render_with_queues(e).await,
            None => crate::metrics::render(),
        };
        let at = chrono::Utc::now().timestamp_millis();
        let mut out = std::io::stdout().lock();
        for l in lines(&text, &mut state.0, &self.service, at) {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
        state.1 = Some(std::time::Instant::now());
    }

    /// Write every period until `stop`, and once more on the way out (a stopping process's
    /// final counts).
    pub async fn run(self, engine: crate::queue::Engine, stop: impl std::future::Future<Output = ()>) {
        let mut timer = tokio::time::interval(self.every);
        timer.tick().await;
        tokio::pin!(stop);
        loop {
            let stopping = tokio::select! {
                _ = timer.tick() => false,
                _ = &mut stop => true,
            };
            self.write(Some(&engine)).await;
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &str = "# TYPE chronos_tasks_completed_total counter
chronos_tasks_completed_total{queue=\"default\",name=\"noop\"} 5
# TYPE chronos_queue_depth gauge
chronos_queue_depth{queue=\"default\"} 7
# TYPE chronos_task_run_seconds histogram
chronos_task_run_seconds_bucket{queue=\"default\",name=\"noop\",le=\"0.1\"} 4
chronos_task_run_seconds_sum{queue=\"default\",name=\"noop\"} 1.5
chronos_task_run_seconds_count{queue=\"default\",name=\"noop\"} 5
";

    #[test]
    fn counters_become_increases_histograms_means_and_gauges_stay() {
        let mut d = Deltas::default();
        let first = lines(FIRST, &mut d, "svc", 1000);
        let noop = first.iter().find(|l| l["Name"] == "noop").unwrap();
        assert_eq!(noop["chronos_tasks_completed_total"], 5.0);
        assert_eq!(noop["chronos_task_run_seconds"], 0.3);
        assert_eq!(noop["Queue"], "default");
        assert_eq!(noop["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Service"], ["Service", "Queue", "Name"]]));
        let queue = first.iter().find(|l| l.get("Name").is_none()).unwrap();
        assert_eq!(queue["chronos_queue_depth"], 7.0);

        let second = FIRST.replace("} 5\n", "} 8\n").replace("1.5", "2.1");
        let next = lines(&second, &mut d, "svc", 61_000);
        let noop = next.iter().find(|l| l["Name"] == "noop").unwrap();
        assert_eq!(noop["chronos_tasks_completed_total"], 3.0, "the increase since the last line");
        assert!((noop["chronos_task_run_seconds"].as_f64().unwrap() - 0.2).abs() < 1e-9, "{noop}");
        let idle = lines(&second, &mut d, "svc", 121_000);
        let noop = idle.iter().find(|l| l["Name"] == "noop").unwrap();
        assert_eq!(noop["chronos_tasks_completed_total"], 0.0);
        assert!(noop.get("chronos_task_run_seconds").is_none(), "no observations, no mean");
    }
}
