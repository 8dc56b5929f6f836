//! `moat run --record-profile` end to end (issue 15): the real kernel, a real
//! moatd (which records in its `sys_enter` program and pins the maps, or,
//! in a tier that attaches no `sys_enter`, pins a record-only program that
//! `moat` attaches while it records), and workloads compiled from
//! `tests/tests/record/*.c`.
//!
//! The reference for "exactly the syscalls made" is strace's own list for the
//! same command, traced under the same base profile (so that the calls the
//! base refuses, which strace sees before seccomp does and which never run,
//! can be told apart: they are the base profile's refusals the written profile
//! keeps).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use moat_runtime::record::bpf::{map_users, PinnedMap};
use moat_tests::moatd::{moat, pids_on_v1, pids_on_v2, Moatd, Options, TempDir};

/// The record-only program's name (`moat_common::RECORD_ENTER_PROGRAM`).
const RECORD_ENTER_PROGRAM: &str = "moat_rec_enter";

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<&'static str> {
    if !moat_tests::is_root() {
        return Some("moatd and moat run need root");
    }
    if !cfg!(target_arch = "x86_64") {
        return Some("the workloads use x86_64 and i386 syscalls");
    }
    if !pids_on_v1() && !pids_on_v2() {
        return Some("no pids cgroup controller on this machine");
    }
    if std::env::var_os(WORKLOADS_ENV).is_none() && moat_tests::which("gcc").is_none() {
        return Some("gcc is needed to build the workloads (scripts/setup.sh installs it)");
    }
    if moat_tests::which("strace").is_none() {
        return Some("strace is needed for the reference list (scripts/setup.sh installs it)");
    }
    None
}

macro_rules! skip_unless_able {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("SKIP: {reason}");
            return;
        }
    };
}

/// A directory of the workloads compiled beforehand (`workload`,
/// `workload-static`, `helper`), for machines without a compiler (the
/// kernel lab's guests).
const WORKLOADS_ENV: &str = "MOAT_TEST_RECORD_WORKLOADS";

/// The compiled workloads, in a world-readable temporary directory.
struct Programs {
    dir: TempDir,
}

impl Programs {
    fn build() -> Programs {
        let dir = TempDir::new("rec-prog");
        if let Some(prebuilt) = std::env::var_os(WORKLOADS_ENV) {
            for name in ["workload", "helper", "workload-static"] {
                std::fs::copy(Path::new(&prebuilt).join(name), dir.join(name)).unwrap();
            }
            return Programs { dir };
        }
        let src = moat_tests::workspace_root().join("tests/tests/record");
        for (name, flags) in [
            ("workload", &["-pthread"][..]),
            ("helper", &[][..]),
            ("workload-static", &["-pthread", "-static"][..]),
        ] {
            let file = if name == "helper" {
                "helper.c"
            } else {
                "workload.c"
            };
            let o = Command::new("gcc")
                .args(["-O1", "-o"])
                .arg(dir.join(name))
                .args(flags)
                .arg(src.join(file))
                .output()
                .unwrap();
            assert!(o.status.success(), "gcc {name}: {}", err(&o));
        }
        Programs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null()).output().unwrap()
}

/// The names a profile allows, per architecture (from its `recorded on`
/// comments), and the names it refuses as the base profile does.
struct Written {
    per_arch: std::collections::BTreeMap<String, BTreeSet<String>>,
    base_refusals: BTreeSet<String>,
    json: serde_json::Value,
}

