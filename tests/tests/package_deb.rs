//! The Debian package (issue 16, "Debian package"): `scripts/package-deb.sh`
//! builds it (from the debug binaries the tests already built, so the test
//! does not wait for a release build; the release package differs only in the
//! binaries), lintian finds no error and no warning, and dpkg installs,
//! removes and purges it in a scratch root (`dpkg --root` with
//! `--force-script-chrootless`: the maintainer scripts run on this machine's
//! tools with `DPKG_ROOT` set, and touch nothing outside the scratch root).
//!
//! Checked: every file of the package is installed with its mode; the
//! conffiles; the system user and group `moat`, and its subordinate ranges
//! placed past the ranges already there (and left alone when it has some);
//! moatd enabled (deb-systemd-helper's symlink) and not started (a scratch
//! root is not where systemd runs); the unit runs /usr/bin/moatd; the
//! installed moatd accepts the installed configuration; man pages. On remove:
//! binaries and units gone, the unit masked, the changed configuration and the
//! audit log kept. On purge: /etc/moat, /var/log/moat, the enablement and the
//! mask gone, nothing of the package left but the user and its ranges (kept
//! on purge, as Debian keeps system users: files and workloads may use them).
//!
//! Also: the packaged logrotate rule rotates a real moatd's audit log, and
//! moatd's SIGHUP (what the rule's postrotate sends) makes it write to the
//! new file without losing a line.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use moat_tests::moatd::{wait_for, Moatd, TempDir};

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Builds the package into `out` from the debug binaries; its path.
fn build_package(out: &Path) -> PathBuf {
    let bins = moat_tests::binary("moatd");
    let o = run(
        Command::new(moat_tests::workspace_root().join("scripts/package-deb.sh"))
            .arg("--bin-dir")
            .arg(bins.parent().unwrap())
            .arg("--out")
            .arg(out),
    );
    PathBuf::from(text(&o).lines().last().unwrap().trim())
}

fn skip_reason() -> Option<&'static str> {
    if !moat_tests::is_root() {
        return Some("dpkg --root installs as root");
    }
    for tool in [
        "dpkg-deb",
        "dpkg-shlibdeps",
        "help2man",
        "deb-systemd-helper",
    ] {
        if moat_tests::which(tool).is_none() {
            return Some("dpkg-deb, dpkg-shlibdeps, help2man or deb-systemd-helper is missing (scripts/setup.sh)");
        }
    }
    None
}

/// A scratch root with an empty dpkg database and the account files the
/// maintainer scripts edit: user `alice` owns subordinate uids
/// 100000-165535; there is no /etc/subgid.
fn scratch_root(dir: &TempDir) -> PathBuf {
    let root = dir.join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "etc",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let etc = root.join("etc");
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nalice:x:1000:\n").unwrap();
    std::fs::write(
        etc.join("shadow"),
        "root:*:19000:0:99999:7:::\nalice:*:19000:0:99999:7:::\n",
    )
    .unwrap();
    std::fs::write(etc.join("gshadow"), "root:*::\nalice:!::\n").unwrap();
    for f in ["shadow", "gshadow"] {
        std::fs::set_permissions(etc.join(f), std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    std::fs::write(etc.join("subuid"), "alice:100000:65536\n").unwrap();
    root
}

fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
        ])
        // No trigger or daemon of the host is involved.
        .env_remove("DPKG_ROOT");
    c
}

/// The package's files and directories (`dpkg-deb -c`), as (path, mode).
fn package_contents(deb: &Path) -> Vec<(String, u32, bool)> {
    let o = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    text(&o)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let perms = fields[0];
            let path = fields[5].trim_start_matches('.').to_owned();
            let mode =
                perms[1..]
                    .chars()
                    .enumerate()
                    .fold(0, |m, (i, c)| if c == '-' { m } else { m | 1 << (8 - i) });
            (path, mode, perms.starts_with('d'))
        })
        .filter(|(path, _, _)| path != "/")
        .collect()
}

