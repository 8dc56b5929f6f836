//! What a killed `moat run` leaves behind (issue 9, items 5 and 6): every
//! leftover is named by a record that `moat ps` shows, and the next `moat
//! run` reclaims exactly what the record names, nothing else.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moat_tests::moatd::{v2_root, CgroupParent};
use moat_tests::runenv::{kill_cgroups_under, stderr, stdout, RunEnv};

/// Whether the process `pid` is gone or a zombie.
fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `moat run --name NAME -- sleep 60` and kills both it and its
/// workload with SIGKILL, leaving a stale record; returns the workload pid.
fn make_stale(env: &RunEnv, name: &str) -> i32 {
    let mut moat = env
        .run_cmd(&["--name", name, "--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = env.wait_started(name)["pid"].as_i64().unwrap() as i32;
    moat.kill().unwrap();
    moat.wait().unwrap();
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid);
    pid
}

/// A `sleep` that is not moat's, killed on drop.
struct Bystander(Child);

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stale_cleanup_touches_only_what_the_record_names() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("stale-rec") else {
        return;
    };
    make_stale(&env, "web");
    let recorded = env.cgroups_of(&env.parent.0, "web");
    for d in &recorded {
        assert!(
            d.is_dir(),
            "{} should be left by the killed run",
            d.display()
        );
    }

    // Another parent with an unrelated process in a cgroup of the same name.
    let other = CgroupParent(format!("{}-v", env.parent.0));
    let theirs = env.cgroups_of(&other.0, "web");
    for d in &theirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut bystander = Bystander(Command::new("sleep").arg("60").spawn().unwrap());
    for d in &theirs {
        std::fs::write(d.join("cgroup.procs"), bystander.0.id().to_string()).unwrap();
    }

    let o = env
        .cmd()
        .args([
            "run",
            "--cgroup-parent",
            &other.0,
            "--name",
            "web",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let alive = bystander.0.try_wait().unwrap().is_none();
    assert!(
        alive,
        "ATTACK: moat killed an unrelated process in {}",
        theirs[1].display()
    );
    for d in &theirs {
        assert!(d.is_dir(), "moat removed {}", d.display());
    }
    for d in &recorded {
        assert!(!d.exists(), "the record's cgroup {} leaked", d.display());
    }
    // The name is in use by a cgroup with a process: refused, not taken over.
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("still has 1 process"), "{}", stderr(&o));
    assert_eq!(env.record_files(), Vec::<String>::new());
    drop(bystander);
    kill_cgroups_under(&other.0);
}

/// A record may name only cgroups of its own workload inside the cgroup
/// mounts: one that names another directory is kept (and reported), and
/// nothing it names is touched.
#[test]
fn a_record_cannot_make_moat_kill_or_remove_other_cgroups() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("stale-forge") else {
        return;
    };
    make_stale(&env, "web");
    let victim_parent = CgroupParent(format!("{}-victim", env.parent.0));
    let victim = v2_root().join(&victim_parent.0);
    std::fs::create_dir(&victim).unwrap();
    let mut bystander = Bystander(Command::new("sleep").arg("60").spawn().unwrap());
    std::fs::write(victim.join("cgroup.procs"), bystander.0.id().to_string()).unwrap();
    let record = env.state().join("workloads/web.json");
    let mut rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    let outside = [
        format!(
            "{}/../{}",
            v2_root().join(&env.parent.0).display(),
            victim_parent.0
        ),
        victim.display().to_string(),
        "/tmp".to_string(),
    ];
    for path in outside {
        rec["cgroup_v2"] = serde_json::Value::String(path.clone());
        std::fs::write(&record, serde_json::to_vec(&rec).unwrap()).unwrap();
        let o = env.run(&["--", "true"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            bystander.0.try_wait().unwrap().is_none(),
            "ATTACK: a record naming {path} made moat kill a process there"
        );
        assert!(
            victim.is_dir(),
            "a record naming {path} made moat remove it"
        );
        assert!(stderr(&o).contains(&path), "names {path}: {}", stderr(&o));
        assert!(record.exists(), "a record it could not act on is kept");
    }
    drop(bystander);
    kill_cgroups_under(&victim_parent.0);
}

#[test]
fn ps_shows_stale_workloads_and_the_next_run_reclaims_them() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("stale-ps") else {
        return;
    };
    make_stale(&env, "gone");
    let rows = env.ps_json();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], "gone");
    assert_eq!(rows[0]["state"], "stale");
    let table = env.cmd().arg("ps").output().unwrap();
    let line = stdout(&table)
        .lines()
        .find(|l| l.starts_with("gone "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{}", stdout(&table)));
    // NAME PID UPTIME PIDS LIMIT SECCOMP USERNS STATE NAMESPACES
    assert_eq!(
        line.split_whitespace().rev().nth(1),
        Some("stale"),
        "{line}"
    );
    assert!(
        stderr(&table).contains("the next `moat run` reclaims"),
        "{}",
        stderr(&table)
    );

    let o = env.run(&["--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(env.ps_json().is_empty());
    assert_eq!(env.cgroups_under_parent(), Vec::<String>::new());
    assert_eq!(env.record_files(), Vec::<String>::new());
}

/// A small xorshift generator; the seed is printed so a failure can be
/// replayed with MOAT_TEST_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("MOAT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("MOAT_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

const KILLS: usize = 80;

/// SIGKILLs `moat run` at random points of its launch and exit: after
/// each kill, every cgroup left under the parent is listed by `moat ps`;
/// at the end one more `moat run` reclaims all of them.
#[test]
fn sigkill_during_launch_leaves_nothing_invisible_and_the_next_run_reclaims_it() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("stale-kill") else {
        return;
    };
    // How long a whole run takes here, so that the kills spread over it.
    let mut times: Vec<Duration> = (0..3)
        .map(|_| {
            let t = Instant::now();
            assert!(env.run(&["--", "true"]).status.success());
            t.elapsed()
        })
        .collect();
    times.sort();
    let span_us = (times[1].as_micros() as u64) * 3 / 2;
    let mut rng = Rng::new();
    let mut with_leftovers = 0;
    for i in 0..KILLS {
        let name = format!("k{i}");
        let mut moat = env
            .run_cmd(&["--name", &name, "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(span_us)));
        let _ = moat.kill();
        moat.wait().unwrap();
        let leftovers = env.cgroups_under_parent();
        if leftovers.is_empty() {
            continue;
        }
        with_leftovers += 1;
        let listed: Vec<String> = env
            .ps_json()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect();
        for cg in &leftovers {
            assert!(
                listed.contains(cg),
                "kill {i}: cgroup {cg} is left under {} but moat ps lists only {listed:?}",
                env.parent.0
            );
        }
    }
    eprintln!("{with_leftovers} of {KILLS} kills left cgroups behind");
    let o = env.run(&["--name", "reclaimer", "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(env.cgroups_under_parent(), Vec::<String>::new());
    assert_eq!(env.record_files(), Vec::<String>::new());
    assert!(env.ps_json().is_empty());
}

/// A cgroup below the workload's own (made by the workload where it may
/// write cgroupfs, or by anyone else) holds a process: at exit moat kills
/// it and removes the whole subtree, or keeps the record; it used to leave
/// both cgroups behind and drop the record.
#[test]
fn cgroups_below_the_workloads_are_killed_and_removed_too() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("stale-sub") else {
        return;
    };
    // `--pid host`: the pid the workload prints must be the host's, since
    // the test moves it between cgroups.
    let mut moat = env
        .run_cmd(&[
            "--name",
            "sub",
            "--pid",
            "host",
            "--",
            "sh",
            "-c",
            "sleep 60 & echo $!; wait",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(moat.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let sleep: i32 = line.trim().parse().unwrap();
    // Never move anything but the workload's own process.
    let cg = std::fs::read_to_string(format!("/proc/{sleep}/cgroup")).unwrap_or_default();
    assert!(
        cg.contains(&format!("/{}/sub\n", env.parent.0)),
        "pid {sleep} is not the workload's: {cg}"
    );
    let mut inner = Vec::new();
    for d in env.cgroups_of(&env.parent.0, "sub") {
        let below = d.join("inner");
        if !inner.contains(&below) {
            std::fs::create_dir(&below).unwrap();
            std::fs::write(below.join("cgroup.procs"), sleep.to_string()).unwrap();
            inner.push(below);
        }
    }
    // SAFETY: signalling our own child (moat), which forwards it.
    unsafe { libc::kill(moat.id() as i32, libc::SIGTERM) };
    let status = moat.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    wait_gone(sleep);
    assert_eq!(
        env.cgroups_under_parent(),
        Vec::<String>::new(),
        "left behind"
    );
    assert_eq!(env.record_files(), Vec::<String>::new());
}

/// A `moat run` killed while its workload runs takes the workload with it
/// (moat's init dies with its supervisor, and the workload's PID namespace
/// with the init). A process that outlives it anyway (`--pid host`, a
/// grandchild that has no parent-death signal) is listed as stale and keeps
/// its id range: the next `moat run` kills it before the range is handed
/// out again.
#[test]
fn a_killed_moat_run_leaves_no_process_holding_ids_that_are_handed_out() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("stale-orphan") else {
        return;
    };
    // Default namespaces: nothing survives.
    let mut moat = env
        .run_cmd(&["--name", "orphan", "--userns", "auto", "--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let init = env.wait_started("orphan")["pid"].as_i64().unwrap() as i32;
    moat.kill().unwrap();
    moat.wait().unwrap();
    wait_gone(init);
    let [pids_dir, _] = env.cgroups_of(&env.parent.0, "orphan");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(pids_dir.join("cgroup.procs"))
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the workload outlived moat run");
        std::thread::sleep(Duration::from_millis(10));
    }
    let rows = env.ps_json();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["state"], "stale");

    // A grandchild in the host's PID namespace outlives it.
    let mut moat = env
        .run_cmd(&[
            "--name",
            "orphan2",
            "--pid",
            "host",
            "--userns",
            "auto",
            "--",
            "sh",
            "-c",
            "sleep 60 & echo $!; wait",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(moat.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let grandchild: i32 = line.trim().parse().unwrap();
    let row = env.wait_started("orphan2");
    let taken = row["userns"].as_str().unwrap().to_owned();
    moat.kill().unwrap();
    moat.wait().unwrap();
    wait_gone(row["pid"].as_i64().unwrap() as i32);
    assert!(
        !is_gone(grandchild),
        "the grandchild was expected to outlive moat run"
    );
    let row = env
        .ps_json()
        .into_iter()
        .find(|r| r["name"] == "orphan2")
        .unwrap();
    assert_eq!(row["state"], "stale");
    // The next run reclaims both records, killing the grandchild first.
    let o = env.run(&["--userns", "auto", "--", "cat", "/proc/self/uid_map"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        is_gone(grandchild),
        "range {taken} was reclaimed while a process of it still runs"
    );
    assert_eq!(env.cgroups_under_parent(), Vec::<String>::new());
    assert_eq!(env.record_files(), Vec::<String>::new());
}
