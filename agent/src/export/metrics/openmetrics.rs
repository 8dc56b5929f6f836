//! The OpenMetrics 1.0.0 text encoder (the `prometheus` crate only writes the
//! Prometheus text format).

use std::fmt::Write as _;

use prometheus::proto::{self, MetricFamily, MetricType};

/// Encodes families in the OpenMetrics 1.0.0 text format: a counter family is
/// named without its `_total` suffix (its samples keep it), gauges are unchanged,
/// untyped families are `unknown`, and the exposition ends with `# EOF`.
pub fn encode_openmetrics(families: &[MetricFamily]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    for family in families {
        let name = family.name();
        let (family_name, kind) = match family.get_field_type() {
            MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            MetricType::GAUGE => (name, "gauge"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        let _ = writeln!(out, "# TYPE {family_name} {kind}");
        if !family.help().is_empty() {
            let _ = writeln!(out, "# HELP {family_name} {}", escape(family.help()));
        }
        for metric in family.get_metric() {
            let labels = labels_text(metric.get_label(), None);
            match family.get_field_type() {
                MetricType::COUNTER => {
                    let _ = writeln!(
                        out,
                        "{family_name}_total{labels} {}",
                        number(metric.get_counter().get_value())
                    );
                }
                MetricType::GAUGE => {
                    let _ = writeln!(
                        out,
                        "{family_name}{labels} {}",
                        number(metric.get_gauge().get_value())
                    );
                }
                MetricType::UNTYPED => {
                    // Nothing moatd serves is untyped; kept for completeness.
                    #[allow(deprecated)]
                    let _ = writeln!(
                        out,
                        "{family_name}{labels} {}",
                        number(metric.get_untyped().get_value())
                    );
                }
                MetricType::SUMMARY => {
                    let summary = metric.get_summary();
                    for quantile in summary.get_quantile() {
                        let q = number(quantile.quantile());
                        let labels = labels_text(metric.get_label(), Some(("quantile", &q)));
                        let _ = writeln!(out, "{family_name}{labels} {}", number(quantile.value()));
                    }
                    let _ = writeln!(
                        out,
                        "{family_name}_sum{labels} {}",
                        number(summary.sample_sum())
                    );
                    let _ = writeln!(
                        out,
                        "{family_name}_count{labels} {}",
                        summary.sample_count()
                    );
                }
                MetricType::HISTOGRAM => {
                    let histogram = metric.get_histogram();
                    let mut saw_inf = false;
                    for bucket in histogram.get_bucket() {
                        let le = number(bucket.upper_bound());
                        saw_inf |= bucket.upper_bound().is_infinite();
                        let labels = labels_text(metric.get_label(), Some(("le", &le)));
                        let _ = writeln!(
                            out,
                            "{family_name}_bucket{labels} {}",
                            bucket.cumulative_count()
                        );
                    }
                    if !saw_inf {
                        let labels = labels_text(metric.get_label(), Some(("le", "+Inf")));
                        let _ = writeln!(
                            out,
                            "{family_name}_bucket{labels} {}",
                            histogram.get_sample_count()
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{family_name}_sum{labels} {}",
                        number(histogram.get_sample_sum())
                    );
                    let _ = writeln!(
                        out,
                        "{family_name}_count{labels} {}",
                        histogram.get_sample_count()
                    );
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn labels_text(labels: &[proto::LabelPair], extra: Option<(&str, &str)>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|pair| (pair.name(), pair.value()))
        .chain(extra)
        .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// OpenMetrics escaping of label values and help text.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use moat_api::metrics::EXECS;

    use crate::{collect::snapshot::Series, export::metrics::into_family};

    #[test]
    fn openmetrics_names_counters_without_total() {
        let mut series = Series::default();
        series.add(vec![Arc::from("a\"b")], 3.0);
        let family = into_family(&series, &EXECS);
        let text = encode_openmetrics(&[family]);
        assert_eq!(
            text,
            format!(
                "# TYPE moat_execs counter\n# HELP moat_execs {}\nmoat_execs_total{{workload=\"a\\\"b\"}} 3\n# EOF\n",
                EXECS.help
            )
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
