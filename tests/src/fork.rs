//! Running a closure in a forked child and collecting how it ended.
//!
//! A seccomp filter cannot be removed once installed, so tests that load one
//! do it in a child process (as youki's tests do), never in the test process.
//!
//! The child reports through a shared anonymous mapping rather than a pipe:
//! pushing a value is a plain memory store, so reporting works whatever the
//! filter under test denies (even `write` and `exit_group`).
//!
//! The test harness is multi-threaded, so the child runs in a copy of a
//! process whose other threads vanished mid-flight. glibc makes `malloc`
//! safe after `fork`, which is all the children here rely on besides raw
//! syscalls.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Most values one child can report.
pub const MAX_VALUES: usize = 256;

/// Exit code of a child whose closure panicked (its message goes to stderr).
pub const PANICKED: i32 = 101;

/// How long a child may run before it is killed and the test fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called `_exit(code)`.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

/// What a child left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The child's pid.
    pub pid: libc::pid_t,
    /// How it ended.
    pub exit: Exit,
    /// The values it pushed with [`Report::push`], in order.
    pub values: Vec<i64>,
}

/// The region shared between parent and child.
#[repr(C)]
struct Shared {
    len: AtomicUsize,
    values: [AtomicI64; MAX_VALUES],
}

/// The child's side of the report.
pub struct Report {
    shared: *const Shared,
}

impl Report {
    /// Appends `v` to the report. Makes no syscall, so it works under any
    /// filter and from any thread of the child.
    pub fn push(&self, v: i64) {
        // SAFETY: the mapping lives until the parent has reaped the child.
        let shared = unsafe { &*self.shared };
        let i = shared.len.fetch_add(1, Ordering::SeqCst);
        if let Some(slot) = shared.values.get(i) {
            slot.store(v, Ordering::SeqCst);
        }
    }
}

/// Runs `body` in a forked child, which exits with the code `body` returns,
/// and waits for it (killing it after a timeout).
///
/// The child cannot dump core (seccomp's SIGSYS would otherwise leave core
/// files behind) and is killed if the forking thread dies.
pub fn run<F: FnOnce(&Report) -> i32>(body: F) -> Outcome {
    let size = std::mem::size_of::<Shared>();
    let map = shared_mapping(size);
    let report = Report {
        shared: map as *const Shared,
    };

    // SAFETY: the child only runs `body` and leaves with `_exit`, never
    // returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        child(&report, body);
    }

    let exit = wait(pid);
    // SAFETY: `map` is the mapping created above and no longer used by the
    // child, which has been reaped.
    let (len, values) = unsafe {
        let shared = &*(map as *const Shared);
        let len = shared.len.load(Ordering::SeqCst);
        let values = shared.values[..len.min(MAX_VALUES)]
            .iter()
            .map(|v| v.load(Ordering::SeqCst))
            .collect();
        libc::munmap(map, size);
        (len, values)
    };
    assert!(
        len <= MAX_VALUES,
        "the child pushed {len} values, more than {MAX_VALUES}"
    );
    Outcome { pid, exit, values }
}

fn child<F: FnOnce(&Report) -> i32>(report: &Report, body: F) -> ! {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(report))) {
        Ok(code) => code,
        Err(payload) => {
            // The harness captured the panic message into memory the
            // parent never sees; repeat it on fd 2. (A panic hook cannot be
            // set here: its lock may be held by a thread that vanished.)
            let what = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(non-string payload)");
            let msg = format!("panic in forked child: {what}\n");
            // SAFETY: writing a valid buffer to stderr.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
            PANICKED
        }
    };
    // SAFETY: ends the child without running the parent's atexit handlers.
    unsafe { libc::_exit(code) }
}

