//! What a run reports: named figures (the keys `bench/report.mjs` lays out next to the BullMQ
//! side's) and notes, echoed to stderr as they are measured and written as JSON at the end.

use serde_json::{Value, json};

/// One figure. `key` names the same figure on the BullMQ side where the peer has it.
pub struct Metric {
    pub key: String,
    pub label: String,
    pub value: f64,
    pub unit: &'static str,
}

#[derive(Default)]
pub struct Report {
    pub metrics: Vec<Metric>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn add(&mut self, key: impl Into<String>, label: impl Into<String>, value: f64, unit: &'static str) {
        let (key, label) = (key.into(), label.into());
        eprintln!("  {label:<60} {} {unit}", fmt_num(value));
        self.metrics.push(Metric { key, label, value, unit });
    }

    pub fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        eprintln!("  note: {n}");
        self.notes.push(n);
    }

    /// p50, p99 and max of `values` (sorted here) under `key_p50` etc.
    pub fn distribution(&mut self, key: &str, label: &str, values: &mut [f64]) {
        values.sort_by(f64::total_cmp);
        self.add(format!("{key}_p50_ms"), format!("{label} p50"), pct(values, 0.50), "ms");
        self.add(format!("{key}_p99_ms"), format!("{label} p99"), pct(values, 0.99), "ms");
        self.add(format!("{key}_max_ms"), format!("{label} max"), values.last().copied().unwrap_or(f64::NAN), "ms");
    }

    pub fn to_json(&self) -> Value {
        let metrics: Vec<Value> = self
            .metrics
            .iter()
            .map(|m| json!({"key": m.key, "label": m.label, "value": if m.value.is_finite() { json!(m.value) } else { Value::Null }, "unit": m.unit}))
            .collect();
        json!({ "metrics": metrics, "notes": self.notes })
    }
}

pub fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 || v == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Nearest-rank percentile of sorted values (the BullMQ side computes it the same way).
pub fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    pct(values, 0.5)
}
