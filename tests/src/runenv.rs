//! A private place to run `moat run` from a test: its own state directory,
//! cgroup parent and subuid/subgid files (`moat:200000:655360`), so tests
//! run in parallel with each other and with other test binaries.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::binary;
use crate::moatd::{pids_on_v1, pids_on_v2, CgroupParent, TempDir};

/// State directory, cgroup parent and sub-id files of one test; removed on
/// drop (the cgroups first).
pub struct RunEnv {
    /// The cgroup parent (`--cgroup-parent`).
    pub parent: CgroupParent,
    /// The directory holding `state/`, `subuid` and `subgid`.
    pub dir: TempDir,
}

impl RunEnv {
    /// A new environment, or `None` (having printed `SKIP: ...`) when the
    /// test cannot run here (not root, no pids controller).
    pub fn new(tag: &str) -> Option<RunEnv> {
        if !crate::is_root() {
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
        Some(RunEnv {
            parent: CgroupParent(format!("moat-t-{tag}-{}", std::process::id())),
            dir,
        })
    }

    /// `moat` with this environment's state and sub-id files.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(binary("moat"));
        c.env("MOAT_STATE_DIR", self.dir.join("state"))
            .env("MOAT_SUBUID_FILE", self.dir.join("subuid"))
            .env("MOAT_SUBGID_FILE", self.dir.join("subgid"));
        c
    }

    /// `moat run --cgroup-parent <ours> ARGS`.
    pub fn run_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["run", "--cgroup-parent", &self.parent.0])
            .args(args);
        c
    }

    /// Runs `moat run ARGS` with stdin from /dev/null, capturing the rest.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_cmd(args).output().expect("run moat")
    }

    /// The exit record of workload `name`.
    pub fn exit_record(&self, name: &str) -> serde_json::Value {
        let p = self.exit_record_path(name);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// Where the exit record of `name` is.
    pub fn exit_record_path(&self, name: &str) -> PathBuf {
        self.dir.join("state/exits").join(format!("{name}.json"))
    }
}

/// A command's stdout as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stderr as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
