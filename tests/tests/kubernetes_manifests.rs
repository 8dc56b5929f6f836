//! The Kubernetes manifests (issue 16, "Fleet"): `deploy/kubernetes/`.
//!
//! What is checked:
//! - `kubernetes-validate --strict` (PyPI; `scripts/setup.sh` installs it in
//!   `/opt/moat-tools`) validates the Namespace, ServiceAccount, ConfigMap and
//!   DaemonSet against the API schemas of Kubernetes 1.29 and 1.37: field
//!   names and types, required fields, no unknown field (a typo is shown to
//!   fail).
//! - The least privilege, read from the manifests: not privileged, no
//!   privilege escalation, every capability dropped and only the six moatd
//!   needs added, read-only root file system, host PID namespace but not the
//!   host network or IPC, no service account token and no RBAC object; the
//!   mounts moatd needs (bpffs writable, tracefs, BTF, the cgroup file
//!   system and the kubelet's pod folders read-only), resource requests and
//!   limits, a readiness probe on `/metrics`.
//! - The ConfigMap's `moatd.toml` is accepted by the real `moatd
//!   --check-config`, and the paths it names are mounted.
//! - The PodMonitor (a CRD: kubernetes-validate has no schema for it, and
//!   the Operator's CRD schema is not here) is checked by hand: its selector
//!   selects the DaemonSet's pods, its port is the container's, its
//!   relabelings name `instance` by node and `job` moatd.
//!
//! Not checked: admission (Pod Security, quotas), scheduling and the real
//! start of the pod on a node (no cluster here; `kubectl --dry-run=server`
//! needs one), and whether a given container runtime's seccomp or AppArmor
//! defaults would refuse moatd.

use std::path::{Path, PathBuf};
use std::process::Command;

use moat_tests::workspace_root;
use serde_json::Value;

fn manifests() -> PathBuf {
    workspace_root().join("deploy/kubernetes")
}

/// The virtualenv with kubernetes-validate (and PyYAML).
fn tools() -> Option<PathBuf> {
    let venv = std::env::var_os("MOAT_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/moat-tools"));
    if venv.join("bin/kubernetes-validate").exists() {
        Some(venv)
    } else {
        eprintln!(
            "SKIP: kubernetes-validate is not installed in {} (scripts/setup.sh)",
            venv.display()
        );
        None
    }
}

/// The YAML documents of `file`, as JSON.
fn documents(venv: &Path, file: &Path) -> Vec<Value> {
    let o = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn validate(venv: &Path, version: &str, file: &Path) -> (bool, String) {
    let o = Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "-k", version])
        .arg(file)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let Some(venv) = tools() else { return };
    let file = manifests().join("moatd.yaml");
    for version in ["1.29.0", "1.37.0"] {
        let (ok, out) = validate(&venv, version, &file);
        assert!(ok, "kubernetes-validate {version}:\n{out}");
        let short = version.trim_end_matches(".0");
        for resource in [
            "namespace/moat-system",
            "serviceaccount/moatd",
            "configmap/moatd",
            "daemonset/moatd",
        ] {
            assert!(
                out.contains(&format!(
                    "passed for resource {resource} against version {short}"
                )),
                "{resource} not validated against {version}:\n{out}"
            );
        }
    }
    // The validation can fail: a misspelt field is refused.
    let dir = moat_tests::moatd::TempDir::new("k8s");
    let typo = dir.join("typo.yaml");
    std::fs::write(
        &typo,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("hostPID: true", "hostPid: true"),
    )
    .unwrap();
    let (ok, out) = validate(&venv, "1.37.0", &typo);
    assert!(!ok && out.contains("hostPid"), "a typo passed:\n{out}");
}

