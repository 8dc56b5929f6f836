//! `dashboards/`: the Grafana dashboard and the Prometheus rules, checked by
//! the real tools. `promtool` checks the rule files and runs their unit tests
//! (`dashboards/tests/alerts_test.yml`); then a real Prometheus, loaded with
//! synthetic samples of every moat metric (backfilled with `promtool tsdb
//! create-blocks-from openmetrics`) and with the rule files, answers every
//! query of every dashboard panel with data and reports every rule healthy.
//!
//! The tests print SKIP when `prometheus`/`promtool` are not installed
//! (Debian package `prometheus`; `scripts/setup.sh` installs it).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moat_tests::moatd::TempDir;
use moat_tests::{which, workspace_root};
use serde_json::Value;

/// Every metric moatd serves (issue 4), each of which the dashboard shows.
fn metrics() -> impl Iterator<Item = &'static str> {
    moat_api::metrics::FAMILIES.iter().map(|spec| spec.name)
}

/// The alerts the rules must define.
const ALERTS: &[&str] = &[
    "MoatSeccompDenialsSpike",
    "MoatKillDenial",
    "MoatForkBomb",
    "MoatForkFailures",
    "MoatAuditEventsDropped",
    "MoatEbpfMapFull",
    "MoatWorkloadLabelOverflow",
    "MoatAgentDown",
    "MoatAuthzErrors",
    "MoatAuthzDenialSpike",
    "MoatAuthzPolicyReloadFailed",
    "MoatAuthzSlowDecisions",
];

fn dashboards() -> PathBuf {
    workspace_root().join("dashboards")
}

fn rule_files() -> Vec<PathBuf> {
    vec![
        dashboards().join("moat-alerts.yml"),
        dashboards().join("moat-recording.yml"),
    ]
}