fn read_profile(path: &Path) -> Written {
    let text = std::fs::read_to_string(path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut per_arch = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    let mut base_refusals = BTreeSet::new();
    for rule in json["syscalls"].as_array().unwrap() {
        let names = rule["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string());
        let comment = rule["comment"].as_str().unwrap_or_default();
        if rule["action"] == "SCMP_ACT_ALLOW" || comment.starts_with("argument rule") {
            let arches = comment.rsplit("recorded on ").next().unwrap();
            for arch in arches.split(", ") {
                per_arch
                    .entry(arch.to_string())
                    .or_default()
                    .extend(names.clone());
            }
        } else {
            base_refusals.extend(names);
        }
    }
    Written {
        per_arch,
        base_refusals,
        json,
    }
}

/// strace's list of syscall names, for `cmd` traced with `-f` under `moat
/// run` (the same base profile), and the names it saw fail with ENOSYS.
fn strace_names(agent: &Moatd, name: &str, cmd: &[&str], scratch: &TempDir) -> BTreeSet<String> {
    let trace = scratch.join(&format!("{name}.strace"));
    let trace_s = trace.display().to_string();
    let mut args = vec!["strace", "-f", "-qq", "-o", &trace_s];
    args.extend_from_slice(cmd);
    let o = run(&mut agent.run_cmd(name, &[], &args));
    assert!(o.status.success(), "strace run: {}", err(&o));
    let text = std::fs::read_to_string(&trace).unwrap();
    text.lines()
        .filter_map(|l| {
            // "PID name(args...) = ret", or "PID <... name resumed>".
            let rest = l.split_once(' ')?.1.trim_start();
            if rest.starts_with('<') || rest.starts_with("+++") || rest.starts_with("---") {
                return None;
            }
            let name = rest.split('(').next()?;
            (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                .then(|| name.to_string())
        })
        .collect()
}

/// Records `cmd` into `profile`; returns moat's output.
fn record(agent: &Moatd, name: &str, profile: &Path, extra: &[&str], cmd: &[&str]) -> Output {
    let p = profile.display().to_string();
    let mut args = vec!["--record-profile", &p];
    args.extend_from_slice(extra);
    run(&mut agent.run_cmd(name, &args, cmd))
}

fn metrics(agent: &Moatd) -> moat_api::exposition::Exposition {
    moat_api::exposition::Exposition::parse(&agent.get_metrics().expect("GET /metrics"))
        .expect("a text exposition")
}

fn sum_of(m: &moat_api::exposition::Exposition, family: &str, workload: &str) -> f64 {
    m.family(family)
        .filter(|s| s.label("workload") == Some(workload))
        .map(|s| s.value)
        .sum()
}

/// One denial series of a workload: (syscall, action, errno, count).
type Denial = (String, String, String, u64);

/// Waits until moatd has attributed `execs` execs to `workload` (so its
/// counters for it are complete), then returns its denials.
fn denials_after(agent: &Moatd, workload: &str, execs: f64) -> BTreeSet<Denial> {
    let start = Instant::now();
    loop {
        let m = metrics(agent);
        if sum_of(&m, "moat_execs_total", workload) >= execs {
            // A poll interval (100 ms) and more, for a late denial to show.
            std::thread::sleep(Duration::from_millis(400));
            let m = metrics(agent);
            return m
                .family("moat_seccomp_denials_total")
                .filter(|s| s.label("workload") == Some(workload))
                .map(|s| {
                    let l = |k: &str| s.label(k).unwrap_or_default().to_string();
                    (l("syscall"), l("action"), l("errno"), s.value as u64)
                })
                .collect();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "moatd never saw {execs} execs of {workload}:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn records_exactly_the_syscalls_strace_lists_and_the_profile_replays() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let progs = Programs::build();
    let agent = Moatd::start("rec-exact");
    let scratch = TempDir::new("rec-exact");
    let (w, h) = (progs.path("workload"), progs.path("helper"));
    let cmd = [w.as_str(), "plain", h.as_str()];

    let profile = scratch.join("recorded.json");
    let o = record(&agent, "rec-plain", &profile, &[], &cmd);
    assert!(o.status.success(), "recording run: {}", err(&o));
    assert!(err(&o).contains("moat: recorded "), "{}", err(&o));
    let written = read_profile(&profile);
    assert_eq!(written.json["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(written.json["defaultErrnoRet"], 1);
    assert_eq!(
        written.json["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64"])
    );
    let comment = written.json["comment"].as_str().unwrap();
    assert!(
        comment.contains("from `") && comment.contains("plain"),
        "{comment}"
    );
    let recorded = written.per_arch["SCMP_ARCH_X86_64"].clone();

    let traced = strace_names(&agent, "rec-strace", &cmd, &scratch);
    // strace sees clone3 (the base refuses it with ENOSYS, glibc then uses
    // clone): the written profile keeps that refusal, and never allows it.
    assert!(traced.contains("clone3"), "{traced:?}");
    assert!(written.base_refusals.contains("clone3"));
    let expected: BTreeSet<String> = traced.difference(&written.base_refusals).cloned().collect();
    assert_eq!(
        recorded, expected,
        "recorded (left) against strace's list (right)"
    );
    // What each part of the workload alone makes: the thread (getcwd),
    // the fork's parent (wait4), the exec'd helper (sysinfo).
    for name in [
        "getcwd", "clone", "wait4", "execve", "sysinfo", "exit", "write",
    ] {
        assert!(recorded.contains(name), "{name} missing: {recorded:?}");
    }

    // The base profile's own refusals (clone3 → ENOSYS, which glibc's
    // pthread_create meets before it falls back to clone) are denials under
    // any profile that keeps them, the base included: the replay must have
    // exactly those and no other.
    let base = run(&mut agent.run_cmd("rec-base", &[], &cmd));
    assert!(base.status.success(), "base run: {}", err(&base));
    let base_denials = denials_after(&agent, "rec-base", 2.0);
    assert!(
        base_denials
            .iter()
            .all(|d| written.base_refusals.contains(&d.0)),
        "{base_denials:?}"
    );

    // Replay: the same command under the recorded profile.
    let p = profile.display().to_string();
    let o = run(&mut agent.run_cmd("rec-replay", &["--seccomp-profile", &p], &cmd));
    assert!(o.status.success(), "replay: {}", err(&o));
    let denials = denials_after(&agent, "rec-replay", 2.0);
    assert_eq!(
        denials, base_denials,
        "the replay's denials (left) are not the base profile's (right)"
    );
    let beyond_base: Vec<&Denial> = denials
        .iter()
        .filter(|d| !written.base_refusals.contains(&d.0))
        .collect();
    assert!(beyond_base.is_empty(), "{beyond_base:?}");

    // One extra syscall: EPERM, and exactly one more denial counted.
    let extra = [w.as_str(), "extra", h.as_str()];
    let o = run(&mut agent.run_cmd("rec-extra", &["--seccomp-profile", &p], &extra));
    assert!(o.status.success(), "extra: {} {}", err(&o), o.status);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "done\ngetcpu EPERM\n");
    if moat_tests::moatd::fatal_tier_forced() {
        eprintln!("the fatal tier counts no ERRNO refusal: the count of getcpu's is left out");
        return;
    }
    let denials = denials_after(&agent, "rec-extra", 2.0);
    let mut want = base_denials.clone();
    want.insert(("getcpu".into(), "errno".into(), "EPERM".into(), 1));
    assert_eq!(denials, want);
}

#[test]
fn int80_is_recorded_under_x86_and_allowed_on_replay() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let progs = Programs::build();
    let agent = Moatd::start("rec-i386");
    let scratch = TempDir::new("rec-i386");
    let w = progs.path("workload");
    let profile = scratch.join("i386.json");
    let o = record(&agent, "rec-int80", &profile, &[], &[&w, "int80"]);
    assert!(o.status.success(), "recording run: {}", err(&o));
    let written = read_profile(&profile);
    assert_eq!(
        written.json["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
    );
    // The only i386 call is getpid (int 0x80, eax 20); getpid through
    // `syscall` is recorded separately, under x86_64.
    assert_eq!(
        written.per_arch["SCMP_ARCH_X86"],
        BTreeSet::from(["getpid".to_string()])
    );
    assert!(written.per_arch["SCMP_ARCH_X86_64"].contains("getpid"));
    assert!(err(&o).contains("x86: 1"), "{}", err(&o));

    let p = profile.display().to_string();
    let o = run(&mut agent.run_cmd(
        "rec-int80-replay",
        &["--seccomp-profile", &p],
        &[&w, "int80"],
    ));
    assert!(o.status.success(), "replay: {} {}", err(&o), o.status);
    let denials = denials_after(&agent, "rec-int80-replay", 1.0);
    assert!(denials.is_empty(), "{denials:?}");
    // Without the i386 rule, the same call is refused (one denial, i386).
    let mut json = written.json.clone();
    json["architectures"] = serde_json::json!(["SCMP_ARCH_X86_64"]);
    let x64_only = scratch.join("x86_64-only.json");
    std::fs::write(&x64_only, json.to_string()).unwrap();
    let o = run(&mut agent.run_cmd(
        "rec-int80-x64only",
        &["--seccomp-profile", &x64_only.display().to_string()],
        &[&w, "int80"],
    ));
    assert!(
        !o.status.success(),
        "int 0x80 allowed without SCMP_ARCH_X86"
    );
}

#[test]
fn a_workload_exiting_at_once_is_recorded_completely() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let progs = Programs::build();
    let agent = Moatd::start("rec-quick");
    let scratch = TempDir::new("rec-quick");
    let w = progs.path("workload-static");
    // How long the workload lives: from before its execve to its exit,
    // measured outside moat (the best of 20).
    let lifetime = (0..20)
        .map(|_| {
            let t = Instant::now();
            let s = Command::new(&w).arg("quick").status().unwrap();
            assert!(s.success());
            t.elapsed()
        })
        .min()
        .unwrap();
    eprintln!("the static workload lives {lifetime:?} (spawn to exit)");
    assert!(lifetime < Duration::from_millis(2), "{lifetime:?}");

    let traced = strace_names(&agent, "rec-quick-strace", &[&w, "quick"], &scratch);
    for i in 0..20 {
        let profile = scratch.join(&format!("quick-{i}.json"));
        let o = record(
            &agent,
            &format!("rec-quick-{i}"),
            &profile,
            &[],
            &[&w, "quick"],
        );
        assert!(o.status.success(), "recording run {i}: {}", err(&o));
        let written = read_profile(&profile);
        let expected: BTreeSet<String> =
            traced.difference(&written.base_refusals).cloned().collect();
        assert_eq!(written.per_arch["SCMP_ARCH_X86_64"], expected, "run {i}");
        assert!(expected.contains("execve") && expected.contains("uname"));
    }
}

#[test]
fn without_a_running_moatd_the_command_does_not_run() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let scratch = TempDir::new("rec-noagent");
    let marker = scratch.join("ran");
    let profile = scratch.join("p.json");
    let touch = format!("echo > {}", marker.display());

    // No pins at all.
    let o = run(moat()
        .env("MOAT_STATE_DIR", scratch.join("state"))
        .env("MOAT_BPF_DIR", "/sys/fs/bpf/moat-t-nonexistent")
        .args(["run", "--record-profile"])
        .arg(&profile)
        .args(["--", "sh", "-c", &touch]));
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("start moatd"), "{}", err(&o));
    assert!(!marker.exists() && !profile.exists());

    // Pins left by a moatd that has stopped and detached its programs (a
    // moatd that keeps them pinned, the default, leaves them recording: see
    // moatd_restart.rs).
    let mut agent = Moatd::start_with(
        "rec-stale",
        &Options {
            config: "[kernel]\nkeep_pinned = false\n".to_owned(),
            ..Options::default()
        },
    );
    agent.signal(libc::SIGTERM);
    let start = Instant::now();
    while agent.try_wait().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(agent.bpf_dir.join("RECORD_SYSCALLS").exists());
    let o = run(agent
        .moat()
        .args(["run", "--record-profile"])
        .arg(&profile)
        .args(["--", "sh", "-c", &touch]));
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(
        err(&o).contains("no attached program uses them") && err(&o).contains("start moatd"),
        "{}",
        err(&o)
    );
    assert!(!marker.exists() && !profile.exists());
}

#[test]
fn record_mode_merge_makes_the_union_of_runs() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let progs = Programs::build();
    let agent = Moatd::start("rec-merge");
    let scratch = TempDir::new("rec-merge");
    let (w, ws) = (progs.path("workload"), progs.path("workload-static"));
    let (one, two, merged) = (
        scratch.join("one.json"),
        scratch.join("two.json"),
        scratch.join("merged.json"),
    );
    for (name, file, mode, cmd) in [
        ("rec-m1", &one, "overwrite", [w.as_str(), "int80"]),
        ("rec-m2", &two, "overwrite", [ws.as_str(), "quick"]),
        ("rec-m3", &merged, "overwrite", [w.as_str(), "int80"]),
        ("rec-m4", &merged, "merge", [ws.as_str(), "quick"]),
    ] {
        let o = record(&agent, name, file, &["--record-mode", mode], &cmd);
        assert!(o.status.success(), "{name}: {}", err(&o));
    }
    let (one, two, merged) = (
        read_profile(&one),
        read_profile(&two),
        read_profile(&merged),
    );
    let mut union = one.per_arch.clone();
    for (arch, names) in two.per_arch {
        union.entry(arch).or_default().extend(names);
    }
    assert_eq!(merged.per_arch, union);
    assert_eq!(
        merged.json["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
    );
    assert!(
        merged.json["comment"]
            .as_str()
            .unwrap()
            .contains("merged with the profile that was there"),
        "{}",
        merged.json["comment"]
    );

    // A merge target that is not a profile: refused before anything runs.
    let bad = scratch.join("bad.json");
    std::fs::write(&bad, "{\"defaultAction\": 1}").unwrap();
    let marker = scratch.join("ran");
    let touch = format!("echo > {}", marker.display());
    let o = record(
        &agent,
        "rec-m5",
        &bad,
        &["--record-mode", "merge"],
        &["sh", "-c", &touch],
    );
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("bad.json"), "{}", err(&o));
    assert!(!marker.exists());
    assert_eq!(
        std::fs::read_to_string(&bad).unwrap(),
        "{\"defaultAction\": 1}"
    );
}

/// A private dockerd (vfs storage, no bridge, no iptables) with a busybox
/// image `bb:latest`; stopped on drop.
struct Dockerd {
    child: std::process::Child,
    host: String,
    dir: TempDir,
}

impl Dockerd {
    fn start() -> Option<Dockerd> {
        let (Some(dockerd), Some(_), Some(busybox)) = (
            moat_tests::which("dockerd"),
            moat_tests::which("docker"),
            moat_tests::which("busybox"),
        ) else {
            eprintln!("SKIP: dockerd, docker or busybox is not installed");
            return None;
        };
        let dir = TempDir::new("rec-dockerd");
        let host = format!("unix://{}", dir.join("docker.sock").display());
        let child = Command::new(dockerd)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver=vfs", "--host", &host, "--data-root"])
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dockerd.log")).unwrap())
            .spawn()
            .expect("start dockerd");
        let d = Dockerd { child, host, dir };
        let start = Instant::now();
        while !d.docker(&["version"]).status.success() {
            assert!(start.elapsed() < Duration::from_secs(60), "dockerd not up");
            std::thread::sleep(Duration::from_millis(200));
        }
        let root = d.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "ls", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = d.dir.join("rootfs.tar");
        assert!(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success());
        let o = d.docker(&["import", tar.to_str().unwrap(), "bb:latest"]);
        assert!(o.status.success(), "docker import: {}", err(&o));
        Some(d)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", &self.host);
        c
    }

    fn docker(&self, args: &[&str]) -> Output {
        run(self.cmd().args(args))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_docker_container_is_recorded_through_moatd_and_its_profile_runs_it_under_docker() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let Some(docker) = Dockerd::start() else {
        return;
    };
    let agent = Moatd::start("rec-docker");
    let scratch = TempDir::new("rec-docker");
    let script = "i=0; while [ $i -lt 3 ]; do sh -c 'ls / >/dev/null; cat /proc/self/status >/dev/null'; i=$((i+1)); done";

    // Recorded from its start: created, flagged, then started.
    let o = docker.docker(&[
        "create",
        "--network",
        "none",
        "bb:latest",
        "sh",
        "-c",
        script,
    ]);
    assert!(o.status.success(), "docker create: {}", err(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let profile = scratch.join("container.json");
    let recorder = agent
        .moat()
        .env("DOCKER_HOST", &docker.host)
        .args([
            "profile",
            "record",
            "--container",
            &id,
            "--duration",
            "6s",
            "--output",
        ])
        .arg(&profile)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Started once moat says it is waiting (the cgroup is flagged then).
    std::thread::sleep(Duration::from_millis(1500));
    let o = docker.docker(&["start", "-a", &id]);
    assert!(o.status.success(), "docker start: {}", err(&o));
    let o = recorder.wait_with_output().unwrap();
    assert!(o.status.success(), "moat profile record: {}", err(&o));
    assert!(err(&o).contains("start it now"), "{}", err(&o));
    let written = read_profile(&profile);
    let recorded = &written.per_arch["SCMP_ARCH_X86_64"];
    for name in ["execve", "getdents64", "sendfile", "wait4"] {
        assert!(recorded.contains(name), "{name}: {recorded:?}");
    }
    // Set-up calls of the runtime before its filter are not in it.
    for name in ["mount", "pivot_root", "unshare", "sethostname"] {
        assert!(!recorded.contains(name), "{name}: {recorded:?}");
    }

    // A running container: recorded from now on, and said so.
    let o = docker.docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "bb:latest",
        "sh",
        "-c",
        "sleep 1; ls /",
    ]);
    assert!(o.status.success(), "docker run -d: {}", err(&o));
    let running = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let later = scratch.join("running.json");
    let o = run(agent
        .moat()
        .env("DOCKER_HOST", &docker.host)
        .args([
            "profile",
            "record",
            "--container",
            &running,
            "--duration",
            "2s",
            "--output",
        ])
        .arg(&later));
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("misses its start-up"), "{}", err(&o));
    assert!(read_profile(&later).per_arch["SCMP_ARCH_X86_64"].contains("getdents64"));

    // Docker runs the same command under the recorded profile, no denial.
    let seccomp = format!("seccomp={}", profile.display());
    let o = docker.docker(&[
        "run",
        "--network",
        "none",
        "--security-opt",
        &seccomp,
        "bb:latest",
        "sh",
        "-c",
        script,
    ]);
    assert!(
        o.status.success(),
        "docker run with the recorded profile: {}",
        err(&o)
    );
    let o = docker.docker(&["ps", "-alq", "--no-trunc"]);
    let replay = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let workload = format!("docker:{}", &replay[..12]);
    let denials = denials_after(&agent, &workload, 4.0);
    assert!(denials.is_empty(), "{workload}: {denials:?}");
}

#[test]
fn a_running_moat_workload_is_recorded_from_now_and_says_it_misses_its_start() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let agent = Moatd::start("rec-running");
    let scratch = TempDir::new("rec-running");
    let mut workload = agent
        .run_cmd(
            "rec-running",
            &[],
            &["sh", "-c", "sleep 2; ls / >/dev/null; sleep 1"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until `moat ps` lists it (not a fixed delay: under CPU emulation, in
    // the kernel lab, the launch takes far longer than here).
    moat_tests::moatd::wait_for(Duration::from_secs(10), "the workload in moat ps", || {
        let o = run(agent.moat().arg("ps"));
        String::from_utf8_lossy(&o.stdout)
            .contains("rec-running")
            .then_some(())
    });
    let profile = scratch.join("running.json");
    let o = run(agent
        .moat()
        .args([
            "profile",
            "record",
            "--workload",
            "rec-running",
            "--duration",
            "2500ms",
            "--output",
        ])
        .arg(&profile));
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("misses its start-up"), "{}", err(&o));
    assert!(workload.wait().unwrap().success());
    let written = read_profile(&profile);
    let recorded = &written.per_arch["SCMP_ARCH_X86_64"];
    // ls ran while recording: its exec and its directory read are in.
    for name in ["execve", "getdents64", "wait4"] {
        assert!(recorded.contains(name), "{name}: {recorded:?}");
    }
    assert!(
        written.json["comment"]
            .as_str()
            .unwrap()
            .contains("so not its start-up"),
        "{}",
        written.json["comment"]
    );

    let o = run(agent
        .moat()
        .args([
            "profile",
            "record",
            "--workload",
            "rec-nonexistent",
            "--duration",
            "1s",
            "--output",
        ])
        .arg(scratch.join("none.json")));
    assert!(!o.status.success());
    assert!(
        err(&o).contains("no workload named \"rec-nonexistent\""),
        "{}",
        err(&o)
    );
}

/// moatd in the `fatal` tier: it attaches no `sys_enter` program at all, as
/// the `fexit` mechanism does not (which this kernel refuses), so `moat`
/// has to attach the record-only program itself.
fn fatal_tier() -> Options {
    Options {
        config: "[tracing]\ndenials = \"fatal\"\n".into(),
        ..Default::default()
    }
}

/// The names of the programs of the raw tracepoint links attached now that
/// use the recording maps pinned in `bpf_dir`, one per link, with the links'
/// ids: enumerated from the kernel (`BPF_LINK_GET_NEXT_ID`).
fn recording_programs(bpf_dir: &Path) -> Vec<(String, u32)> {
    // RecordKey: u64 cgroup, u32 arch, u32 nr; the value is a u8.
    let map = PinnedMap::open(&bpf_dir.join("RECORD_SYSCALLS"), 16, 1).unwrap();
    let mut out: Vec<(String, u32)> = map_users(map.id)
        .unwrap()
        .into_iter()
        .map(|u| (u.program, u.link))
        .collect();
    out.sort();
    out
}

fn record_only_links(bpf_dir: &Path) -> Vec<u32> {
    recording_programs(bpf_dir)
        .into_iter()
        .filter(|(name, _)| name == RECORD_ENTER_PROGRAM)
        .map(|(_, link)| link)
        .collect()
}

/// The ids of the bpf links process `pid` holds descriptors of (from
/// `/proc/PID/fdinfo`).
fn links_held_by(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for e in entries.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("link_id:") {
                out.push(id.trim().parse().unwrap());
            }
        }
    }
    out
}

