//! Multiplexed socket and IPC calls: `socketcall(2)` and `ipc(2)`.
//!
//! On i386 (and other ABIs with these multiplexers) `socket(AF_VSOCK, ...)`
//! can also be made as `socketcall(SYS_SOCKET, args)`, whose arguments are
//! behind a pointer that a filter cannot read. libseccomp turns a rule on
//! `socket` into a rule on `socketcall` with `call == SYS_SOCKET`, dropping
//! the condition on the family (and applying the other conditions to the
//! wrong registers), so Docker's family rules allow every family through
//! `socketcall`.
//!
//! moat therefore refuses, before the rest of the program runs,
//! `socketcall(N)` (and `ipc(N)`) for every call N that the profile filters
//! by argument, with ENOSYS: the workload cannot reach what the profile
//! refuses on x86_64, and a program told that the multiplexer is missing
//! can use the direct syscall, which the filter checks. Calls without
//! argument conditions keep libseccomp's translation. The same goes for
//! i386's old `mmap` and `select`, which take a pointer to their arguments.

use std::collections::BTreeSet;

use libseccomp::{ScmpArch, ScmpSyscall};

use super::bpf::{Program, SockFilter};
use super::plan::Plan;
use super::profile::Arch;

/// `SYS_*` call numbers of `socketcall(2)` (linux/net.h).
const SOCKET_CALLS: &[(&str, u32)] = &[
    ("socket", 1),
    ("bind", 2),
    ("connect", 3),
    ("listen", 4),
    ("accept", 5),
    ("getsockname", 6),
    ("getpeername", 7),
    ("socketpair", 8),
    ("send", 9),
    ("recv", 10),
    ("sendto", 11),
    ("recvfrom", 12),
    ("shutdown", 13),
    ("setsockopt", 14),
    ("getsockopt", 15),
    ("sendmsg", 16),
    ("recvmsg", 17),
    ("accept4", 18),
    ("recvmmsg", 19),
    ("sendmmsg", 20),
];

/// Call numbers of `ipc(2)` (linux/ipc.h); the kernel reads the low 16 bits
/// (the high 16 are a version).
const IPC_CALLS: &[(&str, u32)] = &[
    ("semop", 1),
    ("semget", 2),
    ("semctl", 3),
    ("semtimedop", 4),
    ("msgsnd", 11),
    ("msgrcv", 12),
    ("msgget", 13),
    ("msgctl", 14),
    ("shmat", 21),
    ("shmdt", 22),
    ("shmget", 23),
    ("shmctl", 24),
];

/// i386 syscalls that take a pointer to their arguments instead of the
/// arguments: `mmap` (90, old_mmap) and `select` (82, old_select). A rule
/// on their arguments compares that pointer, which the caller chooses, so
/// such a rule is worthless there; glibc uses `mmap2` and `_newselect`.
const INDIRECT: &[(Arch, &str)] = &[(Arch::X86, "mmap"), (Arch::X86, "select")];

/// The errno of a refused multiplexed call.
pub const REFUSED_ERRNO: u32 = libc::ENOSYS as u32;

/// What the prefix refuses on one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The architecture.
    pub arch: Arch,
    /// Refused `socketcall` calls, by name.
    pub socket: Vec<&'static str>,
    /// Refused `ipc` calls, by name.
    pub ipc: Vec<&'static str>,
    /// Refused syscalls that take their arguments behind a pointer.
    pub indirect: Vec<&'static str>,
}

struct Mux {
    nr: u32,
    calls: Vec<u32>,
    call_mask: u32,
}

/// Names of the syscalls the plan filters by argument.
fn filtered(plan: &Plan) -> BTreeSet<&str> {
    plan.rules
        .iter()
        .filter(|r| r.conditional)
        .map(|r| r.name.as_str())
        .collect()
}

fn refused(plan: &Plan, table: &'static [(&'static str, u32)]) -> (Vec<&'static str>, Vec<u32>) {
    let filtered = filtered(plan);
    table
        .iter()
        .filter(|(n, _)| filtered.contains(n))
        .map(|&(n, c)| (n, c))
        .unzip()
}

fn syscall_nr(name: &str, arch: ScmpArch) -> Option<u32> {
    let n = i32::from(ScmpSyscall::from_name_by_arch(name, arch).ok()?);
    u32::try_from(n).ok()
}

