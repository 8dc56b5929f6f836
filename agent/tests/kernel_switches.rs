//! Denials stay exact however threads share and change CPUs.
//!
//! Under the pairing, the running thread's state lives in a per-CPU cache
//! that `sched_switch` writes back when the thread leaves the CPU (see
//! `ebpf/moat-ebpf/src/thread_state.rs`). These tests are the attacks on that
//! cache: a stale entry would hand one thread's state to the next thread on
//! the CPU (a denial taken for a paired exit, or a paired exit for a denial),
//! and a lost write-back would misclassify a thread that comes back, or comes
//! back on another CPU, in the middle of a syscall. They hold under every
//! mechanism.

mod kernel_common;

use std::sync::{
    atomic::{AtomicBool, AtomicI64, Ordering},
    Arc,
};

use kernel_common::{denials_of, spawn_in, Filter, TestCgroup};
use moat_agent::kernel::{DenialAction, Kernel, KernelSource};

/// Denied calls in the one-CPU test: enough for many timer preemptions.
const DENIED: i64 = 200_000;
/// Denied calls in the migration test, one after each move.
const MOVES: i64 = 2_000;

fn filter() -> Filter {
    Filter::allow_except(r#"{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}"#)
}

fn kernel() -> Kernel {
    Kernel::load(kernel_common::config()).expect("loading the kernel side")
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity");
    // SAFETY: reading bits of a valid set.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Moves the calling thread onto `cpu` alone: the move happens inside the
/// syscall, so the thread returns from it on `cpu` after leaving its old one.
fn pin_to(cpu: usize) {
    // SAFETY: as in allowed_cpus.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from a set of this size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}");
}

/// The calling thread's context switches so far (voluntary + involuntary).
fn switches_of_this_thread() -> i64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
    status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<i64>().ok())
        .sum()
}

fn assert_exactly(kernel: &mut Kernel, cgroup: &TestCgroup, count: i64) {
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(
        denials_of(&snapshot, cgroup.id()),
        kernel_common::only_getppid(DenialAction::Errno, 13, count as u64),
        "every denial counted once, and nothing else taken for one"
    );
}

/// Three threads on one CPU: one denied in a loop (yielding now and then),
/// one sleeping a microsecond at a time (so it leaves the CPU inside a
/// syscall and comes back to finish it), one spinning in user space (so the
/// denied thread is also preempted between syscalls, and its first event
/// after coming back is a denial).
#[test]
fn threads_sharing_one_cpu_count_exactly() {
    skip_unless_privileged!();
    let mut kernel = kernel();
    let filter = filter();
    let cpu = *allowed_cpus().first().expect("a CPU");
    let cgroup = TestCgroup::v2("switch-one-cpu");
    let mut child = spawn_in(&[&cgroup], |shared| {
        pin_to(cpu);
        filter.install(false);
        let stop = Arc::new(AtomicBool::new(false));
        let odd_sleeps = Arc::new(AtomicI64::new(0));
        let sleeper = {
            let (stop, odd) = (stop.clone(), odd_sleeps.clone());
            std::thread::spawn(move || {
                let nap = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 1_000,
                };
                while !stop.load(Ordering::Relaxed) {
                    let ret = sys!(
                        libc::SYS_clock_nanosleep,
                        libc::CLOCK_MONOTONIC,
                        0,
                        &nap as *const libc::timespec,
                        0
                    );
                    if ret != 0 {
                        odd.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let spinner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        };
        let before = switches_of_this_thread();
        let mut denied = 0;
        for i in 0..DENIED {
            if sys!(libc::SYS_getppid) == -i64::from(libc::EACCES) {
                denied += 1;
            }
            if i % 64 == 0 {
                sys!(libc::SYS_sched_yield);
            }
        }
        let switches = switches_of_this_thread() - before;
        stop.store(true, Ordering::Relaxed);
        sleeper.join().expect("sleeper");
        spinner.join().expect("spinner");
        kernel_common::report(shared, 0, denied);
        kernel_common::report(shared, 1, odd_sleeps.load(Ordering::Relaxed));
        kernel_common::report(shared, 2, switches);
        0
    });
    child.wait_success();
    assert_eq!(child.value(0), DENIED, "denials the thread saw");
    assert_eq!(child.value(1), 0, "sleeps that did not return 0");
    // The test is only worth something if the CPU really changed hands.
    assert!(
        child.value(2) >= 1_000,
        "the denied thread left the CPU only {} times",
        child.value(2)
    );
    assert_exactly(&mut kernel, &cgroup, DENIED);
}

/// A thread that moves to another CPU in the middle of each of its syscalls
/// (`sched_setaffinity` migrates the caller before returning), with a
/// denial after each move, and a second thread doing the same in the other
/// direction, so each CPU's cache sees both.
#[test]
fn threads_moving_between_cpus_count_exactly() {
    skip_unless_privileged!();
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("SKIP: needs two CPUs to move between, this process may use {cpus:?}");
        return;
    }
    let mut kernel = kernel();
    let filter = filter();
    let cgroup = TestCgroup::v2("switch-moves");
    let mut child = spawn_in(&[&cgroup], |shared| {
        filter.install(false);
        let mover = |offset: usize| {
            let cpus = cpus.clone();
            move || {
                let (mut denied, mut moved) = (0, 0);
                for i in 0..MOVES as usize {
                    let cpu = cpus[(i + offset) % cpus.len()];
                    pin_to(cpu);
                    // SAFETY: no arguments.
                    if unsafe { libc::sched_getcpu() } == cpu as i32 {
                        moved += 1;
                    }
                    if sys!(libc::SYS_getppid) == -i64::from(libc::EACCES) {
                        denied += 1;
                    }
                }
                (denied, moved)
            }
        };
        let other = std::thread::spawn(mover(1));
        let (denied, moved) = mover(0)();
        let (other_denied, other_moved) = other.join().expect("second mover");
        kernel_common::report(shared, 0, denied + other_denied);
        kernel_common::report(shared, 1, moved + other_moved);
        0
    });
    child.wait_success();
    assert_eq!(child.value(0), 2 * MOVES, "denials the threads saw");
    assert_eq!(
        child.value(1),
        2 * MOVES,
        "moves that landed on the CPU asked for"
    );
    assert_exactly(&mut kernel, &cgroup, 2 * MOVES);
}
