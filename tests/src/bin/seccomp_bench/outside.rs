//! The variants that run outside this process: the loops as a `moat run`
//! workload and in a crun container, and the private directory and cgroup
//! parents they use.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use moat_tests::oci::{self, CgroupParents, Container, HOST_ID, ID_RANGE};

use super::workloads::{parse_child_output, ChildResult};
use super::{Config, Opts, CGROUP_PARENT, IN_ROOTFS, PIDS_LIMIT};

/// A private temporary directory (sub-id files, moat's state, crun's state
/// and bundle) and the cgroup parents that did not exist before the bench.
pub(super) struct Work {
    dir: PathBuf,
    parents: CgroupParents,
}

impl Work {
    pub(super) fn new() -> Result<Work, String> {
        let dir = std::env::temp_dir().join(format!("moat-seccomp-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The workloads' root (host uid 100000) must reach the bundle.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Work {
            dir,
            parents: CgroupParents::before(CGROUP_PARENT),
        })
    }

    /// Removes the directory and the `moat-bench` cgroups this run made.
    pub(super) fn cleanup(&self) {
        self.parents.remove("seccomp_bench");
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "seccomp_bench: warning: could not remove {}: {e}",
                self.dir.display()
            );
        }
    }

    /// An empty file of ours for a workload's stdin (never `/dev/null`,
    /// see [`oci::runtime_command`]).
    fn stdin(&self) -> Result<fs::File, String> {
        let path = self.dir.join("stdin");
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// What the `moat run` and crun variants need: this program, moat, crun
/// and its bundle, and the CPU the loops pin themselves to.
pub(super) struct Outside<'a> {
    cfg: Config,
    work: &'a Work,
    exe: PathBuf,
    pub(super) moat: PathBuf,
    cpu: usize,
    root: bool,
    /// crun and its bundle, or why the crun variant is skipped.
    crun: Result<(PathBuf, PathBuf), String>,
    seq: std::cell::Cell<u64>,
}

impl<'a> Outside<'a> {
    pub(super) fn new(opts: &Opts, work: &'a Work, cpu: usize) -> Result<Outside<'a>, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
        let root = nix::unistd::geteuid().is_root();
        let mut o = Outside {
            cfg: opts.cfg,
            work,
            exe,
            moat: opts.moat.clone(),
            cpu,
            root,
            crun: Err(String::new()),
            seq: std::cell::Cell::new(0),
        };
        if root {
            let ids = format!("moat:{HOST_ID}:{}\n", ID_RANGE * 100);
            for f in ["subuid", "subgid"] {
                let path = work.dir.join(f);
                fs::write(&path, &ids).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        o.crun = o.setup_crun();
        Ok(o)
    }

    /// The loop's arguments, as this program takes them.
    fn loop_args(&self, exe: &str) -> Vec<String> {
        [
            exe,
            "--loop",
            "all",
            "--calls",
            &self.cfg.calls.to_string(),
            "--cpu",
            &self.cpu.to_string(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// Why the `moat run` variant cannot run (`None` when it can); outside
    /// `--quick` a missing moat binary is an error.
    pub(super) fn moat_problem(&self, quick: bool) -> Result<Option<String>, String> {
        if !self.root {
            return Ok(Some(
                "needs root (moat run with a user namespace map)".into(),
            ));
        }
        if !self.moat.is_file() {
            let why = format!(
                "no moat binary at {} (cargo build --release --bin moat, or --moat PATH)",
                self.moat.display()
            );
            return if quick { Ok(Some(why)) } else { Err(why) };
        }
        Ok(None)
    }

    /// Why the crun variant cannot run, if it cannot.
    pub(super) fn crun_problem(&self) -> Option<String> {
        self.crun.as_ref().err().cloned()
    }

    /// Finds crun, checks the cgroup layout, and builds the bundle: this
    /// program and its libraries in the rootfs, the configuration of
    /// [`oci`] running the loop.
    fn setup_crun(&self) -> Result<(PathBuf, PathBuf), String> {
        if !self.root {
            return Err("needs root (rootful crun)".into());
        }
        let crun = oci::which("crun").ok_or("crun is not installed (Debian: crun)")?;
        if let Some(why) = oci::crun_layout_problem() {
            return Err(why);
        }
        let bundle = self.work.dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        oci::make_mount_points(&rootfs).map_err(|e| format!("building the bundle: {e}"))?;
        oci::copy_with_libraries(&rootfs, &self.exe, IN_ROOTFS)
            .map_err(|e| format!("building the bundle: {e}"))?;
        let resolved = oci::resolved_default()?;
        let seccomp = oci::oci_seccomp(&resolved)?;
        oci::check_round_trip(&seccomp, &resolved)?;
        let args = self.loop_args(IN_ROOTFS);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        oci::write_config(
            &bundle,
            &Container {
                args: &args,
                seccomp: &seccomp,
                cgroup_parent: CGROUP_PARENT,
                pids_limit: PIDS_LIMIT,
            },
        )?;
        Ok((crun, bundle))
    }

    /// `moat run … -- <this program> --loop all …`.
    pub(super) fn moat_command(&self) -> Result<Command, String> {
        let mut c = Command::new(&self.moat);
        c.env("MOAT_SUBUID_FILE", self.work.dir.join("subuid"))
            .env("MOAT_SUBGID_FILE", self.work.dir.join("subgid"))
            .env("MOAT_STATE_DIR", self.work.dir.join("state"))
            .args(["run", "--userns", "auto", "--pids-limit"])
            .arg(PIDS_LIMIT.to_string())
            .args(["--cgroup-parent", CGROUP_PARENT, "--"])
            .args(self.loop_args(&self.exe.to_string_lossy()));
        c.stdin(self.work.stdin()?);
        Ok(c)
    }

    /// `crun run` of the loop's bundle, as a fresh container.
    pub(super) fn crun_command(&self) -> Result<Command, String> {
        let (crun, bundle) = self.crun.as_ref().map_err(Clone::clone)?;
        self.seq.set(self.seq.get() + 1);
        let id = format!("seccomp-bench-{}-{}", std::process::id(), self.seq.get());
        Ok(oci::runtime_command(
            crun,
            &self.work.dir.join("crun-root"),
            bundle,
            &id,
            self.work.stdin()?,
        ))
    }

    /// Runs `cmd` (a loop under a runtime) and reads its lines.
    pub(super) fn run(&self, name: &str, mut cmd: Command) -> Result<Vec<ChildResult>, String> {
        let out = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{name}: cannot start: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "{name} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        parse_child_output(&stdout)
            .ok_or_else(|| format!("{name} printed unreadable results: {stdout:?}"))
    }
}