/// The prefix program for `plans` (one per architecture in the filter),
/// and what it refuses. An empty program when nothing is refused.
pub(super) fn prefix(plans: &[(Arch, ScmpArch, &Plan)]) -> Result<(Program, Vec<Refusal>), String> {
    let mut asm = Asm::default();
    let mut refusals = Vec::new();
    const RET: usize = 0;
    const END: usize = 1;
    for &(arch, scmp, plan) in plans {
        let mut muxes = Vec::new();
        let filtered = filtered(plan);
        let indirect: Vec<(&'static str, u32)> = INDIRECT
            .iter()
            .filter(|(a, n)| *a == arch && filtered.contains(n))
            .filter_map(|&(_, n)| Some((n, syscall_nr(n, scmp)?)))
            .collect();
        let (socket, socket_calls) = refused(plan, SOCKET_CALLS);
        let (ipc, ipc_calls) = refused(plan, IPC_CALLS);
        for (mux, calls, mask) in [
            ("socketcall", socket_calls, u32::MAX),
            ("ipc", ipc_calls, 0xffff),
        ] {
            if let (Some(nr), false) = (syscall_nr(mux, scmp), calls.is_empty()) {
                muxes.push(Mux {
                    nr,
                    calls,
                    call_mask: mask,
                });
            }
        }
        if muxes.is_empty() && indirect.is_empty() {
            continue;
        }
        let audit = arch.audit_arch().ok_or_else(|| {
            format!(
                "{} multiplexes socket calls, and moat does not know its audit token",
                arch.name()
            )
        })?;
        refusals.push(Refusal {
            arch,
            socket,
            ipc,
            indirect: indirect.iter().map(|(n, _)| *n).collect(),
        });
        let next_arch = asm.label();
        asm.load(4);
        asm.jeq(audit, None, Some(next_arch));
        asm.load(0);
        for (_, nr) in &indirect {
            asm.jeq(*nr, Some(RET), None);
        }
        if muxes.is_empty() {
            asm.ja(END);
        }
        let count = muxes.len();
        for (i, m) in muxes.into_iter().enumerate() {
            let next_mux = if i + 1 < count { asm.label() } else { END };
            // A holds the syscall number here (see above, or the jump).
            asm.jeq(m.nr, None, Some(next_mux));
            asm.load(16);
            if m.call_mask != u32::MAX {
                asm.and(m.call_mask);
            }
            for c in m.calls {
                asm.jeq(c, Some(RET), None);
            }
            asm.ja(END);
            if next_mux != END {
                asm.bind(next_mux);
            }
        }
        asm.bind(next_arch);
    }
    if refusals.is_empty() {
        return Ok((Program::default(), refusals));
    }
    asm.ja(END);
    asm.bind(RET);
    asm.ret(0x0005_0000 | REFUSED_ERRNO);
    asm.bind(END);
    Ok((asm.finish()?, refusals))
}

/// A tiny assembler for forward jumps to labels. Labels 0 and 1 are the
/// caller's fixed ones; [`Asm::label`] makes more.
struct Asm {
    code: Vec<(SockFilter, Option<usize>, Option<usize>)>,
    labels: Vec<Option<usize>>,
}

impl Default for Asm {
    fn default() -> Asm {
        Asm {
            code: Vec::new(),
            labels: vec![None, None],
        }
    }
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.code.len());
    }

    fn emit(&mut self, code: u16, k: u32, jt: Option<usize>, jf: Option<usize>) {
        let i = SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        self.code.push((i, jt, jf));
    }

    fn load(&mut self, offset: u32) {
        self.emit(0x20, offset, None, None);
    }

    fn and(&mut self, k: u32) {
        self.emit(0x54, k, None, None);
    }

    /// `jeq #k`: to `jt` (or the next instruction) when equal, else `jf`.
    fn jeq(&mut self, k: u32, jt: Option<usize>, jf: Option<usize>) {
        self.emit(0x15, k, jt, jf);
    }

    fn ja(&mut self, to: usize) {
        self.emit(0x05, 0, Some(to), None);
    }

    fn ret(&mut self, k: u32) {
        self.emit(0x06, k, None, None);
    }

    fn finish(self) -> Result<Program, String> {
        let mut out = Vec::with_capacity(self.code.len());
        for (pc, (mut insn, jt, jf)) in self.code.into_iter().enumerate() {
            let off = |l: Option<usize>| -> Result<u32, String> {
                let Some(l) = l else { return Ok(0) };
                let at = self.labels[l].ok_or("unbound label")?;
                at.checked_sub(pc + 1)
                    .map(|o| o as u32)
                    .ok_or_else(|| "backward jump".to_string())
            };
            if insn.code == 0x05 {
                insn.k = off(jt)?;
            } else {
                let (t, f) = (off(jt)?, off(jf)?);
                insn.jt = u8::try_from(t).map_err(|_| "jump too far")?;
                insn.jf = u8::try_from(f).map_err(|_| "jump too far")?;
            }
            out.push(insn);
        }
        Ok(Program(out))
    }
}
