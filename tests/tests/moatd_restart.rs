//! Restart and upgrade without loss (issue 16), on the real kernel: moatd
//! leaves its programs attached and pinned when it stops, so what happens
//! while it is down is counted, and the next moatd adopts them; a layout
//! change replaces them; `moatd --unload` removes them; two moatds never
//! share them.
//!
//! The workload is one long-lived `moat run` across the restarts: moatd
//! attributes a cgroup id by resolving it in the cgroup hierarchy, so the
//! workload's cgroup must still exist when moatd reads its counters.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use aya::programs::links::{FdLink, PinnedLink};
use moat_api::exposition::Exposition;
use moat_tests::moatd::{pids_on_v1, pids_on_v2, wait_for, Moatd, Options, TempDir};

const NR_GETPRIORITY: u32 = 140;

/// `perl -e WORKER NR N ERRNO`: for each line read on standard input, makes
/// syscall NR N times and prints how many failed with ERRNO.
const WORKER: &str = r#"
$| = 1;
my ($nr, $n, $expect) = @ARGV;
while (my $line = <STDIN>) {
    my $seen = 0;
    for (1 .. $n) {
        $! = 0;
        my $r = syscall($nr, 0, 0);
        $seen++ if $r == -1 && ($! + 0) == $expect;
    }
    print "$seen\n";
}
"#;

