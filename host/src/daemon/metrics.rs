//! Counters and gauges in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Counters by series (`name{label="value",…}`), and their help text.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    counters: Arc<Mutex<BTreeMap<String, BTreeMap<String, u64>>>>,
}

/// A gauge to render: name, help, and values by label set.
pub(crate) type Gauge<'a> = (&'a str, &'a str, Vec<(String, u64)>);

/// What each metric means.
const HELP: &[(&str, &str)] = &[
    (
        "clawcage_invocations_total",
        "Events handled, by agent and outcome.",
    ),
    (
        "clawcage_invocation_microseconds_total",
        "Time spent handling events, by agent.",
    ),
    (
        "clawcage_inference_tokens_total",
        "Model tokens, by agent and direction.",
    ),
    (
        "clawcage_inference_cost_usd_micros_total",
        "Model spend in millionths of a dollar, by agent.",
    ),
    (
        "clawcage_inference_fallback_attempts_total",
        "Model calls made to a binding's fallback after its own model failed, by agent.",
    ),
    (
        "clawcage_inference_estimated_calls_total",
        "Model calls whose server reported no token counts (the host estimated them), by agent.",
    ),
    (
        "clawcage_tool_denials_total",
        "Tool calls denied, by agent and tool.",
    ),
    (
        "clawcage_rejections_total",
        "Events refused before running, by agent and reason.",
    ),
    (
        "clawcage_webhooks_refused_total",
        "Webhook deliveries refused, by endpoint.",
    ),
    (
        "clawcage_leaks_blocked_total",
        "Answers withheld because they carried their call's own credential, by agent and capability.",
    ),
];

/// Escapes a label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Adds `amount` to a counter.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], amount: u64) {
        // One string per call (this runs for every event): the label set.
        let mut key = String::with_capacity(64);
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(k);
            key.push_str("=\"");
            if v.contains(['\\', '"', '\n']) {
                key.push_str(&escape(v));
            } else {
                key.push_str(v);
            }
            key.push('"');
        }
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let series = match counters.get_mut(name) {
            Some(series) => series,
            None => counters.entry(name.to_string()).or_default(),
        };
        let value = series.entry(key).or_default();
        *value = value.saturating_add(amount);
    }

    /// The text exposition, with `gauges` (name, help, labelled values)
    /// appended.
    pub(crate) fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for (name, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in counters.get(*name).into_iter().flatten() {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        for (name, help, values) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, value) in values {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_text_format() {
        let metrics = Metrics::default();
        metrics.add(
            "clawcage_invocations_total",
            &[("agent", "a\"b"), ("outcome", "ok")],
            2,
        );
        metrics.add(
            "clawcage_invocations_total",
            &[("agent", "a\"b"), ("outcome", "ok")],
            1,
        );
        let text = metrics.render(&[(
            "clawcage_queue_depth",
            "Events waiting.",
            vec![(String::new(), 4)],
        )]);
        assert!(
            text.contains("clawcage_invocations_total{agent=\"a\\\"b\",outcome=\"ok\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE clawcage_queue_depth gauge\nclawcage_queue_depth 4\n"));
    }
}
