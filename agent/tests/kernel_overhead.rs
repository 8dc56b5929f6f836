//! Overhead of the attached programs, as ratios against no programs: a getppid
//! loop (every syscall takes the paired fast path of `sys_enter` + `sys_exit`) and
//! a fork/exit/wait loop (which adds the scheduler programs).
//!
//! A measurement, not a check: ignored by default; run it on a quiet machine in a
//! release build:
//!
//! ```sh
//! cargo test --release -p moat-agent --test kernel_overhead -- --ignored --nocapture
//! ```
//!
//! Rounds alternate unattached and attached runs (a fresh load each time), and
//! each figure is the median of the rounds. The loops run in a process forked
//! before anything is loaded, as a workload would: forked after the load, it would
//! inherit the loader's map and link descriptors and ring-buffer mapping, whose
//! copying and closing inflate the fork loop. `MOAT_OVERHEAD_ROUNDS` and
//! `MOAT_OVERHEAD_CALLS` override the defaults (5 rounds of 10,000,000 calls).

mod kernel_common;

use std::time::{Duration, Instant};

use moat_agent::kernel::{Kernel, KernelConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn getppid_loop(calls: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: getppid has no arguments.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    start.elapsed()
}

fn fork_loop(forks: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..forks {
        // SAFETY: the child exits at once.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe { libc::_exit(0) };
        }
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A process that runs the loops on request: `g` for the getppid loop, `f` for
/// the fork loop, anything else to exit; it answers with the duration in ns.
struct Bench {
    pid: libc::pid_t,
    to: libc::c_int,
    from: libc::c_int,
}

impl Bench {
    fn start(calls: u64, forks: u64) -> Bench {
        let (mut down, mut up) = ([0; 2], [0; 2]);
        // SAFETY: pipe with valid arrays.
        unsafe {
            assert_eq!(libc::pipe(down.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(up.as_mut_ptr()), 0);
        }
        // SAFETY: the child only runs loops and raw reads/writes, then exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                let mut cmd = 0u8;
                // SAFETY: reading one byte into a local.
                if unsafe { libc::read(down[0], (&mut cmd as *mut u8).cast(), 1) } != 1 {
                    unsafe { libc::_exit(0) };
                }
                let took = match cmd {
                    b'g' => getppid_loop(calls),
                    b'f' => fork_loop(forks),
                    _ => unsafe { libc::_exit(0) },
                };
                let ns = took.as_nanos() as u64;
                // SAFETY: writing 8 bytes from a local.
                unsafe { libc::write(up[1], (&ns as *const u64).cast(), 8) };
            }
        }
        Bench {
            pid,
            to: down[1],
            from: up[0],
        }
    }

    fn run(&self, cmd: u8) -> Duration {
        let mut ns = 0u64;
        // SAFETY: one byte out, eight bytes into a local.
        unsafe {
            assert_eq!(libc::write(self.to, (&cmd as *const u8).cast(), 1), 1);
            assert_eq!(libc::read(self.from, (&mut ns as *mut u64).cast(), 8), 8);
        }
        Duration::from_nanos(ns)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // SAFETY: ask the child to exit, then reap it.
        unsafe {
            libc::write(self.to, b"q".as_ptr().cast(), 1);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            libc::close(self.to);
            libc::close(self.from);
        }
    }
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn overhead_of_the_attached_programs() {
    skip_unless_privileged!();
    let rounds = env_or("MOAT_OVERHEAD_ROUNDS", 5);
    let calls = env_or("MOAT_OVERHEAD_CALLS", 10_000_000);
    let forks = env_or("MOAT_OVERHEAD_FORKS", 3_000);
    if cfg!(debug_assertions) {
        eprintln!("note: debug build; the loop itself is slower than in release");
    }
    let bench = Bench::start(calls, forks);
    bench.run(b'g');
    let (mut bare, mut attached, mut bare_fork, mut attached_fork) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        bare.push(bench.run(b'g'));
        bare_fork.push(bench.run(b'f'));
        let kernel = Kernel::load(KernelConfig::default()).expect("loading the kernel side");
        attached.push(bench.run(b'g'));
        attached_fork.push(bench.run(b'f'));
        drop(kernel);
    }
    drop(bench);
    let (bare, attached) = (median(bare), median(attached));
    let (bare_fork, attached_fork) = (median(bare_fork), median(attached_fork));
    let per_call = |d: Duration| d.as_secs_f64() * 1e9 / calls as f64;
    let per_fork = |d: Duration| d.as_secs_f64() * 1e6 / forks as f64;
    eprintln!(
        "getppid loop ({calls} calls, median of {rounds}): {:.1} ns/call bare, {:.1} ns/call \
         attached, ratio {:.3}",
        per_call(bare),
        per_call(attached),
        attached.as_secs_f64() / bare.as_secs_f64()
    );
    eprintln!(
        "fork/exit/wait loop ({forks} forks, median of {rounds}): {:.1} us bare, {:.1} us \
         attached, ratio {:.3}",
        per_fork(bare_fork),
        per_fork(attached_fork),
        attached_fork.as_secs_f64() / bare_fork.as_secs_f64()
    );
}