fn skip_reason() -> Option<&'static str> {
    if !moat_tests::is_root() {
        return Some("moatd and moat run need root");
    }
    if !pids_on_v1() && !pids_on_v2() {
        return Some("no pids cgroup controller on this machine");
    }
    if !Path::new("/usr/bin/perl").exists() {
        return Some("the workload is a perl program and /usr/bin/perl is missing");
    }
    if !cfg!(target_arch = "x86_64") {
        return Some("the workload uses x86_64 syscall numbers");
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

fn metrics(agent: &Moatd) -> Exposition {
    let body = agent
        .get_metrics()
        .unwrap_or_else(|| panic!("GET /metrics failed; moatd:\n{}", agent.log_text()));
    Exposition::parse(&body).expect("a text exposition")
}

fn denials(agent: &Moatd, workload: &str) -> f64 {
    metrics(agent)
        .get(
            "moat_seccomp_denials_total",
            &[
                ("workload", workload),
                ("syscall", "getpriority"),
                ("action", "errno"),
                ("errno", "EACCES"),
            ],
        )
        .unwrap_or(0.0)
}

/// Waits until the workload's denials are exactly `want`, and still are
/// 300 ms later.
fn wait_denials(agent: &Moatd, workload: &str, want: f64) {
    let start = Instant::now();
    loop {
        let got = denials(agent, workload);
        if got == want {
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                denials(agent, workload),
                want,
                "{workload}: {want}, then more"
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{workload}: {got} denials after 15 s, want {want}; moatd:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `seccomp_denied` events of `workload` in the audit log.
fn audit_denials(agent: &Moatd, workload: &str) -> usize {
    agent
        .audit_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"]["action"] == "seccomp_denied" && e["workload"]["name"] == workload)
        .count()
}

/// Waits until the audit log holds exactly `want` denials of `workload`.
fn wait_audit(agent: &Moatd, workload: &str, want: usize) {
    let start = Instant::now();
    loop {
        let got = audit_denials(agent, workload);
        if got == want {
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                audit_denials(agent, workload),
                want,
                "{workload}: audit events"
            );
            return;
        }
        assert!(
            got < want && start.elapsed() < Duration::from_secs(15),
            "{workload}: {got} audit events, want {want}; moatd:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pins_state(agent: &Moatd) -> Vec<String> {
    metrics(agent)
        .family("moat_ebpf_pins_info")
        .filter(|s| s.value == 1.0)
        .filter_map(|s| s.label("state").map(str::to_owned))
        .collect()
}

/// The one layout directory under the pin directory.
fn layout_dir(agent: &Moatd) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(&agent.bpf_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("agent-"))
        })
        .collect();
    assert_eq!(dirs.len(), 1, "layout directories: {dirs:?}");
    dirs[0].clone()
}

/// The kernel's ids of the programs whose links are pinned under the layout.
fn pinned_program_ids(agent: &Moatd) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(layout_dir(agent))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("link-"))
        .map(|e| {
            let link = PinnedLink::from_pin(e.path()).expect("open a link pin");
            FdLink::from(link).info().expect("link info").program_id()
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Of `ids`, those still loaded in the kernel.
fn loaded(ids: &[u32]) -> Vec<u32> {
    aya::programs::loaded_programs()
        .flatten()
        .map(|p| p.id())
        .filter(|id| ids.contains(id))
        .collect()
}

/// The long-lived workload: one phase of `n` denials per [`Workload::phase`].
struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Workload {
    fn start(agent: &Moatd, name: &str, profile: &str, n: u32) -> Workload {
        let mut child = agent
            .run_cmd(
                name,
                &["--seccomp-profile", profile],
                &[
                    "perl",
                    "-e",
                    WORKER,
                    &NR_GETPRIORITY.to_string(),
                    &n.to_string(),
                    "13",
                ],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Workload {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs one phase; returns the denials the workload saw.
    fn phase(&mut self) -> u32 {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim()
            .parse()
            .unwrap_or_else(|_| panic!("workload printed {line:?}"))
    }

    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "workload exited with {status}");
    }
}

fn errno_profile(dir: &TempDir) -> String {
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    });
    let path = dir.join("getpriority-eacces.json");
    std::fs::write(&path, serde_json::to_string_pretty(&profile).unwrap()).unwrap();
    path.display().to_string()
}

#[test]
fn denials_while_moatd_is_stopped_are_counted_after_a_restart() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    // Every denial makes an audit record (no rate limit), so that the
    // records left in the ring buffer while moatd is down are counted too.
    let mut agent = Moatd::start_with(
        "restart",
        &Options {
            config: "[audit]\nrate_limit = 1000000\nrate_burst = 1000000\n".to_owned(),
            ..Options::default()
        },
    );
    assert_eq!(pins_state(&agent), ["created"]);
    let profiles = TempDir::new("restart-profiles");
    let profile = errno_profile(&profiles);
    let name = "restart";
    let mut workload = Workload::start(&agent, name, &profile, 1000);

    assert_eq!(workload.phase(), 1000);
    wait_denials(&agent, name, 1000.0);
    wait_audit(&agent, name, 1000);
    let ids = pinned_program_ids(&agent);

    let status = agent.stop();
    assert!(status.success(), "moatd exited with {status}");
    assert_eq!(
        loaded(&ids),
        ids,
        "the programs stay loaded while moatd is stopped"
    );
    // Counted by the programs while no moatd runs.
    assert_eq!(workload.phase(), 1000);

    agent.start_again();
    assert_eq!(pins_state(&agent), ["reused"]);
    assert!(
        agent
            .log_text()
            .contains("reusing the eBPF programs and maps pinned in"),
        "{}",
        agent.log_text()
    );
    // The same programs, not attached a second time (which would count each
    // denial twice from here on).
    assert_eq!(pinned_program_ids(&agent), ids);
    wait_denials(&agent, name, 2000.0);
    // The records made while moatd was down waited in the ring buffer.
    wait_audit(&agent, name, 2000);

    assert_eq!(workload.phase(), 1000);
    wait_denials(&agent, name, 3000.0);
    wait_audit(&agent, name, 3000);
    workload.finish();
}

#[test]
fn a_layout_change_replaces_the_pins() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let mut agent = Moatd::start("relayout");
    let old_layout = layout_dir(&agent);
    let old_ids = pinned_program_ids(&agent);
    assert!(agent.stop().success());

    let mut config = std::fs::read_to_string(agent.config_path()).unwrap();
    config.push_str("\n[kernel]\ndenial_map_entries = 8192\n");
    std::fs::write(agent.config_path(), config).unwrap();
    agent.start_again();

    assert_eq!(pins_state(&agent), ["replaced"]);
    let log = agent.log_text();
    assert!(
        log.contains("replaced the pinned eBPF programs and maps in")
            && log.contains(&old_layout.display().to_string()),
        "{log}"
    );
    assert_ne!(layout_dir(&agent), old_layout);
    let new_ids = pinned_program_ids(&agent);
    assert_eq!(new_ids.len(), old_ids.len());
    assert!(new_ids.iter().all(|id| !old_ids.contains(id)));
    // The old programs are detached and freed (asynchronously, after RCU).
    wait_for(
        Duration::from_secs(5),
        "the old programs to be freed",
        || loaded(&old_ids).is_empty().then_some(()),
    );
}

#[test]
fn unload_leaves_no_pins_and_no_program() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let mut agent = Moatd::start("unload");
    let ids = pinned_program_ids(&agent);
    assert!(!ids.is_empty());
    let pins = agent.bpf_dir.clone();
    let unload = || {
        Command::new(moat_tests::binary("moatd"))
            .env("MOAT_BPF_DIR", &pins)
            .arg("--unload")
            .output()
            .unwrap()
    };
    // Refused while a moatd runs on the pins.
    let refused = unload();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another moatd is using"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(agent.stop().success());
    assert_eq!(loaded(&ids), ids);

    let done = unload();
    assert!(
        done.status.success(),
        "moatd --unload: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        !agent.bpf_dir.exists(),
        "{} is left",
        agent.bpf_dir.display()
    );
    wait_for(Duration::from_secs(5), "the programs to be freed", || {
        loaded(&ids).is_empty().then_some(())
    });
    // Nothing left: a second --unload has nothing to do, and succeeds.
    let again = unload();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to unload"));
}