#[test]
fn the_fatal_tier_records_exactly_the_set_the_pairing_records() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let progs = Programs::build();
    let scratch = TempDir::new("rec-tiers");
    let (w, h) = (progs.path("workload"), progs.path("helper"));
    let cmd = [w.as_str(), "plain", h.as_str()];

    // The pairing (or whatever MOAT_TEST_TRACING_MECHANISM asks for).
    let paired = {
        let agent = Moatd::start("rec-tier-pair");
        let profile = scratch.join("paired.json");
        let o = record(&agent, "rec-tier-pair", &profile, &[], &cmd);
        assert!(o.status.success(), "recording run: {}", err(&o));
        read_profile(&profile)
    };

    let agent = Moatd::start_with("rec-tier-fatal", &fatal_tier());
    // moatd attached only its scheduler programs: none records syscalls,
    // and the record-only program is pinned beside the maps.
    assert_eq!(
        recording_programs(&agent.bpf_dir),
        Vec::<(String, u32)>::new()
    );
    assert!(agent.bpf_dir.join("record_enter").exists());
    let profile = scratch.join("fatal.json");
    let o = record(&agent, "rec-tier-fatal", &profile, &[], &cmd);
    assert!(o.status.success(), "recording run: {}", err(&o));
    assert!(err(&o).contains("moat: recorded "), "{}", err(&o));
    let fatal = read_profile(&profile);
    assert_eq!(
        fatal.per_arch, paired.per_arch,
        "fatal tier (left) against the pairing (right)"
    );
    assert_eq!(fatal.base_refusals, paired.base_refusals);
    assert_eq!(
        fatal.json["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64"])
    );

    // And the set is exactly strace's (as under the pairing, in
    // records_exactly_the_syscalls_strace_lists_and_the_profile_replays).
    let traced = strace_names(&agent, "rec-tier-strace", &cmd, &scratch);
    let expected: BTreeSet<String> = traced.difference(&fatal.base_refusals).cloned().collect();
    assert_eq!(fatal.per_arch["SCMP_ARCH_X86_64"], expected);

    // The recorded profile replays in that tier too: nothing but the base
    // profile's own refusals (which the fatal tier does not count, being
    // ERRNO) and an exit status of 0.
    let p = profile.display().to_string();
    let o = run(&mut agent.run_cmd("rec-tier-replay", &["--seccomp-profile", &p], &cmd));
    assert!(o.status.success(), "replay: {}", err(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "done\n");
}

