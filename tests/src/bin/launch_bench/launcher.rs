//! Launching a variant: the private working directory, the command each
//! launcher runs a workload with (crun and runc from the bundle, bwrap with
//! its filter on fd 3), and one timed run, reaped with `wait4`.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use moat_tests::oci::{self, CgroupParents, HOST_ID, ID_RANGE};

use super::variants::{Kind, Sample, Variant};
use super::{Opts, BWRAP_SECCOMP_FD, CGROUP_PARENT, PIDS_LIMIT};

/// A private temporary directory (state, sub-id files, logs, the default
/// bundle, bwrap's filter), and the cgroup parents that did not exist
/// before the bench.
pub(super) struct Work {
    pub(super) dir: PathBuf,
    parents: CgroupParents,
}

impl Work {
    pub(super) fn new() -> Result<Work, String> {
        let dir = std::env::temp_dir().join(format!("moat-launch-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The containers' root (host uid 100000) must reach the bundle.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let ids = format!("moat:{HOST_ID}:{}\n", ID_RANGE * 100);
        for f in ["subuid", "subgid"] {
            fs::write(dir.join(f), &ids).map_err(|e| format!("{f}: {e}"))?;
        }
        Ok(Work {
            dir,
            parents: CgroupParents::before(CGROUP_PARENT),
        })
    }

    /// The seccomp cache of the cold-cache variant, emptied before each of
    /// its runs (the warm variants use the default one, under their
    /// private state directory).
    pub(super) fn cold_cache(&self) -> PathBuf {
        self.dir.join("cold-cache")
    }

    /// Empties the cold-cache variant's cache.
    fn empty_cold_cache(&self) -> Result<(), String> {
        let dir = self.cold_cache();
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot empty {}: {e}", dir.display())),
        }
    }

    /// `name` in the directory, opened for writing (truncated) or reading
    /// (created empty if missing).
    fn file(&self, name: &str, write: bool) -> Result<File, String> {
        let path = self.dir.join(name);
        fs::OpenOptions::new()
            .read(!write)
            .write(true)
            .create(true)
            .truncate(write)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Removes the directory and the `moat-bench` cgroups this run made
    /// (children first; a cgroup still in use stays, with a warning).
    pub(super) fn cleanup(&self) {
        self.parents.remove("launch_bench");
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "launch_bench: warning: could not remove {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// Launch commands for every variant.
pub(super) struct Launcher<'a> {
    pub(super) opts: &'a Opts,
    pub(super) work: &'a Work,
    pub(super) bundle: PathBuf,
    /// bwrap's seccomp program (raw cBPF), when bwrap is measured.
    pub(super) bpf: Option<PathBuf>,
    pub(super) seq: u64,
}

impl Launcher<'_> {
    /// The command that runs `argv` under `v` (for crun and runc `argv` is
    /// in the bundle's `config.json` instead). Its stdin is an empty file
    /// of ours, never `/dev/null` (see [`oci::runtime_command`]).
    pub(super) fn command(&mut self, v: &Variant, argv: &[&str]) -> Result<Command, String> {
        let stdin = self.work.file("stdin", false)?;
        let mut c = match v.kind {
            Kind::Floor => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
            Kind::Moat | Kind::MoatCold | Kind::MoatOther => {
                let mut c = Command::new(&v.exe);
                if v.kind == Kind::MoatCold {
                    c.env("MOAT_CACHE_DIR", self.work.cold_cache());
                }
                c.env("MOAT_SUBUID_FILE", self.work.dir.join("subuid"))
                    .env("MOAT_SUBGID_FILE", self.work.dir.join("subgid"))
                    .env("MOAT_STATE_DIR", self.work.dir.join("state"))
                    .args(["run", "--pids-limit", &PIDS_LIMIT.to_string()])
                    .args(["--userns", "auto", "--cgroup-parent", CGROUP_PARENT, "--"])
                    .args(argv);
                c
            }
            Kind::Crun | Kind::Runc => {
                self.seq += 1;
                let name = v.kind.peer();
                let id = format!("bench-{}-{}", std::process::id(), self.seq);
                let root = self.work.dir.join(format!("{name}-root"));
                return Ok(oci::runtime_command(
                    &v.exe,
                    &root,
                    &self.bundle,
                    &id,
                    stdin,
                ));
            }
            Kind::Bwrap => self.bwrap(v, argv)?,
        };
        c.stdin(stdin);
        Ok(c)
    }

    /// `bwrap … --seccomp 3 -- argv`, with the filter file opened afresh
    /// (bwrap reads it to the end, so a shared offset would be spent after
    /// one run) and handed over as fd 3.
    fn bwrap(&self, v: &Variant, argv: &[&str]) -> Result<Command, String> {
        let bpf = self
            .bpf
            .as_ref()
            .ok_or("bwrap: no compiled seccomp program")?;
        let file = File::open(bpf).map_err(|e| format!("{}: {e}", bpf.display()))?;
        let mut c = Command::new(&v.exe);
        c.args(["--unshare-user", "--uid", "0", "--gid", "0"])
            .args(["--ro-bind", "/", "/"])
            .args(["--seccomp", &BWRAP_SECCOMP_FD.to_string(), "--"])
            .args(argv);
        pass_fd(&mut c, file, BWRAP_SECCOMP_FD);
        Ok(c)
    }

    /// Runs `v` once on `/bin/true`, timed, and checks it exits 0. Its
    /// stdout and stderr go to files of ours (see [`Launcher::command`]).
    /// The cold-cache variant's cache is emptied first, untimed.
    pub(super) fn time_once(&mut self, v: &Variant) -> Result<Sample, String> {
        if v.kind == Kind::MoatCold {
            self.work.empty_cold_cache()?;
        }
        let stem = v.kind.label().replace(['/', ' ', '(', ')'], "_");
        let log = self.work.dir.join(format!("{stem}.stderr"));
        let mut cmd = self.command(v, &["/bin/true"])?;
        cmd.stdout(self.work.file(&format!("{stem}.stdout"), true)?)
            .stderr(self.work.file(&format!("{stem}.stderr"), true)?);
        let start = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: cannot start {}: {e}", v.kind.label(), v.exe.display()))?;
        let (status, ru) = wait4(child.id() as i32)?;
        let wall = start.elapsed();
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            let stderr = fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "{} of /bin/true failed ({}): {}",
                v.kind.label(),
                describe_status(status),
                stderr.trim()
            ));
        }
        Ok(Sample {
            wall,
            maxrss_kib: ru.ru_maxrss,
        })
    }
}

