//! The rules of Grafana's dashboard linter (issue 16, "Grafana"), written out
//! here and applied to every `dashboards/*.json`:
//!
//! - template-datasource: one `datasource` variable of type `datasource`,
//!   labelled "Data Source", for Prometheus.
//! - template-job, template-instance: variables `job` and `instance`, labelled
//!   so, querying Prometheus through `${datasource}`, multi-select, with
//!   "All" as `.+`.
//! - panel datasource: every panel and target uses `${datasource}`.
//! - target-rate-interval: every `rate`, `irate` and `increase` takes
//!   `[$__rate_interval]`.
//! - target-job, target-instance: every metric selector has
//!   `job=~"$job"` and `instance=~"$instance"`.
//! - panel-units: every stat, singlestat, graph, table, timeseries and gauge
//!   panel (bar gauges too, here) has a unit Grafana knows.
//! - panel-title-description: every panel but a row has a title and a
//!   description.
//!
//! Exceptions are read from `dashboards/.lint` (the linter's own file: per
//! rule a reason and the panels it covers); an exception that no longer
//! covers a violation fails too, so the file cannot go stale.

use std::collections::BTreeSet;
use std::path::PathBuf;

use moat_tests::workspace_root;
use serde_json::Value;

fn dashboards_dir() -> PathBuf {
    workspace_root().join("dashboards")
}

/// Units of Grafana's value formats (`valueFormats/categories.ts`) that
/// dashboards here may use.
const UNITS: &[&str] = &[
    "none",
    "short",
    "percent",
    "percentunit",
    "ops",
    "reqps",
    "cps",
    "wps",
    "rps",
    "s",
    "ms",
    "bytes",
    "decbytes",
    "bps",
    "Bps",
];

/// Panel types the unit rule applies to.
const UNIT_PANELS: &[&str] = &[
    "stat",
    "singlestat",
    "graph",
    "table",
    "timeseries",
    "gauge",
    "bargauge",
];

fn all_panels(panels: &Value, out: &mut Vec<Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p.clone());
        all_panels(&p["panels"], out);
    }
}