fn dashboard() -> Value {
    let path = dashboards().join("moat-overview.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(prometheus, promtool)`, or `None` after printing why the test skips.
fn tools() -> Option<(PathBuf, PathBuf)> {
    match (which("prometheus"), which("promtool")) {
        (Some(prometheus), Some(promtool)) => Some((prometheus, promtool)),
        _ => {
            eprintln!("SKIP: prometheus/promtool not installed (scripts/setup.sh installs it)");
            None
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// `(panel title, target)` for every query target of the dashboard.
fn targets(dash: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((p["title"].as_str().unwrap_or("?").to_string(), t));
        }
    }
    out
}

/// A panel query as Grafana sends it for "All" workloads over a 1h range.
fn substitute(expr: &str) -> String {
    let q = expr
        .replace("${workload:regex}", ".*")
        .replace("${workload}", ".*")
        .replace("$workload", ".*")
        .replace("$job", ".+")
        .replace("$instance", ".+")
        .replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
        .replace("$__interval", "1m");
    assert!(!q.contains('$'), "unsubstituted variable in {q}");
    q
}

#[test]
fn dashboard_is_well_formed() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "moat-overview");
    let schema = dash["schemaVersion"].as_i64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");

    let vars = dash["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let wl = var("workload");
    assert_eq!(wl["type"], "query");
    assert_eq!(wl["datasource"]["uid"], "${datasource}");
    let wl_query =
        "label_values(moat_forks_total{job=~\"$job\",instance=~\"$instance\"}, workload)";
    assert_eq!(wl["definition"], wl_query);
    assert_eq!(wl["query"]["query"], wl_query);
    assert_eq!(wl["query"]["qryType"], 1, "label values");
    assert_eq!(wl["query"]["label"], "workload");
    assert_eq!(wl["query"]["metric"], "moat_forks_total");
    assert_eq!(wl["includeAll"], true);
    assert_eq!(wl["allValue"], ".*");

    let mut ids = std::collections::HashSet::new();
    for p in panels(&dash) {
        let title = p["title"].as_str().expect("panel title");
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_i64().unwrap(), g["w"].as_i64().unwrap());
        assert!(x >= 0 && w > 0 && x + w <= 24, "{title}: gridPos {g}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let ts = p["targets"].as_array().expect("targets");
        assert!(!ts.is_empty(), "{title}: no targets");
        for t in ts {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
        }
    }

    let exprs: Vec<String> = targets(&dash)
        .iter()
        .map(|(_, t)| t["expr"].as_str().unwrap().to_string())
        .collect();
    for m in metrics() {
        assert!(exprs.iter().any(|e| e.contains(m)), "no panel shows {m}");
    }
    // The panel the dashboard is built around, verbatim.
    assert!(exprs.iter().any(|e| e
        == "sum by (workload, syscall, action, errno) \
            (rate(moat_seccomp_denials_total{job=~\"$job\",instance=~\"$instance\",\
            workload=~\"$workload\"}[$__rate_interval]))"));
}

#[test]
fn readme_has_a_runbook_for_every_alert() {
    let readme = std::fs::read_to_string(dashboards().join("README.md")).expect("README.md");
    let rules = std::fs::read_to_string(dashboards().join("moat-alerts.yml")).unwrap();
    let defined: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    for a in ALERTS {
        assert!(defined.contains(a), "moat-alerts.yml does not define {a}");
    }
    for a in defined {
        assert!(
            readme.contains(&format!("### {a}")),
            "README.md has no runbook section for {a}"
        );
    }
}

#[test]
fn promtool_checks_the_rule_files() {
    let Some((_, promtool)) = tools() else { return };
    let out = run(Command::new(&promtool)
        .args(["check", "rules"])
        .args(rule_files()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("SUCCESS").count(), 2, "{text}");
    assert!(!text.contains("FAILED"), "{text}");
}

#[test]
fn promtool_rule_unit_tests_pass() {
    let Some((_, promtool)) = tools() else { return };
    let out = run(Command::new(&promtool)
        .args(["test", "rules"])
        .arg(dashboards().join("tests/alerts_test.yml")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS"), "{text}");
}

// --- a real Prometheus -----------------------------------------------------

const STEP: i64 = 15;
const SPAN: i64 = 3600;
const BASE: &str = "instance=\"127.0.0.1:9740\",job=\"moatd\"";

/// How a synthetic series' value changes over the data's hour.
enum Shape {
    /// A counter growing by this much per second (sampled as an integer).
    Rate(f64),
    /// A gauge.
    Level(f64),
}

/// (family, type, sample name, [(labels beyond `BASE`, shape)])
type Family = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, Shape)>,
);

fn families() -> Vec<Family> {
    use Shape::{Level, Rate};
    vec![
        (
            "moat_seccomp_denials",
            "counter",
            "moat_seccomp_denials_total",
            vec![
                (
                    r#"workload="web",syscall="ptrace",action="errno",errno="EPERM""#,
                    Rate(2.0),
                ),
                (
                    r#"workload="web",syscall="keyctl",action="errno",errno="EPERM""#,
                    Rate(0.5),
                ),
                (
                    r#"workload="web",syscall="mount",action="kill",errno="""#,
                    Rate(0.01),
                ),
                (
                    r#"workload="docker:0123456789ab",syscall="unshare",action="errno",errno="EPERM""#,
                    Rate(1.0),
                ),
                (
                    r#"workload="build",syscall="clone3",action="errno",errno="ENOSYS""#,
                    Rate(0.2),
                ),
                (
                    r#"workload="crawler",syscall="ptrace",action="trap",errno="""#,
                    Rate(0.1),
                ),
            ],
        ),
        (
            "moat_forks",
            "counter",
            "moat_forks_total",
            vec![
                (r#"workload="web",kind="process""#, Rate(5.0)),
                (r#"workload="web",kind="thread""#, Rate(20.0)),
                (r#"workload="build",kind="process""#, Rate(50.0)),
                (
                    r#"workload="docker:0123456789ab",kind="process""#,
                    Rate(1.0),
                ),
                (r#"workload="crawler",kind="thread""#, Rate(2.0)),
                (r#"workload="host",kind="process""#, Rate(10.0)),
            ],
        ),
        (
            "moat_execs",
            "counter",
            "moat_execs_total",
            vec![
                (r#"workload="web""#, Rate(4.0)),
                (r#"workload="build""#, Rate(45.0)),
                (r#"workload="host""#, Rate(9.0)),
            ],
        ),
        (
            "moat_exits",
            "counter",
            "moat_exits_total",
            vec![
                (r#"workload="web""#, Rate(5.0)),
                (r#"workload="build""#, Rate(50.0)),
                (r#"workload="host""#, Rate(10.0)),
            ],
        ),
        (
            "moat_fork_failures",
            "counter",
            "moat_fork_failures_total",
            vec![
                (r#"workload="build",errno="EAGAIN""#, Rate(2.0)),
                (r#"workload="web",errno="ENOMEM""#, Rate(0.05)),
            ],
        ),
        (
            "moat_userns_created",
            "counter",
            "moat_userns_created_total",
            vec![
                (r#"workload="build""#, Rate(0.1)),
                (r#"workload="docker:0123456789ab""#, Rate(0.02)),
            ],
        ),
        (
            "moat_pids_current",
            "gauge",
            "moat_pids_current",
            vec![
                (r#"workload="web""#, Level(40.0)),
                (r#"workload="build""#, Level(60.0)),
                (r#"workload="docker:0123456789ab""#, Level(12.0)),
            ],
        ),
        (
            "moat_pids_limit",
            "gauge",
            "moat_pids_limit",
            vec![
                (r#"workload="web""#, Level(64.0)),
                (r#"workload="build""#, Level(64.0)),
                (r#"workload="docker:0123456789ab""#, Level(4096.0)),
            ],
        ),
        (
            "moat_pids_limit_hits",
            "counter",
            "moat_pids_limit_hits_total",
            vec![
                (r#"workload="build""#, Rate(1.0)),
                (r#"workload="web""#, Rate(0.0)),
            ],
        ),
        (
            "moat_audit_events",
            "counter",
            "moat_audit_events_total",
            vec![
                (r#"action="seccomp_denied""#, Rate(3.0)),
                (r#"action="fork_failed""#, Rate(2.0)),
                (r#"action="pids_limit_reached""#, Rate(1.0)),
                (r#"action="fork_burst""#, Rate(0.01)),
                (r#"action="userns_created""#, Rate(0.1)),
            ],
        ),
        (
            "moat_audit_events_dropped",
            "counter",
            "moat_audit_events_dropped_total",
            vec![
                (r#"reason="rate_limited""#, Rate(0.5)),
                (r#"reason="buffer_full""#, Rate(0.05)),
            ],
        ),
        (
            "moat_ebpf_map_full",
            "counter",
            "moat_ebpf_map_full_total",
            vec![(r#"map="denials""#, Rate(0.02))],
        ),
        (
            "moat_workload_label_overflow",
            "counter",
            "moat_workload_label_overflow_total",
            vec![("", Rate(0.05))],
        ),
        (
            "moat_http_connections_open",
            "gauge",
            "moat_http_connections_open",
            vec![("", Level(3.0))],
        ),
        (
            "moat_http_connections_rejected",
            "counter",
            "moat_http_connections_rejected_total",
            vec![
                (r#"reason="evicted""#, Rate(0.5)),
                (r#"reason="header_timeout""#, Rate(0.1)),
            ],
        ),
        (
            "moat_build_info",
            "gauge",
            "moat_build_info",
            vec![(r#"version="0.1.0",kernel="6.1.0-28-amd64""#, Level(1.0))],
        ),
        (
            "moat_authz_requests",
            "counter",
            "moat_authz_requests_total",
            vec![
                (r#"decision="allow",endpoint="other""#, Rate(10.0)),
                (
                    r#"decision="allow",endpoint="containers/create""#,
                    Rate(1.0),
                ),
                (r#"decision="deny",endpoint="containers/create""#, Rate(0.1)),
                (
                    r#"decision="would_deny",endpoint="containers/{id}/exec""#,
                    Rate(0.05),
                ),
                (
                    r#"decision="error",endpoint="containers/{id}/start""#,
                    Rate(0.01),
                ),
            ],
        ),
        (
            "moat_authz_policy_reloads",
            "counter",
            "moat_authz_policy_reloads_total",
            vec![
                (r#"result="success""#, Rate(0.002)),
                (r#"result="failure""#, Rate(0.002)),
            ],
        ),
        (
            "moat_authz_policy_info",
            "gauge",
            "moat_authz_policy_info",
            vec![(
                r#"mode="enforce",source="/etc/moat/policy.toml",sha256="0123456789abcdef""#,
                Level(1.0),
            )],
        ),
        (
            "moat_tracing_mode",
            "gauge",
            "moat_tracing_mode",
            vec![(r#"denials="fatal",mechanism="signal""#, Level(1.0))],
        ),
        (
            "moat_ebpf_pins_info",
            "gauge",
            "moat_ebpf_pins_info",
            vec![(r#"state="reused""#, Level(1.0))],
        ),
    ]
}

/// Histogram families: (family, [(sample suffix, labels beyond `BASE`,
/// shape)]).
type Histogram = (&'static str, Vec<(&'static str, &'static str, Shape)>);

fn histograms() -> Vec<Histogram> {
    use Shape::Rate;
    // 11.16 decisions/s: most under 100 µs, a few starts of a few ms.
    vec![(
        "moat_authz_request_duration_seconds",
        vec![
            ("_bucket", r#"le="0.0001""#, Rate(10.0)),
            ("_bucket", r#"le="0.001""#, Rate(11.0)),
            ("_bucket", r#"le="0.01""#, Rate(11.16)),
            ("_bucket", r#"le="+Inf""#, Rate(11.16)),
            ("_sum", "", Rate(0.004)),
            ("_count", "", Rate(11.16)),
        ],
    )]
}

/// The synthetic samples, from `start` to `start + SPAN` every `STEP`
/// seconds, in the OpenMetrics text format.
fn openmetrics(start: i64) -> String {
    let mut out = String::new();
    for (family, kind, sample, series) in families() {
        out.push_str(&format!("# TYPE {family} {kind}\n"));
        for (labels, shape) in &series {
            let labels = if labels.is_empty() {
                BASE.to_string()
            } else {
                format!("{BASE},{labels}")
            };
            for i in 0..=SPAN / STEP {
                let t = i * STEP;
                let v = match shape {
                    Shape::Rate(r) => (r * t as f64).floor(),
                    Shape::Level(l) => *l,
                };
                out.push_str(&format!("{sample}{{{labels}}} {v} {}\n", start + t));
            }
        }
    }
    for (family, series) in histograms() {
        out.push_str(&format!("# TYPE {family} histogram\n"));
        for (suffix, labels, shape) in &series {
            let labels = if labels.is_empty() {
                BASE.to_string()
            } else {
                format!("{BASE},{labels}")
            };
            for i in 0..=SPAN / STEP {
                let t = i * STEP;
                let v = match shape {
                    Shape::Rate(r) => (r * t as f64).floor(),
                    Shape::Level(l) => *l,
                };
                out.push_str(&format!("{family}{suffix}{{{labels}}} {v} {}\n", start + t));
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A Prometheus this test started, killed (by its pid) when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GET an API path; the `data` of a `"status": "success"` answer.
    fn api(&self, path: &str) -> Value {
        let (code, body) = self.get(path);
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: {code}: {e}: {body}"));
        assert!(
            code == 200 && v["status"] == "success",
            "GET {path}: {code}: {body}"
        );
        v["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// GET `path` (asking for JSON); returns the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let url = moat_api::client::HttpUrl::at(addr, path);
    match moat_api::client::request("GET", &url, &[("Accept", "application/json")]) {
        Ok(response) => Ok((response.status, response.body)),
        Err(moat_api::client::ClientError::Unreachable(err)) => Err(err),
        Err(err) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            err.to_string(),
        )),
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn wait_for(
    what: &str,
    timeout: Duration,
    prom: &mut Prometheus,
    mut ok: impl FnMut(&Prometheus) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = prom.child.try_wait() {
            panic!(
                "prometheus exited ({status}) waiting for {what}:\n{}",
                prom.log()
            );
        }
        if ok(prom) {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}:\n{}", prom.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn every_panel_query_returns_data_on_a_real_prometheus() {
    let Some((prometheus, promtool)) = tools() else {
        return;
    };
    let started = Instant::now();
    let dir = TempDir::new("dashboards");

    // Synthetic samples: one hour ending a few hours ago (the most recent
    // hours belong to the head block, which backfilling must not overlap).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start = (now - 4 * 3600) / 60 * 60;
    let end = start + SPAN;
    let samples = dir.join("samples.om");
    write_file(&samples, &openmetrics(start));
    let data = dir.join("data");
    run(Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&samples)
        .arg(&data));

    let config = dir.join("prometheus.yml");
    let rules: Vec<String> = rule_files()
        .iter()
        .map(|p| format!("  - {}\n", p.display()))
        .collect();
    write_file(
        &config,
        &format!(
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 1s\nrule_files:\n{}scrape_configs: []\n",
            rules.concat()
        ),
    );
    run(Command::new(&promtool)
        .args(["check", "config"])
        .arg(&config));

    let log = dir.join("prometheus.log");
    let logfile = std::fs::File::create(&log).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(logfile.try_clone().unwrap())
        .stderr(logfile)
        .spawn()
        .expect("start prometheus");
    let mut prom = Prometheus { child, addr, log };
    wait_for("/-/ready", Duration::from_secs(15), &mut prom, |p| {
        http_get(p.addr, "/-/ready").is_ok_and(|(code, _)| code == 200)
    });

    // The backfilled blocks are there.
    let series = prom.api(&format!(
        "/api/v1/series?match[]={}&start={start}&end={end}",
        urlencode("{__name__=~\"moat_.*\"}")
    ));
    let names: std::collections::BTreeSet<&str> = series
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["__name__"].as_str())
        .collect();
    for spec in moat_api::metrics::FAMILIES {
        for m in moat_api::metrics::sample_names(spec) {
            assert!(names.contains(m.as_str()), "{m} not backfilled: {names:?}");
        }
    }

    // The workload variable's query.
    let values = prom.api(&format!(
        "/api/v1/label/workload/values?match[]=moat_forks_total&start={start}&end={end}"
    ));
    let values: Vec<&str> = values
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        values.contains(&"web") && values.contains(&"docker:0123456789ab"),
        "{values:?}"
    );

    // Every panel query, as an instant query at the end of the data, and as
    // the range query Grafana sends for time series panels.
    let dash = dashboard();
    let mut checked = 0;
    for (title, target) in targets(&dash) {
        let expr = substitute(target["expr"].as_str().unwrap());
        let mut exprs = vec![expr.clone()];
        // A fallback to 0 must not hide a query that finds nothing.
        if let Some(left) = expr.strip_suffix(" or vector(0)") {
            exprs.push(left.to_string());
        }
        for q in &exprs {
            let res = prom.api(&format!("/api/v1/query?query={}&time={end}", urlencode(q)));
            let result = res["result"]
                .as_array()
                .unwrap_or_else(|| panic!("{title}: {res}"));
            assert!(!result.is_empty(), "panel {title:?}: no data for {q}");
            if target["range"] == true {
                let res = prom.api(&format!(
                    "/api/v1/query_range?query={}&start={}&end={end}&step=60",
                    urlencode(q),
                    end - 1800
                ));
                let result = res["result"].as_array().unwrap();
                assert!(!result.is_empty(), "panel {title:?}: no range data for {q}");
            }
            checked += 1;
        }
    }
    assert!(checked >= metrics().count(), "only {checked} queries");

    // Every rule loaded, evaluated and healthy; every rule's query valid.
    let mut groups = Value::Null;
    wait_for("rules evaluated", Duration::from_secs(10), &mut prom, |p| {
        groups = p.api("/api/v1/rules")["groups"].clone();
        let rules: Vec<&Value> = groups
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown")
    });
    let rules: Vec<&Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    for r in &rules {
        assert_eq!(r["health"], "ok", "rule not healthy: {r}");
        let q = r["query"].as_str().unwrap();
        prom.api(&format!("/api/v1/query?query={}&time={end}", urlencode(q)));
    }
    for a in ALERTS {
        assert!(
            rules
                .iter()
                .any(|r| r["type"] == "alerting" && r["name"] == *a),
            "alert {a} not loaded"
        );
    }
    assert!(
        rules.iter().filter(|r| r["type"] == "recording").count() >= 5,
        "recording rules not loaded"
    );

    drop(prom);
    eprintln!(
        "{checked} panel queries and {} rules checked in {:.1?}",
        rules.len(),
        started.elapsed()
    );
}

/// The scrape configs next to the rules: promtool checks the static one as
/// it is. Debian's Prometheus is built without Kubernetes service discovery,
/// so `kubernetes_sd_configs` itself cannot be checked here; the Kubernetes
/// config is checked with that block replaced by file discovery of targets
/// carrying the `__meta_kubernetes_*` labels Kubernetes discovery would give,
/// and a real Prometheus applies its relabeling to them: only the running
/// moatd pod's `metrics` port is scraped, as job moatd, with the node's name
/// as `instance` and the cluster's.
#[test]
fn scrape_configs_check_and_kubernetes_targets_are_named_by_node() {
    let Some((prometheus, promtool)) = tools() else {
        return;
    };
    run(Command::new(&promtool)
        .args(["check", "config"])
        .arg(dashboards().join("prometheus-static.yml")));

    let dir = TempDir::new("k8s-scrape");
    let original = std::fs::read_to_string(dashboards().join("prometheus-kubernetes.yml")).unwrap();
    let sd_start = original
        .find("    kubernetes_sd_configs:\n")
        .expect("kubernetes_sd_configs");
    let sd_end = original
        .find("    relabel_configs:\n")
        .expect("relabel_configs");
    let targets = dir.join("targets.json");
    let mut config = format!(
        "{}    file_sd_configs:\n      - files: [{}]\n        refresh_interval: 1s\n{}",
        &original[..sd_start],
        targets.display(),
        &original[sd_end..]
    );
    for rules in ["moat-alerts.yml", "moat-recording.yml"] {
        config = config.replace(
            &format!("  - {rules}\n"),
            &format!("  - {}\n", dashboards().join(rules).display()),
        );
    }
    let config_path = dir.join("prometheus.yml");
    write_file(&config_path, &config);
    run(Command::new(&promtool)
        .args(["check", "config"])
        .arg(&config_path));

    let pod = |name: &str, app: &str, port: &str, phase: &str, node: &str| {
        serde_json::json!({
            "targets": ["127.0.0.1:1"],
            "labels": {
                "__meta_kubernetes_namespace": "moat-system",
                "__meta_kubernetes_pod_name": name,
                "__meta_kubernetes_pod_label_app_kubernetes_io_name": app,
                "__meta_kubernetes_pod_container_port_name": port,
                "__meta_kubernetes_pod_phase": phase,
                "__meta_kubernetes_pod_node_name": node,
            }
        })
    };
    let groups = serde_json::json!([
        pod("moatd-x1", "moatd", "metrics", "Running", "node-a"),
        pod("moatd-x1", "moatd", "other", "Running", "node-a"),
        pod("moatd-x2", "moatd", "metrics", "Pending", "node-b"),
        pod("web-1", "web", "metrics", "Running", "node-a"),
    ]);
    write_file(&targets, &groups.to_string());

    let log = dir.join("prometheus.log");
    let logfile = std::fs::File::create(&log).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(logfile.try_clone().unwrap())
        .stderr(logfile)
        .spawn()
        .expect("start prometheus");
    let mut prom = Prometheus { child, addr, log };
    wait_for("/-/ready", Duration::from_secs(15), &mut prom, |p| {
        http_get(p.addr, "/-/ready").is_ok_and(|(code, _)| code == 200)
    });
    let mut found = Value::Null;
    wait_for(
        "targets discovered",
        Duration::from_secs(20),
        &mut prom,
        |p| {
            found = p.api("/api/v1/targets");
            found["activeTargets"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
                && found["droppedTargets"]
                    .as_array()
                    .is_some_and(|d| d.len() == 3)
        },
    );
    let active = found["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{found:#}");
    assert_eq!(
        active[0]["labels"],
        serde_json::json!({
            "instance": "node-a",
            "job": "moatd",
            "cluster": "example",
            "pod": "moatd-x1",
        })
    );
}