fn line_of<'a>(file: &'a str, user: &str) -> Vec<&'a str> {
    file.lines()
        .filter(|l| l.split(':').next() == Some(user))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn package_installs_removes_and_purges_in_a_scratch_root() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let dir = TempDir::new("deb");
    let deb = build_package(&dir.join("out"));
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("moat_{}_amd64.deb", env!("CARGO_PKG_VERSION"))
    );

    if moat_tests::which("lintian").is_some() {
        let o = Command::new("lintian")
            .args(["--profile", "debian", "--fail-on", "error,warning"])
            .arg(&deb)
            .output()
            .unwrap();
        let out = text(&o);
        assert!(
            o.status.success()
                && !out
                    .lines()
                    .any(|l| l.starts_with("E:") || l.starts_with("W:")),
            "lintian:\n{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        eprintln!("lintian is not installed (scripts/setup.sh): not run");
    }

    let root = scratch_root(&dir);
    let contents = package_contents(&deb);
    let expected: BTreeSet<&str> = [
        "/usr/bin/moat",
        "/usr/bin/moatd",
        "/lib/systemd/system/moatd.service",
        "/etc/moat/moatd.toml",
        "/etc/logrotate.d/moat",
        "/usr/share/moat/dashboards/moat-overview.json",
        "/usr/share/moat/prometheus/moat-alerts.yml",
        "/usr/share/moat/prometheus/moat-recording.yml",
        "/usr/share/moat/prometheus/prometheus-kubernetes.yml",
        "/usr/share/moat/kubernetes/moatd.yaml",
        "/usr/share/moat/kubernetes/podmonitor.yaml",
        "/usr/share/man/man8/moatd.8.gz",
        "/usr/share/man/man1/moat.1.gz",
        "/usr/share/man/man1/moat-run.1.gz",
        "/usr/share/doc/moat/copyright",
        "/usr/share/doc/moat/changelog.gz",
    ]
    .into();
    let files: BTreeSet<&str> = contents
        .iter()
        .filter(|(_, _, is_dir)| !is_dir)
        .map(|(p, _, _)| p.as_str())
        .collect();
    let missing: Vec<_> = expected.difference(&files).collect();
    assert!(missing.is_empty(), "not in the package: {missing:?}");
    // Every unit of agent/systemd/ is packaged; a drop-in for another
    // package's unit (docker.service.d) as an example only: installed, it
    // would change that unit at once.
    let systemd_dir = moat_tests::workspace_root().join("agent/systemd");
    for unit in std::fs::read_dir(&systemd_dir).unwrap() {
        let name = unit.unwrap().file_name().into_string().unwrap();
        let own = name
            .strip_suffix(".d")
            .is_none_or(|unit| systemd_dir.join(unit).exists());
        let place = if own {
            format!("/lib/systemd/system/{name}")
        } else {
            format!("/usr/share/doc/moat/examples/systemd/{name}")
        };
        assert!(
            files.iter().any(|f| f.starts_with(&place)),
            "agent/systemd/{name} is not in the package at {place}"
        );
    }

    // Install.
    run(dpkg(&root).arg("-i").arg(&deb));
    for (path, mode, is_dir) in &contents {
        let meta = std::fs::symlink_metadata(root.join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{path} not installed: {e}"));
        assert_eq!(meta.is_dir(), *is_dir, "{path}");
        assert_eq!(meta.mode() & 0o777, *mode, "{path}: mode");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path}: owner");
    }
    let conffiles = text(&run(dpkg_query(&root).args([
        "-W",
        "-f=${Conffiles}",
        "moat",
    ])));
    let conffiles: Vec<&str> = conffiles
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(conffiles, ["/etc/logrotate.d/moat", "/etc/moat/moatd.toml"]);
    assert_eq!(
        read(&root.join("etc/moat/moatd.toml")),
        read(&moat_tests::workspace_root().join("agent/moatd.example.toml"))
    );

    let etc = root.join("etc");
    let passwd = read(&etc.join("passwd"));
    let group = read(&etc.join("group"));
    let user = line_of(&passwd, "moat");
    assert_eq!(user.len(), 1, "one user moat in:\n{passwd}");
    let fields: Vec<&str> = user[0].split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "moat is a system user: {}", user[0]);
    assert_eq!(fields[6], "/usr/sbin/nologin");
    let gid = line_of(&group, "moat")[0]
        .split(':')
        .nth(2)
        .unwrap()
        .to_owned();
    assert_eq!(fields[3], gid, "moat's primary group is moat");
    // Past alice's 100000-165535, on a 65536 boundary; from 131072 where
    // there was none.
    assert_eq!(
        read(&etc.join("subuid")),
        "alice:100000:65536\nmoat:196608:6553600\n"
    );
    assert_eq!(read(&etc.join("subgid")), "moat:131072:6553600\n");

    let wants = etc.join("systemd/system/multi-user.target.wants/moatd.service");
    assert_eq!(
        std::fs::read_link(&wants).expect("moatd.service enabled"),
        Path::new("/lib/systemd/system/moatd.service")
    );
    // Units other than services wait for the administrator: the plugin's
    // socket needs `[authz] enabled` first.
    let enabled: Vec<String> = std::fs::read_dir(etc.join("systemd/system"))
        .unwrap()
        .filter_map(|d| {
            let d = d.ok()?;
            let name = d.file_name().into_string().ok()?;
            name.ends_with(".wants").then(|| {
                std::fs::read_dir(d.path())
                    .unwrap()
                    .map(|e| format!("{name}/{}", e.unwrap().file_name().to_string_lossy()))
                    .collect::<Vec<_>>()
            })
        })
        .flatten()
        .collect();
    assert_eq!(enabled, ["multi-user.target.wants/moatd.service"]);
    assert!(!etc.join("systemd/system/docker.service.d").exists());
    let unit = read(&root.join("lib/systemd/system/moatd.service"));
    assert!(unit.contains("\nExecStart=/usr/bin/moatd\n"), "{unit}");
    assert!(!unit.contains("/usr/local/"), "{unit}");
    // Not started: a scratch root is not a system systemd runs.
    let running = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|p| std::fs::read_link(p.ok()?.path().join("exe")).ok())
        .any(|exe| exe.starts_with(&root));
    assert!(!running, "nothing of the scratch root runs");

    let moatd = root.join("usr/bin/moatd");
    run(Command::new(&moatd)
        .arg("--check-config")
        .arg("--config")
        .arg(etc.join("moat/moatd.toml")));
    let man = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {}",
        root.join("usr/share/man/man8/moatd.8.gz").display()
    )));
    assert!(text(&man).contains(".TH MOATD \"8\""), "{}", text(&man));
    let logrotate = read(&etc.join("logrotate.d/moat"));
    assert!(
        logrotate.starts_with("# moatd's audit log")
            && logrotate.contains("/var/log/moat/audit.jsonl {")
    );
    assert!(logrotate.contains("--signal=HUP moatd.service"));
    assert_eq!(
        std::fs::metadata(root.join("var/log/moat")).unwrap().mode() & 0o777,
        0o750
    );

    // A second configure leaves the user and the ranges as they are.
    run(dpkg(&root).arg("-i").arg(&deb));
    assert_eq!(read(&etc.join("passwd")), passwd);
    assert_eq!(
        read(&etc.join("subuid")),
        "alice:100000:65536\nmoat:196608:6553600\n"
    );

    // Remove: the changed configuration and the audit log stay.
    std::fs::write(
        etc.join("moat/moatd.toml"),
        "[http]\nlisten = \"0.0.0.0:9740\"\n",
    )
    .unwrap();
    std::fs::write(root.join("var/log/moat/audit.jsonl"), "{}\n").unwrap();
    run(dpkg(&root).args(["-r", "moat"]));
    for gone in [
        "usr/bin/moat",
        "usr/bin/moatd",
        "lib/systemd/system/moatd.service",
        "usr/share/moat",
    ] {
        assert!(!root.join(gone).exists(), "{gone} is left after remove");
    }
    assert_eq!(
        read(&etc.join("moat/moatd.toml")),
        "[http]\nlisten = \"0.0.0.0:9740\"\n"
    );
    assert!(etc.join("logrotate.d/moat").exists());
    assert_eq!(read(&root.join("var/log/moat/audit.jsonl")), "{}\n");
    assert_eq!(
        std::fs::read_link(etc.join("systemd/system/moatd.service")).expect("masked on remove"),
        Path::new("/dev/null")
    );
    let status = text(&run(dpkg_query(&root).args(["-W", "-f=${Status}", "moat"])));
    assert_eq!(status, "deinstall ok config-files");

    // Purge: nothing of it left but the user and its ranges.
    run(dpkg(&root).args(["-P", "moat"]));
    for gone in [
        "etc/moat",
        "etc/logrotate.d/moat",
        "var/log/moat",
        "etc/systemd/system/moatd.service",
        "etc/systemd/system/multi-user.target.wants/moatd.service",
    ] {
        assert!(
            std::fs::symlink_metadata(root.join(gone)).is_err(),
            "{gone} is left after purge"
        );
    }
    let left = text(&run(Command::new("find").arg(&root).args([
        "-path",
        &format!("{}/var/lib", root.display()),
        "-prune",
        "-o",
        "-print",
    ])));
    let left: Vec<String> = left
        .lines()
        .map(|l| l.trim_start_matches(root.to_str().unwrap()).to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let allowed = [
        "/etc",
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/subuid",
        "/etc/subgid",
        "/var",
    ];
    let extra: Vec<&String> = left
        .iter()
        .filter(|l| {
            !allowed.contains(&l.as_str())
                && !l.ends_with('-')
                && !l.starts_with("/etc/systemd")
                && !l.starts_with("/etc/logrotate.d")
                && !l.starts_with("/var/log")
        })
        .collect();
    assert!(extra.is_empty(), "left after purge: {extra:?}");
    assert_eq!(line_of(&read(&etc.join("passwd")), "moat").len(), 1);
    let o = dpkg_query(&root).args(["-W", "moat"]).output().unwrap();
    assert!(
        !o.status.success(),
        "dpkg knows nothing of moat after purge: {}",
        text(&o)
    );
}