#[test]
fn daemonset_runs_moatd_with_least_privilege_and_what_it_needs() {
    let Some(venv) = tools() else { return };
    let docs = documents(&venv, &manifests().join("moatd.yaml"));
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"],
        "and no Role, ClusterRole or binding: moatd never calls the API server"
    );
    assert_eq!(
        kind(&docs, "ServiceAccount")["automountServiceAccountToken"],
        false
    );

    let ds = kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "moatd");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["hostPID"], true);
    assert_ne!(pod["hostNetwork"], true);
    assert_ne!(pod["hostIPC"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mut added: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    added.sort_unstable();
    assert_eq!(
        added,
        [
            "BPF",
            "DAC_READ_SEARCH",
            "PERFMON",
            "SYS_ADMIN",
            "SYS_PTRACE",
            "SYS_RESOURCE"
        ]
    );

    for key in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][key][resource].is_string(),
                "resources.{key}.{resource}"
            );
        }
    }
    assert_eq!(
        c["resources"]["limits"]["memory"], "256Mi",
        "as the unit's MemoryMax"
    );
    let port = &c["ports"][0];
    assert_eq!(
        (port["name"].as_str(), port["containerPort"].as_i64()),
        (Some("metrics"), Some(9740))
    );
    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(
        (probe["path"].as_str(), probe["port"].as_str()),
        (Some("/metrics"), Some("metrics"))
    );

    // Mounts: (mount path, host path, read-only).
    let volumes = pod["volumes"].as_array().unwrap();
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["hostPath"]["path"].as_str())
    };
    let mounts: Vec<(String, Option<&str>, bool)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_owned(),
                host_path(m["name"].as_str().unwrap()),
                m["readOnly"] == true,
            )
        })
        .collect();
    for (path, host, read_only) in [
        ("/sys/fs/bpf", "/sys/fs/bpf", false),
        ("/sys/kernel/tracing", "/sys/kernel/tracing", true),
        ("/sys/kernel/btf", "/sys/kernel/btf", true),
        ("/host/sys/fs/cgroup", "/sys/fs/cgroup", true),
        ("/var/log/pods", "/var/log/pods", true),
    ] {
        assert!(
            mounts.contains(&(path.to_owned(), Some(host), read_only)),
            "{host} at {path} (read-only: {read_only}) in {mounts:?}"
        );
    }

    // The configuration: accepted by moatd, its paths mounted.
    let toml = kind(&docs, "ConfigMap")["data"]["moatd.toml"]
        .as_str()
        .unwrap();
    let dir = moat_tests::moatd::TempDir::new("k8s-config");
    let config = dir.join("moatd.toml");
    std::fs::write(&config, toml).unwrap();
    let o = Command::new(moat_tests::binary("moatd"))
        .arg("--check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(shown.contains("\"/host/sys/fs/cgroup\""), "{shown}");
    assert!(shown.contains("\"/var/log/pods\""), "{shown}");
    assert!(shown.contains("0.0.0.0:9740"), "{shown}");
    assert_eq!(
        c["args"],
        serde_json::json!(["--config", "/etc/moat/moatd.toml"])
    );
    assert!(mounts
        .iter()
        .any(|(path, _, ro)| path == "/etc/moat" && *ro));
}

#[test]
fn podmonitor_scrapes_the_daemonsets_pods_by_node() {
    let Some(venv) = tools() else { return };
    let docs = documents(&venv, &manifests().join("moatd.yaml"));
    let ds = kind(&docs, "DaemonSet");
    let pm_docs = documents(&venv, &manifests().join("podmonitor.yaml"));
    let pm = kind(&pm_docs, "PodMonitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["metadata"]["namespace"], ds["metadata"]["namespace"]);
    let pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "selector {k}={v}");
    }
    assert_eq!(
        pm["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!([ds["metadata"]["namespace"]])
    );
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["path"], "/metrics");
    let relabelings = endpoint["relabelings"].as_array().unwrap();
    assert!(relabelings.iter().any(|r| r["targetLabel"] == "instance"
        && r["sourceLabels"] == serde_json::json!(["__meta_kubernetes_pod_node_name"])));
    assert!(relabelings
        .iter()
        .any(|r| r["targetLabel"] == "job" && r["replacement"] == "moatd"));
}
