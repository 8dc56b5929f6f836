//! The worker process that runs the overhead workloads: forked before any
//! agent exists, it runs one on request and answers with its duration.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::piped::PipedChild;
use super::HASH_BATCH;

/// A process forked before anything else that runs a workload on request:
/// `g` the getppid loop, `f` the fork loop, `h` the hashing, `p` the pipe
/// ping-pong; it answers with the duration in ns (`u64::MAX` on failure).
pub(super) struct Worker(PipedChild);

impl Worker {
    /// Forked while this process has no other thread yet.
    pub(super) fn start(
        calls: u64,
        forks: u64,
        round_trips: u64,
        files: Vec<PathBuf>,
    ) -> Result<Worker, String> {
        PipedChild::fork(|mut rd, mut wr| loop {
            let mut cmd = [0u8];
            if rd.read_exact(&mut cmd).is_err() {
                return 0;
            }
            let ns = match cmd[0] {
                b'g' => getppid_loop(calls),
                b'f' => fork_loop(forks),
                b'h' => hash_files(&files),
                b'p' => ping_pong(round_trips),
                _ => return 0,
            };
            if wr.write_all(&ns.to_ne_bytes()).is_err() {
                return 1;
            }
        })
        .map(Worker)
    }

    /// Runs workload `cmd`; its duration in ns.
    pub(super) fn run(&self, cmd: u8) -> Result<f64, String> {
        let mut ns = [0u8; 8];
        let mut to = self.0.to.as_ref().ok_or("the worker has stopped")?;
        to.write_all(&[cmd])
            .and_then(|()| (&self.0.from).read_exact(&mut ns))
            .map_err(|e| format!("talking to the worker: {e}"))?;
        let ns = u64::from_ne_bytes(ns);
        if ns == u64::MAX {
            return Err(format!("workload {:?} failed in the worker", cmd as char));
        }
        Ok(ns as f64)
    }
}

impl Drop for Worker {
    /// Closing its pipe ends the worker's loop; it is reaped, not killed.
    fn drop(&mut self) {
        self.0.reap();
    }
}

fn getppid_loop(calls: u64) -> u64 {
    let t = Instant::now();
    for _ in 0..calls {
        // SAFETY: no arguments.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    t.elapsed().as_nanos() as u64
}

fn fork_loop(forks: u64) -> u64 {
    let t = Instant::now();
    for _ in 0..forks {
        // SAFETY: the child exits at once.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: leaving the child.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            return u64::MAX;
        }
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    t.elapsed().as_nanos() as u64
}

/// `round_trips` one-byte round trips through two pipes between this process
/// and a child, both on one CPU: each is two context switches and four
/// syscalls, the workload that pays most for a program on `sched_switch`.
fn ping_pong(round_trips: u64) -> u64 {
    let Some(saved) = affinity() else {
        return u64::MAX;
    };
    // SAFETY: no arguments.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 || !set_affinity_to(cpu as usize) {
        return u64::MAX;
    }
    let ns = ping_pong_on_this_cpu(round_trips);
    // SAFETY: `saved` is the set read above, of the size passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&saved), &saved) };
    ns
}

fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    (rc == 0).then_some(set)
}

fn set_affinity_to(cpu: usize) -> bool {
    // SAFETY: as in affinity.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (the kernel's own CPU number).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0 }
}

fn ping_pong_on_this_cpu(round_trips: u64) -> u64 {
    let (mut there, mut back) = ([0i32; 2], [0i32; 2]);
    // SAFETY: two live two-int arrays.
    let made = unsafe { libc::pipe(there.as_mut_ptr()) == 0 && libc::pipe(back.as_mut_ptr()) == 0 };
    if !made {
        return u64::MAX;
    }
    let byte = [0u8; 1];
    let mut got = [0u8; 1];
    // SAFETY: the child only echoes bytes and exits (inheriting the affinity).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: descriptors of this process; buffers live for the calls.
        unsafe {
            // Only the parent may hold the write end: its close is the EOF.
            libc::close(there[1]);
            libc::close(back[0]);
            while libc::read(there[0], got.as_mut_ptr().cast(), 1) == 1 {
                if libc::write(back[1], got.as_ptr().cast(), 1) != 1 {
                    break;
                }
            }
            libc::_exit(0);
        }
    }
    // SAFETY: the child's ends, which this process does not use.
    unsafe {
        libc::close(there[0]);
        libc::close(back[1]);
    }
    let t = Instant::now();
    let mut ok = pid > 0;
    for _ in 0..round_trips {
        if !ok {
            break;
        }
        // SAFETY: as above.
        ok = unsafe {
            libc::write(there[1], byte.as_ptr().cast(), 1) == 1
                && libc::read(back[0], got.as_mut_ptr().cast(), 1) == 1
        };
    }
    let ns = t.elapsed().as_nanos() as u64;
    // SAFETY: closing our own descriptors ends the child's loop; reaping it.
    unsafe {
        libc::close(there[1]);
        libc::close(back[0]);
        if pid > 0 {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    if ok {
        ns
    } else {
        u64::MAX
    }
}

fn hash_files(files: &[PathBuf]) -> u64 {
    let t = Instant::now();
    for chunk in files.chunks(HASH_BATCH) {
        let ok = Command::new("sha256sum")
            .args(chunk)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return u64::MAX;
        }
    }
    t.elapsed().as_nanos() as u64
}

/// The regular files under /usr/share/doc, sorted, at most `max`.
pub(super) fn hash_file_list(max: usize) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                walk(&e.path(), out);
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new("/usr/share/doc"), &mut files);
    files.sort();
    files.truncate(max);
    if files.is_empty() {
        return Err("no files under /usr/share/doc to hash".into());
    }
    Ok(files)
}
