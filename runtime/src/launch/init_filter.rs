//! The seccomp filter of moat's init: once it has started the workload, the
//! init only waits for signals, forwards them, reaps children, reports one
//! status and exits. Everything else kills it.
//!
//! The init does not run under the workload's profile: a user profile is
//! written for the command, may refuse calls the init needs (`wait4`,
//! `kill`) or kill on them, and the init must outlive the command to report
//! its status. This allow-list is narrower than any useful profile: should
//! the workload ever take control of the init (it would need
//! `CAP_SYS_PTRACE` in the host's user namespace, as the init is not
//! dumpable), it gains no system call the init did not already have.

use crate::seccomp::bpf::{Program, SockFilter};

/// The system calls the init makes after the filter is in place.
fn allowed() -> [libc::c_long; 8] {
    [
        libc::SYS_rt_sigtimedwait,
        libc::SYS_wait4,
        libc::SYS_kill,
        libc::SYS_write,
        libc::SYS_close,
        libc::SYS_exit_group,
        libc::SYS_exit,
        libc::SYS_restart_syscall,
    ]
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Bit 30 marks x32 system calls on x86_64.
const X32_BIT: u32 = 0x4000_0000;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// The init's filter for the native architecture `audit_arch`
/// (`AUDIT_ARCH_*`): a system call of any other architecture (i386 or x32
/// on x86_64) or not on the list kills the init.
pub fn program(audit_arch: u32) -> Program {
    let list = allowed();
    let n = list.len() as u8;
    let mut p = vec![
        // Load arch (offset 4); another ABI is refused outright.
        insn(BPF_LD_W_ABS, 0, 0, 4),
        insn(BPF_JEQ_K, 1, 0, audit_arch),
        insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS),
        // Load nr (offset 0); x32 numbers carry bit 30.
        insn(BPF_LD_W_ABS, 0, 0, 0),
        insn(BPF_JGE_K, n, 0, X32_BIT),
    ];
    for (i, nr) in list.iter().enumerate() {
        // Jump to the ALLOW at the end of the list.
        let to_allow = (list.len() - i) as u8;
        p.push(insn(BPF_JEQ_K, to_allow, 0, *nr as u32));
    }
    p.push(insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS));
    p.push(insn(BPF_RET_K, 0, 0, RET_ALLOW));
    Program(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::bpf::SeccompData;

    const ARCH: u32 = 0xc000_003e;

    fn verdict(nr: i64, arch: u32) -> u32 {
        program(ARCH)
            .evaluate(&SeccompData {
                nr: nr as i32,
                arch,
                ..Default::default()
            })
            .unwrap()
    }

    #[test]
    fn only_the_listed_calls_of_the_native_abi_pass() {
        for nr in allowed() {
            assert_eq!(verdict(nr, ARCH), RET_ALLOW, "nr {nr}");
        }
        for nr in [
            libc::SYS_ptrace,
            libc::SYS_execve,
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_mmap,
            libc::SYS_unshare,
            libc::SYS_read,
        ] {
            assert_eq!(verdict(nr, ARCH), RET_KILL_PROCESS, "nr {nr}");
        }
        // The same numbers through another ABI, and x32's.
        assert_eq!(verdict(libc::SYS_write, 0x4000_0003), RET_KILL_PROCESS);
        assert_eq!(
            verdict(libc::SYS_write | i64::from(X32_BIT), ARCH),
            RET_KILL_PROCESS
        );
    }
}
