//! `moat run` and `moat ps` on the real kernel: seccomp, user namespaces,
//! pids cgroups (v1 here, and v2 after moving the controller), exit codes,
//! signals, stdio, and fail-closed launches that leave nothing behind.
//!
//! Each test uses its own state directory, cgroup parent and subuid file so
//! tests can run in parallel; the one that moves the pids controller to
//! cgroup v2 takes the (cross-process) layout lock exclusively.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use moat_tests::binary;
use moat_tests::moatd::{pids_on_v1, pids_on_v2, v2_root, CgroupParent, TempDir, PIDS_V1};

/// A private state dir, cgroup parent and subuid/subgid files, all
/// removed on drop (the cgroups first).
struct Env {
    parent: CgroupParent,
    dir: TempDir,
}

impl Env {
    fn new(tag: &str) -> Option<Env> {
        if !moat_tests::is_root() {
            eprintln!("SKIP: moat run needs root");
            return None;
        }
        if !pids_on_v1() && !pids_on_v2() {
            eprintln!("SKIP: no pids cgroup controller on this machine");
            return None;
        }
        let dir = TempDir::new(&format!("run-{tag}"));
        std::fs::write(dir.join("subuid"), "moat:200000:655360\n").unwrap();
        std::fs::write(dir.join("subgid"), "moat:200000:655360\n").unwrap();
        Some(Env {
            parent: CgroupParent(format!("moat-t-{tag}-{}", std::process::id())),
            dir,
        })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(binary("moat"));
        c.env("MOAT_STATE_DIR", self.dir.join("state"))
            .env("MOAT_SUBUID_FILE", self.dir.join("subuid"))
            .env("MOAT_SUBGID_FILE", self.dir.join("subgid"));
        c
    }

    /// `moat run --cgroup-parent <ours> ARGS`.
    fn run(&self, args: &[&str]) -> Output {
        self.run_cmd(args).output().expect("run moat")
    }