#[test]
fn a_second_moatd_on_the_same_pins_refuses() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let agent = Moatd::start("second");
    let ids = pinned_program_ids(&agent);
    let dir = TempDir::new("second-b");
    let mut second = Command::new(moat_tests::binary("moatd"))
        .env("MOAT_BPF_DIR", &agent.bpf_dir)
        .arg("--config")
        .arg(agent.config_path())
        .args(["--listen", "127.0.0.1:0", "--audit-log"])
        .arg(dir.join("audit.jsonl"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("moatd.log")).unwrap())
        .spawn()
        .unwrap();
    let status = wait_for(Duration::from_secs(20), "the second moatd to exit", || {
        second.try_wait().unwrap()
    });
    let log = std::fs::read_to_string(dir.join("moatd.log")).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("another moatd is using the pinned eBPF programs"),
        "{log}"
    );
    // The first is untouched: same pins, still serving.
    assert_eq!(pinned_program_ids(&agent), ids);
    assert_eq!(pins_state(&agent), ["created"]);
}

#[test]
fn a_recording_works_while_moatd_is_stopped() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let mut agent = Moatd::start("restart-rec");
    assert!(agent.stop().success());
    let scratch = TempDir::new("restart-rec");
    let profile = scratch.join("recorded.json");
    let o = agent
        .run_cmd(
            "restart-rec",
            &["--record-profile", profile.to_str().unwrap()],
            &["perl", "-e", "syscall(140, 0, 0)"],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "moat run --record-profile: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    let names: Vec<&str> = recorded["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["names"].as_array().unwrap())
        .filter_map(|name| name.as_str())
        .collect();
    assert!(names.contains(&"getpriority"), "{recorded}");
}

#[test]
fn keep_pinned_off_removes_the_pins_an_earlier_moatd_left() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let mut agent = Moatd::start("unpinned");
    let old_ids = pinned_program_ids(&agent);
    assert!(agent.stop().success());

    let mut config = std::fs::read_to_string(agent.config_path()).unwrap();
    config.push_str("\n[kernel]\nkeep_pinned = false\n");
    std::fs::write(agent.config_path(), config).unwrap();
    agent.start_again();
    assert_eq!(pins_state(&agent), ["unpinned"]);
    assert!(
        agent
            .log_text()
            .contains("keep_pinned is off: detached and unpinned the eBPF programs"),
        "{}",
        agent.log_text()
    );
    let layouts = std::fs::read_dir(&agent.bpf_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("agent-"))
        .count();
    assert_eq!(layouts, 0);
    wait_for(
        Duration::from_secs(5),
        "the old programs to be freed",
        || loaded(&old_ids).is_empty().then_some(()),
    );
    let status = agent.stop();
    assert!(status.success());
    assert!(
        agent.log_text().contains("programs detached; exiting"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn the_packages_prerm_unloads_on_removal_and_not_on_upgrade() {
    skip_unless_able!();
    let _layout = moat_tests::cgroup_layout_lock(false);
    let mut agent = Moatd::start("prerm");
    let ids = pinned_program_ids(&agent);
    assert!(agent.stop().success());
    // The maintainer script as packaged, without units to stop (this test
    // does not run under systemd's control of moatd).
    let script = std::fs::read_to_string(moat_tests::workspace_root().join("packaging/deb/prerm"))
        .unwrap()
        .replace("@STOP_UNITS@", "");
    let scratch = TempDir::new("prerm");
    let prerm = scratch.join("prerm");
    std::fs::write(&prerm, script).unwrap();
    let bins = moat_tests::binary("moatd").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |arg: &str| {
        let o = Command::new("sh")
            .arg(&prerm)
            .arg(arg)
            .env("PATH", &path)
            .env("MOAT_BPF_DIR", &agent.bpf_dir)
            .env_remove("DPKG_ROOT")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "prerm {arg}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run("upgrade");
    assert_eq!(pinned_program_ids(&agent), ids, "an upgrade keeps the pins");
    run("remove");
    assert!(
        !agent.bpf_dir.exists(),
        "{} is left",
        agent.bpf_dir.display()
    );
    wait_for(Duration::from_secs(5), "the programs to be freed", || {
        loaded(&ids).is_empty().then_some(())
    });
}
