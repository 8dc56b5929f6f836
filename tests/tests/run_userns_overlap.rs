//! Attacks through shared host ids (issue 9, item 7): a workload whose ids
//! map onto another's host ids can signal its processes and own its files.
//! `--userns auto` promises a range of its own; an explicit map or a
//! host-namespace `--user` onto a running auto range broke that promise,
//! and the second workload killed the first.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use moat_tests::runenv::{stderr, stdout, RunEnv};

/// A `moat run` in the background, SIGTERMed and reaped on drop.
struct Background(Child);

impl Background {
    fn start(env: &RunEnv, name: &str, args: &[&str]) -> Background {
        let mut all = vec!["--name", name];
        all.extend_from_slice(args);
        let child = env
            .run_cmd(&all)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let b = Background(child);
        env.wait_started(name);
        b
    }

    /// Whether `moat run` (and so its workload) has ended.
    fn has_ended(&mut self) -> bool {
        self.0.try_wait().unwrap().is_some()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // SAFETY: signalling our own child (moat), which forwards it.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// The host id where a `--userns auto` workload's map starts, from `moat ps`.
fn auto_start(env: &RunEnv, name: &str) -> u32 {
    let row = env.wait_started(name);
    let map = row["userns"].as_str().unwrap_or_else(|| panic!("{row}"));
    let fields: Vec<&str> = map.split(':').collect();
    assert_eq!(fields.len(), 3, "{map}");
    fields[1].parse().unwrap()
}

/// The killer signals every process it may (`kill -1`) and then waits a
/// moment; if the victim's `moat run` ended meanwhile, the attack worked.
fn assert_survives(victim: &mut Background, killer: &std::process::Output) {
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        assert!(
            !victim.has_ended(),
            "ATTACK: the second workload killed the first (it ran: exit {:?}, {})",
            killer.status.code(),
            stderr(killer)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_explicit_map_onto_a_running_auto_range_is_refused() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("ovl-explicit") else {
        return;
    };
    let mut a = Background::start(&env, "a", &["--userns", "auto", "--", "sleep", "30"]);
    let start = auto_start(&env, "a");
    let map = format!("0:{start}:65536");
    let o = env.run(&[
        "--name",
        "b",
        "--userns",
        &map,
        "--",
        "sh",
        "-c",
        "kill -KILL -1",
    ]);
    assert_survives(&mut a, &o);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains(&format!("--userns {map}")), "{e}");
    assert!(e.contains("\"a\""), "names the workload: {e}");
    assert!(e.contains("auto"), "{e}");
    // A map that only touches the last id of the range is refused too.
    let map = format!("0:{}:1", start + 65535);
    let o = env.run(&["--userns", &map, "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    // Next to it is fine.
    let map = format!("0:{}:1", start + 65536);
    let o = env.run(&["--userns", &map, "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_host_user_inside_a_running_auto_range_is_refused() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("ovl-host") else {
        return;
    };
    let mut a = Background::start(&env, "a", &["--userns", "auto", "--", "sleep", "30"]);
    let start = auto_start(&env, "a");
    let uid = start.to_string();
    let o = env.run(&["--user", &uid, "--", "sh", "-c", "kill -KILL -1"]);
    assert_survives(&mut a, &o);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("uid {uid}")), "{}", stderr(&o));
    let gid = format!("0:{}", start + 7);
    let o = env.run(&["--user", &gid, "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("gid"), "{}", stderr(&o));
}

/// The other direction: `auto` never hands out a range that a running
/// workload's explicit map or host `--user` ids touch.
#[test]
fn auto_skips_ranges_that_running_workloads_use() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("ovl-auto") else {
        return;
    };
    let s = env.subid_start;
    let map = format!("0:{s}:10");
    let _b = Background::start(&env, "b", &["--userns", &map, "--", "sleep", "30"]);
    let host_uid = (s + 65536 + 5).to_string();
    let _c = Background::start(&env, "c", &["--user", &host_uid, "--", "sleep", "30"]);
    let o = env.run(&["--userns", "auto", "--", "cat", "/proc/self/uid_map"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<String> = stdout(&o).split_whitespace().map(String::from).collect();
    assert_eq!(got, ["0", &(s + 2 * 65536).to_string(), "65536"]);
}

/// Explicit maps are the operator's choice: the same map twice is a shared
/// identity on purpose (two workloads writing one volume); a partial
/// overlap is a mistake and refused.
#[test]
fn explicit_maps_may_repeat_but_not_partly_overlap() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("ovl-expl2") else {
        return;
    };
    // Outside moat's sub-ids, where auto never goes.
    let x = env.subid_start - 100_000;
    let map = format!("0:{x}:1000");
    let _b = Background::start(&env, "b", &["--userns", &map, "--", "sleep", "30"]);
    let o = env.run(&["--userns", &map, "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let partial = format!("0:{}:1000", x + 500);
    let o = env.run(&["--userns", &partial, "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains(&map) && e.contains("\"b\""), "{e}");
}