fn wait(pid: libc::pid_t) -> Exit {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(rc >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if rc == pid {
            if libc::WIFEXITED(status) {
                return Exit::Code(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Exit::Signal(libc::WTERMSIG(status));
            }
            continue; // stopped or continued: keep waiting
        }
        if start.elapsed() > TIMEOUT {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("child {pid} still running after {TIMEOUT:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A fresh zeroed `MAP_SHARED` anonymous mapping of `size` bytes, which a forked
/// child shares with its parent.
fn shared_mapping(size: usize) -> *mut libc::c_void {
    // SAFETY: a fresh anonymous mapping; zeroed memory is valid for atomics.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(
        map,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    map
}

/// Most values a [`Stopped`] child can report.
pub const STOPPED_VALUES: usize = 64;

/// Memory shared between the test and a [`Stopped`] child: the child reports
/// numbers, and a flag tells it that it may start.
#[repr(C)]
pub struct Slots {
    /// Set by [`Stopped::start`].
    pub go: AtomicI64,
    /// What the child reports, by index ([`Slots::report`]).
    pub values: [AtomicI64; STOPPED_VALUES],
}

impl Slots {
    /// Stores `v` as value `i`.
    pub fn report(&self, i: usize, v: i64) {
        self.values[i].store(v, Ordering::SeqCst);
    }
}

/// A forked child that waits until [`Stopped::start`] before it runs, so the
/// test can place it (in a cgroup, say) first; used by the kernel-side tests.
pub struct Stopped {
    /// The child's pid.
    pub pid: libc::pid_t,
    slots: *mut Slots,
    reaped: Option<i32>,
}

// SAFETY: the shared mapping is only accessed through atomics.
unsafe impl Send for Stopped {}

impl Stopped {
    /// Forks a child that waits for [`Stopped::start`], then runs `body` and exits
    /// with the code it returns (101 if it panics). The child is killed with the
    /// test (`PR_SET_PDEATHSIG`) and dumps no core.
    pub fn fork(body: impl FnOnce(&Slots) -> i32) -> Stopped {
        let slots = shared_mapping(std::mem::size_of::<Slots>()).cast::<Slots>();
        // SAFETY: fork; the child only runs `body` and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: prctl and setrlimit with plain arguments.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            }
            // SAFETY: the mapping lives until the parent reaps the child.
            let slots = unsafe { &*slots };
            while slots.go.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(slots)))
                .unwrap_or(PANICKED);
            // SAFETY: leave without running the test harness's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        Stopped {
            pid,
            slots,
            reaped: None,
        }
    }

    fn slots(&self) -> &Slots {
        // SAFETY: the mapping lives as long as `self`.
        unsafe { &*self.slots }
    }

    /// Lets the child run its body.
    pub fn start(&self) {
        self.slots().go.store(1, Ordering::SeqCst);
    }

    /// Value `i` the child reported.
    pub fn value(&self, i: usize) -> i64 {
        self.slots().values[i].load(Ordering::SeqCst)
    }

    /// The child's wait status if it has ended (reaping it), without waiting.
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.reaped.is_none() {
            let mut status = 0;
            // SAFETY: waitpid on our own child.
            if unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } == self.pid {
                self.reaped = Some(status);
            }
        }
        self.reaped
    }

    /// Waits for the child (killing it after `timeout`); returns its wait status.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let mut status = 0;
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(self.pid, libc::SIGKILL);
                    libc::waitpid(self.pid, &mut status, 0);
                }
                self.reaped = Some(status);
                panic!("child {} timed out after {timeout:?}", self.pid);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits and asserts the child exited with status 0.
    #[track_caller]
    pub fn wait_success(&mut self) {
        let status = self.wait(Duration::from_secs(120));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child {} ended with wait status {status:#x} (exit code 101 = panic, see stderr)",
            self.pid
        );
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
        // SAFETY: unmapping our own mapping, which the child no longer uses.
        unsafe { libc::munmap(self.slots.cast(), std::mem::size_of::<Slots>()) };
    }
}

/// Ends the calling process with SIGILL without making a syscall: the way
/// out for a child whose filter denies `exit_group` and `exit`.
pub fn die_without_syscalls() -> ! {
    // SAFETY: `ud2` raises SIGILL; nothing after it runs.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("ud2", options(noreturn))
    }
    // SAFETY: `udf` raises SIGILL; nothing after it runs.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!("udf #0", options(noreturn))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    compile_error!("die_without_syscalls: add this architecture's illegal instruction");
}