/// The `(rule, dashboard title, panel title)` exceptions of `.lint`.
fn exclusions() -> BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string(dashboards_dir().join(".lint")).unwrap_or_default();
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    if json.trim().is_empty() {
        return BTreeSet::new();
    }
    let lint: Value = serde_json::from_str(&json).expect("dashboards/.lint: JSON-style YAML");
    let mut out = BTreeSet::new();
    for (rule, exclusion) in lint["exclusions"].as_object().expect("exclusions") {
        assert!(
            exclusion["reason"].as_str().is_some_and(|r| r.len() > 20),
            ".lint: {rule} needs a reason"
        );
        for entry in exclusion["entries"].as_array().expect("entries") {
            out.insert((
                rule.clone(),
                entry["dashboard"].as_str().unwrap().to_owned(),
                entry["panel"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// The metric selectors of `expr`: each metric name with its `{...}`, if any.
fn selectors(expr: &str) -> Vec<(String, String)> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if word_start && expr[i..].starts_with("moat_") {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            let name = expr[i..end].to_owned();
            let matchers = if expr[end..].starts_with('{') {
                let close = expr[end..].find('}').expect("closing brace") + end;
                expr[end + 1..close].to_owned()
            } else {
                String::new()
            };
            out.push((name, matchers));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// The range of every `rate(`, `irate(` and `increase(` call in `expr`.
fn rate_ranges(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for func in ["rate(", "increase("] {
        let mut from = 0;
        while let Some(at) = expr[from..].find(func) {
            let start = from + at + func.len();
            let open = expr[start..].find('[').expect("a range") + start;
            let close = expr[open..].find(']').expect("a range end") + open;
            out.push(expr[open + 1..close].to_owned());
            from = close;
        }
    }
    out
}

/// Checks a template variable for job or instance.
fn check_label_var(vars: &[Value], name: &str, problems: &mut Vec<String>) {
    let Some(v) = vars.iter().find(|v| v["name"] == name) else {
        problems.push(format!("template-{name}-rule: no `{name}` variable"));
        return;
    };
    let mut bad = |what: &str| problems.push(format!("template-{name}-rule: {what}"));
    if v["label"] != name {
        bad(&format!("label must be `{name}`"));
    }
    if v["type"] != "query" {
        bad("must be a query variable");
    }
    if v["datasource"]["uid"] != "${datasource}" && v["datasource"] != "$datasource" {
        bad("must query ${datasource}");
    }
    let query = v["query"]["query"]
        .as_str()
        .or(v["query"].as_str())
        .unwrap_or("");
    if !query.starts_with("label_values(") || !query.ends_with(&format!(", {name})")) {
        bad(&format!(
            "must be a Prometheus label_values(..., {name}) query"
        ));
    }
    if v["multi"] != true {
        bad("must be multi-select");
    }
    if v["includeAll"] != true || v["allValue"] != ".+" {
        bad("must include All as `.+`");
    }
}

/// Every problem the rules find in `dash`, unexcepted ones only; the
/// exceptions used are removed from `unused`.
fn lint(
    dash: &Value,
    excepted: &BTreeSet<(String, String, String)>,
    unused: &mut BTreeSet<(String, String, String)>,
) -> Vec<String> {
    let title = dash["title"].as_str().unwrap_or("?").to_owned();
    let mut problems = Vec::new();
    let vars = dash["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();

    let ds: Vec<&Value> = vars.iter().filter(|v| v["type"] == "datasource").collect();
    if ds.len() != 1 {
        problems.push(format!(
            "template-datasource-rule: {} data source variables, not 1",
            ds.len()
        ));
    }
    for v in ds {
        if v["name"] != "datasource" || v["label"] != "Data Source" || v["query"] != "prometheus" {
            problems.push(format!(
                "template-datasource-rule: must be named `datasource`, labelled \"Data Source\", for prometheus: {v}"
            ));
        }
    }
    check_label_var(&vars, "job", &mut problems);
    check_label_var(&vars, "instance", &mut problems);

    let mut panels = Vec::new();
    all_panels(&dash["panels"], &mut panels);
    for p in &panels {
        let ptype = p["type"].as_str().unwrap_or("");
        if ptype == "row" {
            continue;
        }
        let ptitle = p["title"].as_str().unwrap_or("").to_owned();
        let mut flag = |rule: &str, what: String| {
            let key = (rule.to_owned(), title.clone(), ptitle.clone());
            if excepted.contains(&key) {
                unused.remove(&key);
            } else {
                problems.push(format!("{rule}: panel {ptitle:?}: {what}"));
            }
        };
        if ptitle.trim().is_empty()
            || p["description"]
                .as_str()
                .is_none_or(|d| d.trim().is_empty())
        {
            flag(
                "panel-title-description-rule",
                "needs a title and a description".into(),
            );
        }
        if UNIT_PANELS.contains(&ptype) {
            let defaults = &p["fieldConfig"]["defaults"];
            let mapped = defaults["mappings"]
                .as_array()
                .is_some_and(|m| !m.is_empty());
            let unit = defaults["unit"].as_str().unwrap_or("");
            if !mapped && !UNITS.contains(&unit) {
                flag(
                    "panel-units-rule",
                    format!("unit {unit:?} is not one of Grafana's"),
                );
            }
        }
        if p["datasource"]["uid"] != "${datasource}" {
            flag(
                "panel-datasource-rule",
                format!("data source {}", p["datasource"]),
            );
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            if t["datasource"]["uid"] != "${datasource}" {
                flag(
                    "panel-datasource-rule",
                    format!("target data source {}", t["datasource"]),
                );
            }
            let expr = t["expr"].as_str().unwrap_or("");
            for range in rate_ranges(expr) {
                if range != "$__rate_interval" {
                    flag("target-rate-interval-rule", format!("[{range}] in {expr}"));
                }
            }
            for (metric, matchers) in selectors(expr) {
                let m: Vec<&str> = matchers.split(',').map(str::trim).collect();
                if !m.contains(&"job=~\"$job\"") {
                    flag("target-job-rule", format!("{metric} without job=~\"$job\""));
                }
                if !m.contains(&"instance=~\"$instance\"") {
                    flag(
                        "target-instance-rule",
                        format!("{metric} without instance=~\"$instance\""),
                    );
                }
            }
        }
    }
    problems
}

#[test]
fn every_dashboard_passes_the_grafana_linter_rules() {
    let excepted = exclusions();
    let mut unused = excepted.clone();
    let mut checked = 0;
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(dashboards_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for p in lint(&dash, &excepted, &mut unused) {
            problems.push(format!("{}: {p}", path.display()));
        }
        checked += 1;
    }
    assert!(checked >= 1, "no dashboard found");
    assert!(
        problems.is_empty(),
        "linter rules broken:\n{}",
        problems.join("\n")
    );
    assert!(
        unused.is_empty(),
        "dashboards/.lint excepts what is no violation: {unused:?}"
    );
}

#[test]
fn the_rules_catch_what_they_name() {
    // A dashboard breaking each rule once: every rule must say so.
    let dash: Value = serde_json::json!({
        "title": "bad",
        "templating": {"list": [
            {"name": "DS", "type": "datasource", "label": "ds", "query": "prometheus"},
            {"name": "job", "label": "job", "type": "query", "datasource": {"uid": "${datasource}"},
             "query": {"query": "label_values(up, job)"}, "multi": false, "includeAll": true, "allValue": ".*"}
        ]},
        "panels": [
            {"type": "timeseries", "title": "x", "datasource": {"uid": "prom"},
             "fieldConfig": {"defaults": {"unit": "furlongs"}},
             "targets": [{"datasource": {"uid": "${datasource}"},
                          "expr": "sum(rate(moat_forks_total{job=~\"$job\"}[5m])) + moat_execs_total"}]}
        ]
    });
    let problems = lint(&dash, &BTreeSet::new(), &mut BTreeSet::new()).join("\n");
    for rule in [
        "template-datasource-rule",
        "template-job-rule: must be multi-select",
        "template-job-rule: must include All as `.+`",
        "template-instance-rule: no `instance` variable",
        "panel-title-description-rule",
        "panel-units-rule",
        "panel-datasource-rule",
        "target-rate-interval-rule: panel \"x\": [5m]",
        "target-job-rule: panel \"x\": moat_execs_total",
        "target-instance-rule: panel \"x\": moat_forks_total",
    ] {
        assert!(
            problems.contains(rule),
            "{rule} not reported in:\n{problems}"
        );
    }
    assert_eq!(
        selectors("sum(moat_a{x=\"1\"}) / moat_b + vector(0)"),
        [
            ("moat_a".to_owned(), "x=\"1\"".to_owned()),
            ("moat_b".to_owned(), String::new())
        ]
    );
}
