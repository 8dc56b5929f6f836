//! What the kernel sees of workloads that do not live long, counted exactly by
//! the real moatd (issue 10, items 6 and 8):
//!
//! - a fork bomb under `--pids-limit` that dies within a poll interval: moatd's
//!   `moat_pids_limit_hits_total` equals the exit record's `pids_limit_hits`
//!   (and the `pids_limit_reached` events add up to it), although moatd never
//!   reads the workload's pids cgroup while it exists;
//! - the user namespace `moat run --userns auto` creates for a workload is the
//!   workload's: `moat_userns_created_total{workload}` is exactly 1 and no
//!   event of it is attributed to `moat run` itself (host).

use std::process::Stdio;
use std::time::{Duration, Instant};

use moat_api::{audit::AuditEvent, exposition::Exposition};
use moat_tests::moatd::{pids_on_v1, pids_on_v2, wait_for, Moatd, Options};

/// perl and 4 children fill a pids limit of 5; then 15 more forks, 20 ms
/// apart, are refused, and it exits at once (moat run then kills the children
/// and removes the cgroups). Prints the refusals it saw.
const BOMB: &str = r#"
for (1 .. 4) { if (fork == 0) { sleep 1; exit 0 } }
my $refused = 0;
for (1 .. 15) {
    my $pid = fork;
    if (!defined $pid) { $refused++ } elsif ($pid == 0) { exit 0 }
    select(undef, undef, undef, 0.02);
}
print "$refused
";
"#;

macro_rules! skip_unless_able {
    () => {
        if !moat_tests::is_root() {
            eprintln!("SKIP: moatd and moat run need root");
            return;
        }
        if !pids_on_v1() && !pids_on_v2() {
            eprintln!("SKIP: no pids cgroup controller on this machine");
            return;
        }
    };
}

fn metric(agent: &Moatd, series: &str) -> Option<f64> {
    Exposition::parse(&agent.get_metrics()?).ok()?.value(series)
}

fn events(agent: &Moatd, action: &str) -> Vec<AuditEvent> {
    agent
        .audit_text()
        .lines()
        .filter_map(|l| AuditEvent::parse_line(l.as_bytes()).ok())
        .filter(|e| e.event.action == action)
        .collect()
}

/// Waits until `f` is `Some(want)`, then checks it stays so for a while.
fn settles_at(what: &str, want: f64, mut f: impl FnMut() -> Option<f64>) {
    let start = Instant::now();
    loop {
        let got = f();
        if got == Some(want) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: {got:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(f(), Some(want), "{what}: moved after reaching {want}");
}

#[test]
fn a_fork_bomb_that_dies_between_polls_has_its_limit_hits_counted_exactly() {
    skip_unless_able!();
    // Polls a minute apart, and no audit records (whose failed forks would
    // make moatd read the pids cgroups at once): moatd never reads these
    // workloads' pids cgroups on a schedule while they exist. What it may still
    // read is on a change of pids.events, which the kernel reports at most
    // every 100 ms: the last refusals come after the workload is gone.
    let agent = Moatd::start_with(
        "short-pids",
        &Options {
            poll_interval_ms: Some(60_000),
            config: "[audit]\nrate_limit = 0\n".to_owned(),
            ..Options::default()
        },
    );
    if !std::path::Path::new("/usr/bin/perl").exists() {
        eprintln!("SKIP: the workload is a perl program and /usr/bin/perl is missing");
        return;
    }
    for round in 0..3 {
        let name = format!("bomb{round}");
        let started = Instant::now();
        let o = agent
            .run_cmd(&name, &["--pids-limit", "5"], &["perl", "-e", BOMB])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let took = started.elapsed();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let refused: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(agent.dir.path().join(format!("state/exits/{name}.json"))).unwrap(),
        )
        .unwrap();
        let hits = record["pids_limit_hits"].as_u64().unwrap();
        eprintln!(
            "{name}: ran {took:?}, {refused} forks refused, exit record pids_limit_hits {hits}"
        );
        assert_eq!(refused, 15);
        assert_eq!(hits, refused, "{record}");
        assert!(took < Duration::from_secs(5), "the bomb lived {took:?}");
        settles_at(
            &format!("moat_pids_limit_hits_total of {name}"),
            hits as f64,
            || {
                metric(
                    &agent,
                    &format!("moat_pids_limit_hits_total{{workload=\"{name}\"}}"),
                )
            },
        );
        let reported: u64 = events(&agent, "pids_limit_reached")
            .iter()
            .filter(|e| e.workload.name == name)
            .filter_map(|e| e.pids.as_ref().map(|p| p.new_hits))
            .sum();
        assert_eq!(
            reported, hits,
            "{name}: new_hits of its pids_limit_reached events"
        );
    }
}

#[test]
fn the_user_namespace_of_moat_run_userns_auto_is_the_workloads() {
    skip_unless_able!();
    let agent = Moatd::start("short-userns");
    let ids = agent.dir.join("subids");
    std::fs::write(&ids, "moat:300000:655360\n").unwrap();
    let name = "userns-wl";
    let mut command = agent.run_cmd(name, &["--userns", "auto"], &["true"]);
    command
        .env("MOAT_SUBUID_FILE", &ids)
        .env("MOAT_SUBGID_FILE", &ids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let moat_pid = child.id();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    settles_at(&format!("moat_userns_created_total of {name}"), 1.0, || {
        metric(
            &agent,
            &format!("moat_userns_created_total{{workload=\"{name}\"}}"),
        )
    });
    let created = wait_for(Duration::from_secs(5), "the workload's event", || {
        let all = events(&agent, "userns_created");
        all.iter().any(|e| e.workload.name == name).then_some(all)
    });
    let ours: Vec<&AuditEvent> = created.iter().filter(|e| e.workload.name == name).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_ne!(
        ours[0].process.as_ref().map(|p| p.pid),
        Some(moat_pid),
        "the event names moat run itself, not the workload"
    );
    let of_moat_run: Vec<&AuditEvent> = created
        .iter()
        .filter(|e| e.process.as_ref().is_some_and(|p| p.pid == moat_pid))
        .collect();
    assert!(
        of_moat_run.is_empty(),
        "user namespaces attributed to moat run (pid {moat_pid}): {of_moat_run:?}"
    );
}
