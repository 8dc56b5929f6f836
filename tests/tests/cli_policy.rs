//! `moat policy ...` and the node policy in `moat run`, driven as a user
//! drives them: the built binary, real files, exit codes, exact lines. The
//! `moat run` tests launch real workloads (root, pids cgroup) with a
//! temporary policy file (`MOAT_POLICY_FILE`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use moat_tests::moatd::{pids_on_v1, pids_on_v2, CgroupParent, TempDir};
use moat_tests::{binary, workspace_root};

fn moat(args: &[&str]) -> Output {
    Command::new(binary("moat"))
        .args(args)
        .output()
        .expect("run moat")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn fixture(rel: &str) -> String {
    workspace_root()
        .join("agent/policy/tests")
        .join(rel)
        .display()
        .to_string()
}

#[test]
fn check_summarises_a_valid_file_and_exits_0() {
    let dir = TempDir::new("policy-check");
    let p = write(
        &dir,
        "policy.toml",
        "extends = \"baseline\"\n\n[[exception]]\nrule = \"capabilities\"\nusers = [\"ci\"]\ncapabilities = [\"net_admin\"]\nreason = \"tests\"\n",
    );
    let o = moat(&["policy", "check", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!(
            "policy:      {} (extends the baseline)\nrules:       13\n",
            p.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("  host-userns             host-namespaces (user)\n"),
        "{out}"
    );
    assert!(
        out.contains("exceptions:  1\n  rule capabilities: users ci may CAP_NET_ADMIN (tests)\n"),
        "{out}"
    );
}

#[test]
fn check_names_the_file_key_and_reason_and_exits_1() {
    let dir = TempDir::new("policy-check-bad");
    let cases = [
        (
            "[[rule]]\nname = \"a\"\ncheck = \"privileged\"\nname = \"b\"\nmessage = \"m\"\n",
            "4:1: rule[0].name: duplicate key",
        ),
        (
            "[[rule]]\nname = \"a\"\ncheck = \"privileged\"\nmesage = \"m\"\n",
            "1:1: rule[0].message: missing (required)",
        ),
        (
            "extends = \"baseline\"\n[[exception]]\nrule = \"privileged\"\nuser = [\"x\"]\n",
            "4:1: exception[0].user: unknown key (did you mean users?)",
        ),
        ("# empty\n", "1:1: rule: the policy defines no rules"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = write(&dir, &format!("p{i}.toml"), text);
        let o = moat(&["policy", "check", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{text}");
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!("moat: error: {}:{want}", p.display())),
            "{text}: {err}"
        );
    }
    let o = moat(&["policy", "check", "/nonexistent/policy.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "moat: error: /nonexistent/policy.toml: no such file\n"
    );
}

#[test]
fn eval_prints_the_decision_and_exits_3_on_deny() {
    let o = moat(&[
        "policy",
        "eval",
        "baseline",
        "--request",
        &fixture("requests/create-privileged.json"),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "decision:  deny\nrule:      privileged\nendpoint:  containers/create\n\
         message:   privileged containers and privileged exec are not allowed on this node \
         (HostConfig.Privileged: true)\n"
    );
    let o = moat(&[
        "policy",
        "eval",
        "baseline",
        "--request",
        &fixture("requests/create-plain.json"),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "decision:  allow\nrule:      -\nendpoint:  containers/create\n"
    );
}

#[test]
fn eval_reads_stdin_and_inspect_output_with_a_user() {
    let dir = TempDir::new("policy-eval");
    let p = write(
        &dir,
        "policy.toml",
        "extends = \"baseline\"\n[[exception]]\nrule = \"privileged\"\nusers = [\"admin\"]\n",
    );
    let run = |args: &[&str], input: &str| {
        let mut c = Command::new(binary("moat"));
        c.args(args).stdin(std::fs::File::open(input).unwrap());
        c.output().unwrap()
    };
    let inspect = fixture("inspect/inspect-privileged.json");
    let o = run(
        &["policy", "eval", p.to_str().unwrap(), "--inspect", "-"],
        &inspect,
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stdout(&o).contains("endpoint:  containers/{id}/start\n"));
    let o = run(
        &[
            "policy",
            "eval",
            p.to_str().unwrap(),
            "--inspect",
            "-",
            "--user",
            "admin",
        ],
        &inspect,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // `docker inspect` prints an array of one: accepted as well.
    let array = write(
        &dir,
        "array.json",
        &format!("[{}]", std::fs::read_to_string(&inspect).unwrap()),
    );
    let o = moat(&[
        "policy",
        "eval",
        "baseline",
        "--inspect",
        array.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let bad = write(&dir, "bad.json", "{\"RequestBody\": 1}");
    let o = moat(&[
        "policy",
        "eval",
        "baseline",
        "--request",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not an authorization request"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn show_baseline_is_a_file_that_checks_and_decides_like_the_baseline() {
    let dir = TempDir::new("policy-show");
    let o = moat(&["policy", "show", "baseline"]);
    assert!(o.status.success());
    let p = write(&dir, "baseline.toml", &stdout(&o));
    let o = moat(&["policy", "check", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("rules:       13\n"));
    let o = moat(&[
        "policy",
        "eval",
        p.to_str().unwrap(),
        "--request",
        &fixture("requests/plugin-disable.json"),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stdout(&o).contains("rule:      plugins\n"));
    let o = moat(&["policy", "show", "strict"]);
    assert_eq!(o.status.code(), Some(1));
}

/// A private state dir and cgroup parent for real launches.
struct RunEnv {
    parent: CgroupParent,
    dir: TempDir,
}

impl RunEnv {
    fn new(tag: &str) -> Option<RunEnv> {
        if !moat_tests::is_root() {
            eprintln!("SKIP: moat run needs root");
            return None;
        }
        if !pids_on_v1() && !pids_on_v2() {
            eprintln!("SKIP: no pids cgroup controller on this machine");
            return None;
        }
        let dir = TempDir::new(&format!("policy-run-{tag}"));
        std::fs::write(dir.join("subuid"), "moat:300000:655360\n").unwrap();
        std::fs::write(dir.join("subgid"), "moat:300000:655360\n").unwrap();
        Some(RunEnv {
            parent: CgroupParent(format!("moat-t-policy-{tag}-{}", std::process::id())),
            dir,
        })
    }

    fn run(&self, policy: &Path, args: &[&str]) -> Output {
        Command::new(binary("moat"))
            .env("MOAT_POLICY_FILE", policy)
            .env("MOAT_STATE_DIR", self.dir.join("state"))
            .env("MOAT_SUBUID_FILE", self.dir.join("subuid"))
            .env("MOAT_SUBGID_FILE", self.dir.join("subgid"))
            .args(["run", "--cgroup-parent", &self.parent.0])
            .args(args)
            .output()
            .expect("run moat")
    }

    fn no_workloads_left(&self) {
        let records = self.dir.join("state/workloads");
        let left = std::fs::read_dir(&records).map_or(0, |d| d.count());
        assert_eq!(left, 0, "state records left in {}", records.display());
    }
}

const RUN_POLICY: &str = r#"
[[rule]]
name = "no-unconfined"
check = "seccomp-unconfined"
message = "moat run needs a seccomp filter here"

[[rule]]
name = "caps"
check = "capabilities"
allowed = ["NET_ADMIN"]
message = "no capabilities beyond Docker's defaults"

[[rule]]
name = "no-unlimited-pids"
check = "pids-unlimited"
message = "workloads need a pids limit"
"#;

#[test]
fn moat_run_is_refused_with_125_and_the_rule_name() {
    let Some(env) = RunEnv::new("refuse") else {
        return;
    };
    let policy = write(&env.dir, "policy.toml", RUN_POLICY);
    let marker = env.dir.join("ran");
    let touch = [
        "--",
        "/bin/sh",
        "-c",
        "echo ran > \"$0\"",
        marker.to_str().unwrap(),
    ];
    let allow_all = write(
        &env.dir,
        "allow.json",
        r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#,
    );
    for (flags, rule, what) in [
        (
            &["--seccomp-profile", "unconfined"][..],
            "no-unconfined",
            "--seccomp-profile",
        ),
        (
            &["--seccomp-profile", allow_all.to_str().unwrap()][..],
            "no-unconfined",
            "a profile that allows by default",
        ),
        (
            &["--cap-add", "SYS_ADMIN"][..],
            "caps",
            "--cap-add: adds CAP_SYS_ADMIN",
        ),
        (
            &["--pids-limit", "unlimited"][..],
            "no-unlimited-pids",
            "--pids-limit: unlimited",
        ),
    ] {
        let o = env.run(&policy, &[flags, &touch[..]].concat());
        assert_eq!(o.status.code(), Some(125), "{flags:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!(
                "moat: error: refused by the node policy {}: rule {rule:?}: ",
                policy.display()
            )),
            "{err}"
        );
        assert!(err.contains(what), "{err}");
        assert!(!marker.exists(), "{flags:?}: the workload ran");
        env.no_workloads_left();
    }
    // What the policy allows still runs, under the same policy.
    let o = env.run(
        &policy,
        &[&["--cap-add", "NET_ADMIN"][..], &touch[..]].concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
}

#[test]
fn moat_run_with_a_policy_that_requires_a_user_namespace() {
    let Some(env) = RunEnv::new("userns") else {
        return;
    };
    let policy = write(
        &env.dir,
        "policy.toml",
        "[[rule]]\nname = \"mapped-userns\"\ncheck = \"host-namespaces\"\nnamespaces = [\"user\"]\nmessage = \"use --userns auto\"\n",
    );
    let o = env.run(&policy, &["--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains(
            "rule \"mapped-userns\": use --userns auto (--userns: host (no user namespace))"
        ),
        "{}",
        stderr(&o)
    );
    let o = env.run(&policy, &["--userns", "auto", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn moat_run_without_a_policy_file_keeps_todays_behaviour_and_a_broken_one_refuses() {
    let Some(env) = RunEnv::new("nofile") else {
        return;
    };
    let absent = env.dir.join("absent.toml");
    let o = env.run(
        &absent,
        &["--seccomp-profile", "unconfined", "--", "/bin/true"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let broken = write(&env.dir, "broken.toml", "[[rule]]\nname = \"x\"\n");
    let o = env.run(&broken, &["--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        format!(
            "moat: error: the node policy does not load, so nothing runs: {}:1:1: rule[0].check: missing (required)\n",
            broken.display()
        )
    );
    env.no_workloads_left();
}