#[test]
fn the_record_only_program_is_attached_by_moat_only_while_it_records() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let agent = Moatd::start_with("rec-attach", &fatal_tier());
    let scratch = TempDir::new("rec-attach");
    assert_eq!(record_only_links(&agent.bpf_dir), Vec::<u32>::new());

    // A recording that ends normally: one link while it runs, held by
    // moat, and none once moat has exited.
    let moat_run = agent
        .run_cmd(
            "rec-attach-1",
            &[
                "--record-profile",
                &scratch.join("1.json").display().to_string(),
            ],
            &["sh", "-c", "sleep 1; ls / >/dev/null"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let link = moat_tests::moatd::wait_for(Duration::from_secs(5), "moat's link", || {
        record_only_links(&agent.bpf_dir).first().copied()
    });
    assert_eq!(record_only_links(&agent.bpf_dir), vec![link]);
    assert!(links_held_by(moat_run.id()).contains(&link));
    let o = moat_run.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(record_only_links(&agent.bpf_dir), Vec::<u32>::new());
    let written = read_profile(&scratch.join("1.json"));
    assert!(written.per_arch["SCMP_ARCH_X86_64"].contains("getdents64"));

    // moat killed while it records: its link goes with it, and nothing is
    // written.
    let mut moat_run = agent
        .run_cmd(
            "rec-attach-2",
            &[
                "--record-profile",
                &scratch.join("2.json").display().to_string(),
            ],
            &["sleep", "2"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let link = moat_tests::moatd::wait_for(Duration::from_secs(5), "moat's link", || {
        record_only_links(&agent.bpf_dir).first().copied()
    });
    assert!(links_held_by(moat_run.id()).contains(&link));
    moat_run.kill().unwrap();
    moat_run.wait().unwrap();
    // moat's init (a forked copy of moat that never execs) holds the
    // descriptor too, until the kernel kills it for its parent's death
    // (PR_SET_PDEATHSIG): moments later, not at the end of the workload
    // (sleep 2, which holds none: bpf descriptors are closed on exec).
    let killed = Instant::now();
    moat_tests::moatd::wait_for(Duration::from_secs(1), "the link to go", || {
        record_only_links(&agent.bpf_dir).is_empty().then_some(())
    });
    eprintln!("the link went {:?} after moat's death", killed.elapsed());
    assert_eq!(record_only_links(&agent.bpf_dir), Vec::<u32>::new());
    assert!(!scratch.join("2.json").exists());
    // Let the workload end before its cgroup is removed.
    std::thread::sleep(Duration::from_millis(2_500));

    // Under moatd's pairing too, moat attaches the record-only program: the
    // pairing's sys_enter, which runs on every syscall of the node, does not
    // record (nor check whether anything is recorded).
    drop(agent);
    if std::env::var(moat_tests::moatd::MECHANISM_ENV).is_ok_and(|m| m != "pairing") {
        eprintln!("the pairing half is skipped: the mechanism is forced to something else");
        return;
    }
    let agent = Moatd::start_with(
        "rec-attach-pair",
        &Options {
            config: "[tracing]\nmechanism = \"pairing\"\n".into(),
            ..Default::default()
        },
    );
    let moat_run = agent
        .run_cmd(
            "rec-attach-3",
            &[
                "--record-profile",
                &scratch.join("3.json").display().to_string(),
            ],
            &["sleep", "1"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let link = moat_tests::moatd::wait_for(Duration::from_secs(5), "moat's link", || {
        record_only_links(&agent.bpf_dir).first().copied()
    });
    let programs: Vec<String> = recording_programs(&agent.bpf_dir)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(programs, vec![RECORD_ENTER_PROGRAM.to_string()]);
    assert!(links_held_by(moat_run.id()).contains(&link));
    let o = moat_run.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(record_only_links(&agent.bpf_dir), Vec::<u32>::new());
    let written = read_profile(&scratch.join("3.json"));
    let set = &written.per_arch["SCMP_ARCH_X86_64"];
    assert!(
        set.contains("clock_nanosleep") || set.contains("nanosleep"),
        "{set:?}"
    );
}

#[test]
fn a_moatd_that_detaches_while_moat_records_fails_the_recording_in_every_tier() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let scratch = TempDir::new("rec-broke");
    // keep_pinned = false: this moatd detaches its programs when it stops (by
    // default they stay attached and the recording goes on: moatd_restart).
    let detaching = |options: Options| Options {
        config: format!("{}[kernel]\nkeep_pinned = false\n", options.config),
        ..options
    };
    for (tier, options) in [
        ("default", detaching(Options::default())),
        ("fatal", detaching(fatal_tier())),
    ] {
        let mut agent = Moatd::start_with(&format!("rec-broke-{tier}"), &options);
        let profile = scratch.join(&format!("{tier}.json"));
        let moat_run = agent
            .run_cmd(
                &format!("rec-broke-{tier}"),
                &["--record-profile", &profile.display().to_string()],
                &["sleep", "2"],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The recording has started once moat has flagged the cgroup
        // (RECORD_CGROUPS: a u64 key, a 16-byte RecordState).
        let cgroups = PinnedMap::open(&agent.bpf_dir.join("RECORD_CGROUPS"), 8, 16).unwrap();
        moat_tests::moatd::wait_for(Duration::from_secs(5), "the flagged cgroup", || {
            (cgroups.keys::<u64>(16).unwrap().len() == 1).then_some(())
        });
        assert_eq!(recording_programs(&agent.bpf_dir).len(), 1, "{tier}");
        agent.signal(libc::SIGTERM);
        let start = Instant::now();
        while agent.try_wait().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = moat_run.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(125), "{tier}: {}", err(&o));
        assert!(
            err(&o).contains("moatd stopped while the command ran"),
            "{tier}: {}",
            err(&o)
        );
        assert!(!profile.exists(), "{tier}");
    }
}