fn dpkg_query(root: &Path) -> Command {
    let mut c = Command::new("dpkg-query");
    c.arg(format!("--root={}", root.display()));
    c
}

#[test]
fn packaged_logrotate_rule_rotates_a_running_moatd_without_losing_a_line() {
    if !moat_tests::is_root() {
        eprintln!("SKIP: moatd needs root");
        return;
    }
    if moat_tests::which("logrotate").is_none() {
        eprintln!("SKIP: logrotate is not installed (scripts/setup.sh)");
        return;
    }
    if !moat_tests::moatd::pids_on_v1() && !moat_tests::moatd::pids_on_v2() {
        eprintln!("SKIP: no pids cgroup controller on this machine");
        return;
    }
    let agent = Moatd::start("logrotate");
    let log = agent.audit_log.clone();
    let lines = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };

    // The packaged rule, for this log, with the postrotate's signal sent as
    // systemd would (there is no systemd here to ask).
    let rule = read(&moat_tests::workspace_root().join("packaging/deb/logrotate"));
    let postrotate = rule
        .lines()
        .skip_while(|l| !l.trim().starts_with("postrotate"))
        .skip(1)
        .take_while(|l| !l.trim().starts_with("endscript"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(postrotate.contains("systemctl kill --kill-whom=main --signal=HUP moatd.service"));
    let rule = rule
        .replace("/var/log/moat/audit.jsonl", log.to_str().unwrap())
        .replace(&postrotate, &format!("\t\tkill -HUP {}", agent.pid()));
    let conf = agent.dir.join("logrotate.conf");
    std::fs::write(&conf, rule).unwrap();

    // A workload's events land in the log first: `acct` is refused by the
    // default profile, which makes a seccomp_denied event.
    let deny = ["perl", "-e", "syscall(163, 0)"];
    let o = agent.run_cmd("lr-before", &[], &deny).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(Duration::from_secs(30), "events in the audit log", || {
        (lines(&log) > 0).then_some(())
    });
    run(Command::new("logrotate")
        .arg("--force")
        .arg("--state")
        .arg(agent.dir.join("logrotate.state"))
        .arg(&conf));
    let rotated = PathBuf::from(format!("{}.1", log.display()));
    assert!(rotated.exists(), "rotated to {}", rotated.display());
    let meta = std::fs::metadata(&log).expect("a new log created");
    assert_eq!(meta.mode() & 0o777, 0o600);
    wait_for(Duration::from_secs(30), "moatd to reopen the log", || {
        agent
            .log_text()
            .contains("reopening the audit log")
            .then_some(())
    });

    let o = agent.run_cmd("lr-after", &[], &deny).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(
        Duration::from_secs(10),
        "the new workload's events in the new log",
        || read(&log).contains("\"lr-after\"").then_some(()),
    );
    assert!(read(&rotated).contains("\"lr-before\""));
    assert!(
        !read(&rotated).contains("\"lr-after\""),
        "events after the rotation go to the new file only"
    );
    // Every line moatd counted is in one of the two files (read until no
    // event of the node's other processes lands in between).
    wait_for(
        Duration::from_secs(10),
        "counted lines = lines in the two files",
        || {
            let before = lines(&log) + lines(&rotated);
            let metrics = agent.get_metrics()?;
            let counted: f64 = metrics
                .lines()
                .filter(|l| l.starts_with("moat_audit_events_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            let after = lines(&log) + lines(&rotated);
            (before == after && counted as usize == after).then_some(())
        },
    );
}