    fn run_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["run", "--cgroup-parent", &self.parent.0])
            .args(args);
        c
    }

    fn pids_parent(&self) -> PathBuf {
        if pids_on_v2() {
            v2_root().join(&self.parent.0)
        } else {
            Path::new(PIDS_V1).join(&self.parent.0)
        }
    }

    fn exit_record(&self, name: &str) -> serde_json::Value {
        let p = self.dir.join("state/exits").join(format!("{name}.json"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// Asserts nothing of the workload is left: no cgroup, no state record.
    fn assert_nothing_left(&self, name: &str) {
        for root in [Path::new(PIDS_V1), v2_root()] {
            let d = root.join(&self.parent.0).join(name);
            assert!(!d.exists(), "{} left behind", d.display());
        }
        let rec = self
            .dir
            .join("state/workloads")
            .join(format!("{name}.json"));
        assert!(!rec.exists(), "{} left behind", rec.display());
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_string()
}

#[test]
fn confinement_is_visible_inside_the_workload() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("confine") else {
        return;
    };
    let o = env.run(&["--name", "confine", "--", "cat", "/proc/self/status"]);
    assert!(o.status.success(), "{}", err(&o));
    let status = out(&o);
    assert_eq!(status_field(&status, "Seccomp"), "2");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    // Docker's default capability set.
    assert_eq!(status_field(&status, "CapEff"), "00000000a80425fb");
    assert_eq!(status_field(&status, "CapBnd"), "00000000a80425fb");
    assert_eq!(status_field(&status, "CapInh"), "0000000000000000");
    let o = env.run(&[
        "--name",
        "confine2",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        "--",
        "cat",
        "/proc/self/status",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        status_field(&out(&o), "CapEff"),
        format!("{:016x}", 1u64 << 12)
    );
    env.assert_nothing_left("confine");
}

#[test]
fn unconfined_and_allow_new_privileges() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("unconf") else {
        return;
    };
    let o = env.run(&[
        "--seccomp-profile",
        "unconfined",
        "--allow-new-privileges",
        "--",
        "cat",
        "/proc/self/status",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(status_field(&out(&o), "Seccomp"), "0");
    assert_eq!(status_field(&out(&o), "NoNewPrivs"), "0");
    let o = env.run(&["--allow-new-privileges", "--", "cat", "/proc/self/status"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        status_field(&out(&o), "Seccomp"),
        "2",
        "seccomp still loads"
    );
    assert_eq!(status_field(&out(&o), "NoNewPrivs"), "0");
}

#[test]
fn denied_syscalls_return_the_profiles_errno() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("deny") else { return };
    // unshare(CLONE_NEWUSER) is refused by the default profile with EPERM.
    let o = env.run(&["--", "unshare", "--user", "true"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("Operation not permitted"), "{}", err(&o));
    // A custom profile: uname(2) fails with EACCES (13), the rest is allowed.
    let p = env.dir.join("p.json");
    std::fs::write(
        &p,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["uname"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let o = env.run(&["--seccomp-profile", p.to_str().unwrap(), "--", "uname"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("Permission denied"), "{}", err(&o));
}

#[test]
fn exit_codes() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("exit") else { return };
    let code = |args: &[&str]| env.run(args).status.code();
    assert_eq!(code(&["--", "true"]), Some(0));
    assert_eq!(code(&["--", "sh", "-c", "exit 42"]), Some(42));
    assert_eq!(code(&["--", "sh", "-c", "kill -KILL $$"]), Some(137));
    assert_eq!(code(&["--", "sh", "-c", "kill -TERM $$"]), Some(143));
    let o = env.run(&["--name", "nf", "--", "no-such-command-moat"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(err(&o).contains("command not found"), "{}", err(&o));
    env.assert_nothing_left("nf");
    let o = env.run(&["--name", "nx", "--", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126));
    assert!(err(&o).contains("cannot execute"), "{}", err(&o));
    env.assert_nothing_left("nx");
    let o = env.run(&["--seccomp-profile", "/nonexistent.json", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
}

#[test]
fn stdin_passes_through_and_signals_are_forwarded() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("sig") else { return };
    let mut c = env
        .run_cmd(&["--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"hello moat\n").unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(out(&o), "hello moat\n");
    assert!(o.status.success());

    for (sig, name, code) in [
        (libc::SIGTERM, "TERM", 7),
        (libc::SIGUSR1, "USR1", 8),
        (libc::SIGHUP, "HUP", 9),
    ] {
        let script = format!(
            "trap 'echo got {name}; exit {code}' {name}; echo ready; while :; do sleep 0.05; done"
        );
        let mut c: Child = env
            .run_cmd(&["--", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        // SAFETY: signalling our own child (moat).
        unsafe { libc::kill(c.id() as i32, sig) };
        assert_eq!(lines.next().unwrap().unwrap(), format!("got {name}"));
        assert_eq!(c.wait().unwrap().code(), Some(code));
    }
}

#[test]
fn user_namespace_maps_are_applied() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("userns") else {
        return;
    };
    let o = env.run(&[
        "--userns",
        "0:300000:1000,1000:400000:10",
        "--",
        "cat",
        "/proc/self/uid_map",
        "/proc/self/gid_map",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let maps: Vec<Vec<String>> = out(&o)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    let want = [["0", "300000", "1000"], ["1000", "400000", "10"]];
    assert_eq!(maps.len(), 4);
    for (i, m) in maps.iter().enumerate() {
        assert_eq!(m, &want[i % 2].to_vec());
    }

    // Root inside cannot write a root-owned host file.
    let f = env.dir.join("host-owned");
    std::fs::write(&f, "original\n").unwrap();
    let o = env.run(&[
        "--userns",
        "0:300000:65536",
        "--",
        "sh",
        "-c",
        &format!("id -u; echo pwned > {}", f.display()),
    ]);
    assert!(!o.status.success());
    assert_eq!(out(&o), "0\n");
    assert!(err(&o).contains("Permission denied"), "{}", err(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "original\n");
}

#[test]
fn concurrent_auto_user_namespaces_are_disjoint() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("auto") else { return };
    // Each workload runs until the test has seen all three in `moat ps`
    // (launches take longer than any fixed sleep on a slow machine).
    let go = env.dir.join("go");
    let script = format!(
        "cat /proc/self/uid_map; while [ ! -e {} ]; do sleep 0.05; done",
        go.display()
    );
    let children: Vec<Child> = (0..3)
        .map(|i| {
            env.run_cmd(&[
                "--userns",
                "auto",
                "--name",
                &format!("auto{i}"),
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    // While they run, `moat ps --json` lists all three with their maps.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ps = env.cmd().args(["ps", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
        let listed = v.as_array().unwrap().len();
        if listed == 3 {
            break;
        }
        assert!(listed < 3 && Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&go, "").unwrap();
    let mut starts = Vec::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", err(&o));
        let f: Vec<u64> = out(&o)
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!((f[0], f[2]), (0, 65536));
        assert!((200000..200000 + 655360).contains(&f[1]));
        starts.push(f[1]);
    }
    starts.sort();
    for w in starts.windows(2) {
        assert!(w[1] >= w[0] + 65536, "ranges overlap: {starts:?}");
    }
    // Released on exit: a new workload gets the lowest range again.
    let o = env.run(&["--userns", "auto", "--", "cat", "/proc/self/uid_map"]);
    assert!(
        out(&o).split_whitespace().nth(1) == Some("200000"),
        "{}",
        out(&o)
    );
}

#[test]
fn auto_without_subids_fails_closed_naming_the_file() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("nosub") else { return };
    std::fs::write(env.dir.join("subuid"), "").unwrap();
    let o = env.run(&["--userns", "auto", "--name", "nosub", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let e = err(&o);
    assert!(
        e.contains(&env.dir.join("subuid").display().to_string()),
        "{e}"
    );
    assert!(e.contains("moat:"), "names the line to add: {e}");
    env.assert_nothing_left("nosub");
}

#[test]
fn failed_launch_steps_leave_nothing_behind() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("fail") else { return };
    // Bad profile, bad map, bad name, bad pids limit.
    let bad = env.dir.join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction":"SCMP_ACT_NOPE"}"#).unwrap();
    for args in [
        vec![
            "--name",
            "f1",
            "--seccomp-profile",
            bad.to_str().unwrap(),
            "--",
            "true",
        ],
        vec!["--name", "f2", "--userns", "0:100000:0", "--", "true"],
        vec!["--name", "f3", "--userns", "0:1:10,5:100:10", "--", "true"],
        vec!["--name", "bad/name", "--", "true"],
        vec!["--name", "f4", "--pids-limit=-3", "--", "true"],
    ] {
        let o = env.run(&args);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", err(&o));
        assert_eq!(err(&o).lines().count(), 1, "one line: {}", err(&o));
        env.assert_nothing_left(args[1]);
    }
    // A notify action without a listener would be enforced by nobody.
    let notify = env.dir.join("notify.json");
    std::fs::write(
        &notify,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/x.sock","syscalls":[{"names":["getppid"],"action":"SCMP_ACT_NOTIFY"}]}"#,
    )
    .unwrap();
    let o = env.run(&[
        "--name",
        "f7",
        "--seccomp-profile",
        notify.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(
        err(&o).contains("SCMP_ACT_NOTIFY needs a user-space listener"),
        "{}",
        err(&o)
    );
    env.assert_nothing_left("f7");
    // A usage error is a moat failure too.
    let o = env.run(&["--name", "f6", "--bogus-flag", "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).starts_with("error: unexpected argument '--bogus-flag'"));
    // A cgroup that cannot be created: the v2 parent refuses descendants,
    // so the pids cgroup made just before must be rolled back.
    if !pids_on_v2() {
        let v2_parent = v2_root().join(&env.parent.0);
        std::fs::create_dir_all(&v2_parent).unwrap();
        std::fs::write(v2_parent.join("cgroup.max.descendants"), "0").unwrap();
        let o = env.run(&["--name", "f5", "--pids-limit", "10", "--", "true"]);
        assert_eq!(o.status.code(), Some(125), "{}", err(&o));
        env.assert_nothing_left("f5");
    }
    // The name is free again afterwards.
    let _ = std::fs::write(
        v2_root().join(&env.parent.0).join("cgroup.max.descendants"),
        "max",
    );
    let o = env.run(&["--name", "f1", "--", "true"]);
    assert!(o.status.success(), "{}", err(&o));
}

/// A fork bomb under --pids-limit 64: contained, `moat run` returns, the
/// host can still fork, and the exit record counts the limit hits.
fn fork_bomb(env: &Env) {
    let start = Instant::now();
    let o = env.run(&[
        "--name",
        "bomb",
        "--pids-limit",
        "64",
        "--",
        "sh",
        "-c",
        "b() { b | b & }; b; sleep 2",
    ]);
    assert!(start.elapsed() < Duration::from_secs(30));
    let _ = o;
    let rec = env.exit_record("bomb");
    assert!(rec["pids_limit_hits"].as_u64().unwrap() > 0, "{rec}");
    env.assert_nothing_left("bomb");
    assert!(
        Command::new("true").status().unwrap().success(),
        "host can fork"
    );
    // The parent cgroup was created with the secure default.
    let max = std::fs::read_to_string(env.pids_parent().join("pids.max")).unwrap();
    assert_eq!(max.trim(), "512");
}

#[test]
fn fork_bomb_is_contained_on_cgroup_v1() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("bomb1") else { return };
    if pids_on_v2() {
        eprintln!("SKIP: pids is on cgroup v2 on this machine (the v2 test covers it)");
        return;
    }
    fork_bomb(&env);
}

/// Moves the pids controller to cgroup v2 (as on v2-only hosts) for the
/// duration of the test, then back.
struct PidsOnV2;

impl PidsOnV2 {
    fn enter() -> Result<PidsOnV2, String> {
        let busy = std::fs::read_dir(PIDS_V1)
            .map_err(|e| e.to_string())?
            .flatten()
            .any(|e| e.path().is_dir());
        if busy {
            return Err(format!("{PIDS_V1} has child cgroups; cannot unmount it"));
        }
        let st = Command::new("umount")
            .arg(PIDS_V1)
            .status()
            .map_err(|e| e.to_string())?;
        if !st.success() || !pids_on_v2() {
            let _ = PidsOnV2.restore();
            return Err("pids did not move to cgroup v2".into());
        }
        Ok(PidsOnV2)
    }

    fn restore(&self) -> std::io::Result<()> {
        let _ = std::fs::write(v2_root().join("cgroup.subtree_control"), "-pids");
        std::fs::create_dir_all(PIDS_V1)?;
        // Cgroups removed a moment ago linger in the kernel until their last
        // zombie is reaped, and the mount fails with EBUSY meanwhile.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = std::fs::write(v2_root().join("cgroup.subtree_control"), "-pids");
            let st = Command::new("mount")
                .args(["-t", "cgroup", "-o", "pids", "none", PIDS_V1])
                .stderr(Stdio::null())
                .status()?;
            if st.success() || pids_on_v1() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(
                    "remounting the v1 pids hierarchy failed for 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PidsOnV2 {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

#[test]
fn fork_bomb_is_contained_on_cgroup_v2() {
    let _g = moat_tests::cgroup_layout_lock(true);
    if !moat_tests::is_root() {
        eprintln!("SKIP: moat run needs root");
        return;
    }
    if pids_on_v2() {
        if let Some(env) = Env::new("bomb2") {
            fork_bomb(&env);
        }
        return;
    }
    let flip = match PidsOnV2::enter() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("SKIP: {e}");
            return;
        }
    };
    {
        // Declared after `flip`, so even a failing test removes its cgroups
        // before the controller is handed back to v1.
        let env = Env::new("bomb2").expect("pids is on v2 now");
        fork_bomb(&env);
    }
    drop(flip);
    assert!(
        Path::new(PIDS_V1).join("pids.max").exists(),
        "pids back on v1"
    );
}

/// Under a terminal (`script` allocates a pty), the workload's standard
/// streams are a terminal too: the pty moat gives it, never moat's own.
#[test]
fn a_tty_stays_a_tty() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("tty") else { return };
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIP: util-linux `script` not installed");
        return;
    }
    let inner = format!(
        "MOAT_STATE_DIR={} {} run --cgroup-parent {} -- sh -c 'test -t 0 && test -t 1 && tty'",
        env.dir.join("state").display(),
        binary("moat").display(),
        env.parent.0
    );
    // script's stdin stays open: at its end of file, script would type an
    // EOF character into the terminal, which moat passes on.
    let mut c = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = c.stdin.take();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut c.stdout.take().unwrap(), &mut text).unwrap();
    let status = c.wait().unwrap();
    drop(stdin);
    assert!(status.success(), "{text}");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{text}");
}

#[test]
fn ps_shows_a_running_workload() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("ps") else { return };
    let mut c = env
        .run_cmd(&[
            "--name",
            "pstest",
            "--pids-limit",
            "50",
            "--",
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap();
    // The name is reserved (and listed, with `-` for what is not known yet)
    // before the workload exists: wait until it runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let o = env.cmd().arg("ps").output().unwrap();
        let t = out(&o);
        // The record exists from the reservation on; wait until the
        // workload has started (its PID is shown).
        let started = t
            .lines()
            .any(|l| l.starts_with("pstest") && l.split_whitespace().nth(1) != Some("-"));
        if started || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let row = table
        .lines()
        .find(|l| l.starts_with("pstest"))
        .unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // NAME PID UPTIME PIDS LIMIT SECCOMP USERNS
    assert_eq!(cols[3], "1", "{row}");
    assert_eq!(cols[4], "50", "{row}");
    assert_eq!(cols[5], "default", "{row}");
    assert_eq!(cols[6], "host", "{row}");
    // SAFETY: signalling our own child (moat), which forwards it.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    assert_eq!(c.wait().unwrap().code(), Some(128 + libc::SIGTERM));
    let o = env.cmd().arg("ps").output().unwrap();
    assert!(!out(&o).contains("pstest"));
    env.assert_nothing_left("pstest");
}

#[test]
fn env_workdir_and_user_are_applied() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = Env::new("envwd") else { return };
    let o = env.run(&[
        "--env",
        "MOAT_TEST_VAR=hello world",
        "--workdir",
        "/usr",
        "--",
        "sh",
        "-c",
        "echo \"$MOAT_TEST_VAR\"; pwd",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "hello world\n/usr\n");
    // A non-root user inside keeps no capabilities, as under Docker.
    let o = env.run(&[
        "--user",
        "1000:2000",
        "--",
        "sh",
        "-c",
        "id -u; id -g; grep -E '^Cap(Eff|Bnd)' /proc/self/status",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "2000");
    assert_eq!(lines[2], "CapEff:\t0000000000000000");
    assert_eq!(lines[3], "CapBnd:\t00000000a80425fb");
    let o = env.run(&["--workdir", "/nonexistent-dir", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        err(&o).contains("changing to the working directory failed"),
        "{}",
        err(&o)
    );
    let o = env.run(&["--env", "NOEQUALS", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("expected KEY=VALUE"), "{}", err(&o));
}
