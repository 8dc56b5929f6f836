//! Cgroups made for the run, children held until released, and what /proc
//! says of moatd (CPU time, memory).

use super::*;

/// Cgroup directories made by the run; processes left in them are killed
/// and the directories removed on drop.
pub(super) struct Cgroups {
    pub(super) dirs: Vec<PathBuf>,
}

impl Cgroups {
    pub(super) fn new() -> Cgroups {
        Cgroups { dirs: Vec::new() }
    }

    pub(super) fn create(&mut self, path: PathBuf) -> Result<&Path, String> {
        std::fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        self.dirs.push(path);
        Ok(self.dirs.last().expect("just pushed"))
    }

    pub(super) fn remove_all(&mut self) -> Result<(), String> {
        let mut failed = Vec::new();
        for dir in self.dirs.drain(..) {
            if let Err(e) = remove_cgroup(&dir) {
                failed.push(format!("{}: {e}", dir.display()));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!("cannot remove cgroups: {}", failed.join("; ")))
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let _ = self.remove_all();
    }
}

pub(super) fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: plain kill(2) of a process in our own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A forked child stopped on a pipe until [`Held::release`]; it then runs
/// `body` and exits with its result.
pub(super) struct Held(PipedChild);

impl Held {
    /// `body` gets the write end of the result pipe.
    pub(super) fn fork(body: impl FnOnce(&mut std::fs::File) -> i32) -> Result<Held, String> {
        PipedChild::fork(|mut go, mut out| {
            let mut b = [0u8];
            if go.read_exact(&mut b).is_ok() {
                body(&mut out)
            } else {
                1
            }
        })
        .map(Held)
    }

    pub(super) fn join(&self, cgroup: &Path) -> Result<(), String> {
        let pid = self.0.pid();
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("moving {pid} into {}: {e}", cgroup.display()))
    }

    pub(super) fn release(&mut self) -> Result<(), String> {
        let mut go = self.0.to.take().ok_or("released twice")?;
        go.write_all(b"g")
            .map_err(|e| format!("releasing the child: {e}"))
    }

    /// Waits for the child; its output and whether it exited 0.
    pub(super) fn wait(mut self) -> Result<String, String> {
        let mut out = String::new();
        let _ = self.0.from.read_to_string(&mut out);
        let status = self.0.reap();
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(out)
        } else {
            Err(format!("child ended with wait status {status:#x}: {out}"))
        }
    }
}

/// utime + stime of `pid`, in ms.
pub(super) fn cpu_ms(pid: i32) -> Result<f64, String> {
    let stat = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let hz = procfs::ticks_per_second() as f64;
    Ok((stat.utime + stat.stime) as f64 * 1e3 / hz)
}

/// VmRSS (`"VmRSS"`) or VmHWM (`"VmHWM"`) of `pid`, in MiB.
pub(super) fn status_mib(pid: i32, field: &str) -> Result<f64, String> {
    let status = procfs::process::Process::new(pid)
        .and_then(|p| p.status())
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let kib = match field {
        "VmRSS" => status.vmrss,
        "VmHWM" => status.vmhwm,
        _ => None,
    };
    kib.map(|kb| kb as f64 / 1024.0)
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}