/// Makes `file` the child's descriptor `target`, inherited across `execve`
/// (`dup2` clears close-on-exec on the copy; when the file already has
/// that number, the flag is cleared by hand). The parent's copy closes when
/// the command is dropped.
fn pass_fd(c: &mut Command, file: File, target: i32) {
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and
    // exec, on descriptors the closure owns or is about to create.
    unsafe {
        c.pre_exec(move || {
            let src = file.as_raw_fd();
            let rc = if src == target {
                libc::fcntl(target, libc::F_SETFD, 0)
            } else {
                libc::dup2(src, target)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Compiles the built-in default profile to raw cBPF with `moat profile
/// compile` (what bwrap takes), into `out`.
pub(super) fn compile_bpf(moat: &Path, out: &Path) -> Result<(), String> {
    let o = Command::new(moat)
        .args(["profile", "compile", "default", "--output"])
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} profile compile: {e}", moat.display()))?;
    if !o.status.success() {
        return Err(format!(
            "{} profile compile default failed ({}): {}",
            moat.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    match fs::metadata(out) {
        Ok(m) if m.len() > 0 && m.len() % 8 == 0 => Ok(()),
        Ok(m) => Err(format!(
            "{}: {} bytes is not a cBPF program (8 bytes an instruction)",
            out.display(),
            m.len()
        )),
        Err(e) => Err(format!("{}: {e}", out.display())),
    }
}

fn wait4(pid: i32) -> Result<(i32, libc::rusage), String> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            return Ok((status, ru));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4({pid}): {e}"));
        }
    }
}

fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}
