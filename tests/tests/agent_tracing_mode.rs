//! moatd says which seccomp denials it counts and how, in its log and in
//! `moat_tracing_mode`, and the fatal tier counts a workload's TRAP end to
//! end (through `moat run`) while its ERRNO refusals are not counted.

use std::time::Duration;

use moat_tests::moatd::{wait_for, Moatd, Options};

fn skip() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP: needs root (eBPF, cgroups)");
        return true;
    }
    false
}

#[test]
fn the_fatal_tier_is_logged_and_exported() {
    if skip() {
        return;
    }
    let moatd = Moatd::start_with(
        "fatal-mode",
        &Options {
            config: "[tracing]\ndenials = \"fatal\"\n".into(),
            ..Options::default()
        },
    );
    let body = moatd.get_metrics().expect("metrics");
    assert!(
        body.contains("moat_tracing_mode{denials=\"fatal\",mechanism=\"signal\"} 1"),
        "{}",
        body.lines()
            .filter(|l| l.contains("tracing"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let log = moatd.log_text();
    assert!(
        log.contains("seccomp denials: fatal (TRAP and KILL only"),
        "{log}"
    );
}

#[test]
fn the_default_tier_names_the_mechanism_chosen() {
    if skip() {
        return;
    }
    let moatd = Moatd::start("all-mode");
    let body = moatd.get_metrics().expect("metrics");
    let line = body
        .lines()
        .find(|l| l.starts_with("moat_tracing_mode{"))
        .unwrap_or_else(|| panic!("no moat_tracing_mode in:\n{body}"))
        .to_owned();
    assert!(line.contains("denials=\"all\""), "{line}");
    assert!(
        line.contains("mechanism=\"pairing\"") || line.contains("mechanism=\"fexit\""),
        "{line}"
    );
    let log = moatd.log_text();
    let mechanism = if line.contains("fexit") {
        "fexit"
    } else {
        "pairing"
    };
    assert!(log.contains(&format!("mechanism {mechanism}")), "{log}");
}

/// A `moat run` workload under a profile that refuses and traps: the fatal
/// tier's metric has the TRAP and no ERRNO denial.
#[test]
fn the_fatal_tier_counts_the_trap_of_a_moat_run_workload() {
    if skip() {
        return;
    }
    let moatd = Moatd::start_with(
        "fatal-e2e",
        &Options {
            config: "[tracing]\ndenials = \"fatal\"\n".into(),
            ..Options::default()
        },
    );
    let profile = moatd.dir.join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getppid"], "action": "SCMP_ACT_TRAP"},
            {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .unwrap();
    let profile = profile.to_str().unwrap().to_owned();
    // perl: getpriority refused (EPERM) 3 times, then getppid trapped
    // (SIGSYS kills perl, which has no handler): one TRAP.
    let out = moatd
        .run_cmd(
            "fatal-w",
            &["--seccomp-profile", &profile],
            &[
                "perl",
                "-e",
                "syscall(140, 0, 0) for 1..3; syscall(110); exit 0",
            ],
        )
        .output()
        .unwrap();
    assert!(!out.status.success(), "the workload was killed by SIGSYS");
    let series = "moat_seccomp_denials_total{workload=\"fatal-w\",syscall=\"getppid\",action=\"trap\",errno=\"\"} 1";
    let body = wait_for(Duration::from_secs(10), "the TRAP in /metrics", || {
        let body = moatd.get_metrics()?;
        body.contains(series).then_some(body)
    });
    assert!(
        !body.lines().any(
            |l| l.starts_with("moat_seccomp_denials_total{workload=\"fatal-w\"")
                && l.contains("action=\"errno\"")
        ),
        "ERRNO counted in the fatal tier:\n{body}"
    );
}
