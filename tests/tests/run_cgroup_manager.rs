//! `moat run --cgroup-manager` where systemd is not PID 1 (this machine):
//! the default is cgroupfs, `cgroupfs` asked for is the same, and `systemd`
//! is refused with exit 125 before anything exists. (The systemd manager
//! itself is tested under a real systemd in the kernel lab's node image:
//! `scripts/lab-node.sh systemd-scope`.)

use std::path::Path;
use std::process::{Command, Output};

use moat_tests::binary;
use moat_tests::moatd::{pids_on_v1, pids_on_v2, v2_root, CgroupParent, TempDir, PIDS_V1};

struct Env {
    parent: CgroupParent,
    dir: TempDir,
}

impl Env {
    fn new(tag: &str) -> Option<Env> {
        if !moat_tests::is_root() {
            println!("SKIP: moat run needs root");
            return None;
        }
        if !pids_on_v1() && !pids_on_v2() {
            println!("SKIP: no pids cgroup controller on this machine");
            return None;
        }
        if Path::new("/run/systemd/system").is_dir() {
            println!("SKIP: systemd is PID 1 here; these tests are for a machine without it");
            return None;
        }
        Some(Env {
            parent: CgroupParent(format!("moat-t-mgr-{tag}-{}", std::process::id())),
            dir: TempDir::new(&format!("mgr-{tag}")),
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(binary("moat"))
            .env("MOAT_STATE_DIR", self.dir.join("state"))
            .args(["run", "--cgroup-parent", &self.parent.0])
            .args(args)
            .output()
            .expect("run moat")
    }

    /// Nothing of workload `name` is left: no record, no cgroup.
    fn nothing_left(&self, name: &str) {
        let state = self.dir.join("state");
        assert!(!state.join(format!("workloads/{name}.json")).exists());
        for root in [Path::new(PIDS_V1), v2_root()] {
            assert!(!root.join(&self.parent.0).join(name).exists());
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_systemd_manager_without_systemd_is_refused_before_anything_exists() {
    let Some(env) = Env::new("sd") else { return };
    let out = env.run(&["--cgroup-manager", "systemd", "--name", "w", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("--cgroup-manager systemd: systemd is not running as PID 1 here")
            && err.contains("use --cgroup-manager cgroupfs"),
        "{err}"
    );
    env.nothing_left("w");
    // Not even the parent: nothing was created.
    for root in [Path::new(PIDS_V1), v2_root()] {
        assert!(!root.join(&env.parent.0).exists());
    }
    assert!(!env.dir.join("state/exits/w.json").exists());
}

#[test]
fn the_default_manager_here_is_cgroupfs_and_so_is_asking_for_it() {
    let Some(env) = Env::new("fs") else { return };
    for (name, manager) in [("dflt", None), ("asked", Some("cgroupfs"))] {
        let mut args = vec!["--name", name, "--cgroupns", "host"];
        if let Some(m) = manager {
            args.extend(["--cgroup-manager", m]);
        }
        args.extend(["--", "cat", "/proc/self/cgroup"]);
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        let v2 = format!("0::/{}/{name}", env.parent.0);
        let cgroups = text(&out.stdout);
        assert!(cgroups.lines().any(|l| l == v2), "{name}: {cgroups}");
        env.nothing_left(name);
    }
}

#[test]
fn an_unknown_manager_is_a_usage_error() {
    let Some(env) = Env::new("bad") else { return };
    let out = env.run(&["--cgroup-manager", "docker", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("invalid cgroup manager \"docker\": expected \"systemd\" or \"cgroupfs\""),
        "{err}"
    );
}
