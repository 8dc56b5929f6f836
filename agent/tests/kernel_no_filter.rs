//! The pairing's no-filter state, attacked.
//!
//! Under the pairing, a thread alone in its process and without a seccomp
//! filter cannot be refused, so neither syscall program does anything for it
//! (`unrefusable` in `ebpf/moat-ebpf/src/kernel.rs`). A filter that reached
//! such a thread without ending that state would hide every refusal it makes
//! from then on. Each test puts a thread in the state (syscalls, and a few
//! trips off the CPU), then puts a filter on it some way, then is refused
//! [`N`] times: every way must count exactly [`N`]. They hold under every
//! mechanism.

mod kernel_common;

#[cfg(target_arch = "x86_64")]
use kernel_common::i386;
use kernel_common::{denials_of, only_getppid, spawn_in, Filter, TestCgroup};
use moat_agent::kernel::{DenialAction, Kernel, KernelSource};
use moat_runtime::seccomp::load;

/// Refusals after the filter arrives.
const N: i64 = 1_000;

fn filter() -> Filter {
    Filter::allow_except(r#"{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}"#)
}

fn kernel() -> Kernel {
    Kernel::load(kernel_common::config()).expect("loading the kernel side")
}

/// Syscalls, and sleeps that take the thread off its CPU and back, so that
/// its state has been through the per-CPU cache and its slot.
fn settle() {
    for i in 0..2_000 {
        sys!(libc::SYS_getppid);
        if i % 100 == 0 {
            // SAFETY: plain sleep.
            unsafe { libc::usleep(50) };
        }
    }
}

/// `getppid` [`N`] times; how many were refused with EACCES.
fn refused() -> i64 {
    (0..N)
        .filter(|_| sys!(libc::SYS_getppid) == -i64::from(libc::EACCES))
        .count() as i64
}

/// Runs `install` in a single-threaded child that has settled, then counts
/// its refusals, and checks that exactly those were counted.
fn assert_counted_after(tag: &str, install: impl FnOnce() -> i64) {
    let kernel = kernel();
    let cgroup = TestCgroup::v2(tag);
    let mut child = spawn_in(&[&cgroup], |shared| {
        if load::set_no_new_privs().is_err() {
            return 2;
        }
        settle();
        let rc = install();
        kernel_common::report(shared, 0, rc);
        kernel_common::report(shared, 1, refused());
        0
    });
    child.wait_success();
    assert_eq!(child.value(0), 0, "{tag}: installing the filter");
    assert_eq!(child.value(1), N, "{tag}: getppid calls refused");
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(
        denials_of(&snapshot, cgroup.id()),
        only_getppid(DenialAction::Errno, 13, N as u64),
        "{tag}"
    );
}

/// `struct sock_fprog` for `filter`.
fn fprog(filter: &Filter) -> libc::sock_fprog {
    libc::sock_fprog {
        len: filter.program.len() as u16,
        filter: filter.program.0.as_ptr() as *mut libc::sock_filter,
    }
}

#[test]
fn a_filter_installed_with_seccomp_is_counted() {
    skip_unless_privileged!();
    let filter = filter();
    let prog = fprog(&filter);
    assert_counted_after("nofilter-seccomp", || {
        const SECCOMP_SET_MODE_FILTER: i64 = 1;
        sys!(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog
        )
    });
}

#[test]
fn a_filter_installed_with_prctl_is_counted() {
    skip_unless_privileged!();
    let filter = filter();
    let prog = fprog(&filter);
    assert_counted_after("nofilter-prctl", || {
        sys!(
            libc::SYS_prctl,
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog
        )
    });
}

/// The i386 entry points (`int 0x80`), which have their own numbers: a
/// filter installed through them must end the state as well.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_filter_installed_through_int_0x80_is_counted() {
    skip_unless_privileged!();
    if !i386::available() {
        eprintln!("SKIP: this kernel runs no i386 syscalls (no IA32 emulation)");
        return;
    }
    let filter = filter();
    let image = compat::Fprog32::new(&filter);
    assert_counted_after("nofilter-i386-prctl", || {
        i386::syscall3(
            i386::PRCTL,
            22, /* PR_SET_SECCOMP */
            2,
            image.address(),
        )
    });
    assert_counted_after("nofilter-i386-seccomp", || {
        i386::syscall3(
            i386::SECCOMP,
            1, /* SET_MODE_FILTER */
            0,
            image.address(),
        )
    });
}

/// A thread that starts a second one is no longer alone: the second installs
/// a filter on both (`SECCOMP_FILTER_FLAG_TSYNC`) and exits, and the first,
/// which never made a seccomp call, is refused.
#[test]
fn a_filter_synced_from_another_thread_is_counted() {
    skip_unless_privileged!();
    let kernel = kernel();
    let filter = filter();
    let cgroup = TestCgroup::v2("nofilter-tsync");
    let mut child = spawn_in(&[&cgroup], |shared| {
        settle();
        std::thread::scope(|scope| {
            scope.spawn(|| filter.install(true));
        });
        settle_refused();
        kernel_common::report(shared, 0, refused());
        0
    });
    child.wait_success();
    assert_eq!(child.value(0), N, "getppid calls refused");
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(
        denials_of(&snapshot, cgroup.id()),
        only_getppid(DenialAction::Errno, 13, N as u64 + SETTLE_REFUSED)
    );
}

/// Refusals [`settle_refused`] makes.
const SETTLE_REFUSED: u64 = 100;

/// Refused calls with trips off the CPU between them, after the filter came.
fn settle_refused() {
    for _ in 0..SETTLE_REFUSED {
        sys!(libc::SYS_getppid);
        // SAFETY: plain sleep.
        unsafe { libc::usleep(50) };
    }
}

/// A filter image below 4 GiB, for the i386 entry points.
#[cfg(target_arch = "x86_64")]
mod compat {
    use super::Filter;

    /// `struct compat_sock_fprog` and the instructions, in one mapping below
    /// 4 GiB (the i386 ABI passes 32-bit pointers).
    pub struct Fprog32 {
        base: *mut u8,
    }

    impl Fprog32 {
        pub fn new(filter: &Filter) -> Fprog32 {
            let insns = filter.program.0.as_slice();
            let bytes = std::mem::size_of_val(insns);
            // SAFETY: a fresh anonymous mapping.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    16 + bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                    -1,
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED, "mmap MAP_32BIT");
            let base = base.cast::<u8>();
            let filter_at = base as u64 + 16;
            // SAFETY: writes inside the mapping: `len` (u16) at 0, the 32-bit
            // pointer at 4, the instructions from 16.
            unsafe {
                base.cast::<u16>().write(insns.len() as u16);
                base.add(4).cast::<u32>().write(filter_at as u32);
                std::ptr::copy_nonoverlapping(insns.as_ptr().cast::<u8>(), base.add(16), bytes);
            }
            Fprog32 { base }
        }

        pub fn address(&self) -> u64 {
            self.base as u64
        }
    }
}
