//! The kernel's structural rules for a seccomp program, checked in user
//! space: what `seccomp(2)` would refuse with `EINVAL` (`bpf_check_classic`
//! and `seccomp_check_filter`).
//!
//! A program that comes from outside the compiler (a cache entry) is
//! checked with this before it is used, so a damaged one is recompiled
//! instead of failing a launch at the last step, and nothing the kernel
//! would not accept is ever handed to it.

use super::bpf::{Program, SeccompData, SockFilter, MAX_INSNS};

/// Why the kernel would refuse a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Empty, or longer than `BPF_MAXINSNS`.
    #[error("the program has {insns} instructions; the kernel accepts 1 to {MAX_INSNS}")]
    Size {
        /// Number of instructions.
        insns: usize,
    },
    /// An opcode seccomp does not allow.
    #[error("instruction {pc}: opcode {code:#06x} is not allowed in a seccomp filter")]
    Opcode {
        /// Index of the instruction.
        pc: usize,
        /// The opcode.
        code: u16,
    },
    /// An operand out of its range (a load outside `seccomp_data`, a
    /// scratch slot past 15, a division by zero, a shift of 32 or more, a
    /// jump past the end).
    #[error("instruction {pc}: {what}")]
    Operand {
        /// Index of the instruction.
        pc: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A scratch slot read before every path to it has written it.
    #[error("instruction {pc}: scratch slot {slot} may be read before it is written")]
    Uninitialised {
        /// Index of the instruction.
        pc: usize,
        /// The slot.
        slot: u32,
    },
    /// The last instruction is not a return.
    #[error("the last instruction is not a return")]
    NoReturn,
}

/// Scratch memory words of classic BPF (`BPF_MEMWORDS`).
const MEM_WORDS: u32 = 16;

/// Checks `p` as the kernel does before installing it.
pub fn check(p: &Program) -> Result<(), VerifyError> {
    let insns = &p.0;
    let len = insns.len();
    if len == 0 || len > MAX_INSNS {
        return Err(VerifyError::Size { insns: len });
    }
    for (pc, i) in insns.iter().enumerate() {
        check_one(pc, *i, len)?;
    }
    if !matches!(insns[len - 1].code, 0x06 | 0x16) {
        return Err(VerifyError::NoReturn);
    }
    check_scratch(insns)
}

fn check_one(pc: usize, i: SockFilter, len: usize) -> Result<(), VerifyError> {
    let bad = |what| Err(VerifyError::Operand { pc, what });
    let target_ok = |off: u32| (pc as u64) + 1 + u64::from(off) < len as u64;
    match i.code {
        // ret k, ret a; ld imm, ldx imm; tax, txa; ld len, ldx len.
        0x06 | 0x16 | 0x00 | 0x01 | 0x07 | 0x87 | 0x80 | 0x81 => {}
        // ld [k]: a word of seccomp_data.
        0x20 => {
            if !i.k.is_multiple_of(4) || i.k >= SeccompData::SIZE {
                return bad("load outside seccomp_data or not word-aligned");
            }
        }
        // ld M[k], ldx M[k], st M[k], stx M[k].
        0x60 | 0x61 | 0x02 | 0x03 => {
            if i.k >= MEM_WORDS {
                return bad("scratch slot out of range");
            }
        }
        // alu add, sub, mul, or, and, xor with k or x; neg; div, lsh, rsh
        // with x.
        0x04 | 0x0c | 0x14 | 0x1c | 0x24 | 0x2c | 0x44 | 0x4c | 0x54 | 0x5c | 0xa4 | 0xac
        | 0x84 | 0x3c | 0x6c | 0x7c => {}
        // div k.
        0x34 => {
            if i.k == 0 {
                return bad("division by zero");
            }
        }
        // lsh k, rsh k.
        0x64 | 0x74 => {
            if i.k >= 32 {
                return bad("shift by 32 or more");
            }
        }
        // ja.
        0x05 => {
            if !target_ok(i.k) {
                return bad("jump past the end");
            }
        }
        // jeq, jgt, jge, jset with k or x.
        0x15 | 0x1d | 0x25 | 0x2d | 0x35 | 0x3d | 0x45 | 0x4d => {
            if !target_ok(u32::from(i.jt)) || !target_ok(u32::from(i.jf)) {
                return bad("jump past the end");
            }
        }
        code => return Err(VerifyError::Opcode { pc, code }),
    }
    Ok(())
}

/// Every read of a scratch slot must follow a write of it on every path
/// (the kernel's `check_load_and_stores`). Classic BPF jumps only forward,
/// so one pass in order sees every path into an instruction first.
fn check_scratch(insns: &[SockFilter]) -> Result<(), VerifyError> {
    let all = (1u32 << MEM_WORDS) - 1;
    let mut incoming = vec![all; insns.len()];
    // Nothing is written when the program starts.
    let mut valid = 0;
    for (pc, i) in insns.iter().enumerate() {
        valid &= incoming[pc];
        match i.code {
            0x02 | 0x03 => valid |= 1 << i.k,
            0x60 | 0x61 if valid & (1 << i.k) == 0 => {
                return Err(VerifyError::Uninitialised { pc, slot: i.k });
            }
            0x05 => {
                incoming[pc + 1 + i.k as usize] &= valid;
                valid = all;
            }
            0x15 | 0x1d | 0x25 | 0x2d | 0x35 | 0x3d | 0x45 | 0x4d => {
                incoming[pc + 1 + usize::from(i.jt)] &= valid;
                incoming[pc + 1 + usize::from(i.jf)] &= valid;
                valid = all;
            }
            // After a return nothing falls through.
            0x06 | 0x16 => valid = all,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }

    fn ok_program() -> Program {
        Program(vec![
            insn(0x20, 0, 0, 4),           // A = arch
            insn(0x15, 1, 0, 0xc000_003e), // x86_64?
            insn(0x06, 0, 0, 0),           // kill
            insn(0x20, 0, 0, 0),           // A = nr
            insn(0x02, 0, 0, 3),           // M[3] = A
            insn(0x61, 0, 0, 3),           // X = M[3]
            insn(0x15, 0, 1, 39),          // getpid?
            insn(0x06, 0, 0, 0x7fff_0000), // allow
            insn(0x06, 0, 0, 0x0005_0001), // errno EPERM
        ])
    }

    #[test]
    fn a_well_formed_program_passes() {
        assert_eq!(check(&ok_program()), Ok(()));
    }

    #[test]
    fn what_the_kernel_refuses_is_refused() {
        let with = |pc: usize, i: SockFilter| {
            let mut p = ok_program();
            p.0[pc] = i;
            check(&p)
        };
        assert_eq!(check(&Program(vec![])), Err(VerifyError::Size { insns: 0 }));
        assert_eq!(
            check(&Program(vec![insn(0x06, 0, 0, 0); MAX_INSNS + 1])),
            Err(VerifyError::Size {
                insns: MAX_INSNS + 1
            })
        );
        // ld byte [k] and ld [x + k] are classic BPF but not seccomp.
        assert_eq!(
            with(0, insn(0x30, 0, 0, 4)),
            Err(VerifyError::Opcode { pc: 0, code: 0x30 })
        );
        assert_eq!(
            with(0, insn(0x40, 0, 0, 4)),
            Err(VerifyError::Opcode { pc: 0, code: 0x40 })
        );
        assert!(matches!(
            with(0, insn(0x20, 0, 0, 64)),
            Err(VerifyError::Operand { pc: 0, .. })
        ));
        assert!(matches!(
            with(0, insn(0x20, 0, 0, 2)),
            Err(VerifyError::Operand { pc: 0, .. })
        ));
        assert!(matches!(
            with(1, insn(0x15, 7, 0, 1)),
            Err(VerifyError::Operand { pc: 1, .. })
        ));
        assert!(matches!(
            with(3, insn(0x05, 0, 0, 5)),
            Err(VerifyError::Operand { pc: 3, .. })
        ));
        assert!(matches!(
            with(4, insn(0x02, 0, 0, 16)),
            Err(VerifyError::Operand { pc: 4, .. })
        ));
        assert!(matches!(
            with(3, insn(0x34, 0, 0, 0)),
            Err(VerifyError::Operand { pc: 3, .. })
        ));
        assert!(matches!(
            with(3, insn(0x64, 0, 0, 32)),
            Err(VerifyError::Operand { pc: 3, .. })
        ));
        assert_eq!(with(8, insn(0x00, 0, 0, 0)), Err(VerifyError::NoReturn));
        // M[3] read with nothing written to it.
        assert_eq!(
            with(4, insn(0x00, 0, 0, 0)),
            Err(VerifyError::Uninitialised { pc: 5, slot: 3 })
        );
    }

    #[test]
    fn what_the_compiler_makes_passes() {
        use crate::caps::CapSet;
        use crate::seccomp::compile::{Layout, Options};
        use crate::seccomp::{builtin, compile_for_host};
        let profile = builtin::default_profile().unwrap();
        for caps in [CapSet::docker_default(), CapSet::all(), CapSet::empty()] {
            for opts in [
                Options::default(),
                Options {
                    layout: Layout::Combined,
                    ..Options::default()
                },
                Options {
                    as_libseccomp: true,
                    ..Options::default()
                },
            ] {
                let (_, c) = compile_for_host(&profile, builtin::SOURCE, &caps, opts).unwrap();
                assert_eq!(check(&c.program), Ok(()), "{caps:?} {opts:?}");
            }
        }
    }

    #[test]
    fn a_slot_written_on_one_path_only_is_refused() {
        let p = Program(vec![
            insn(0x20, 0, 0, 0), // A = nr
            insn(0x15, 0, 1, 1), // nr == 1?
            insn(0x02, 0, 0, 0), // M[0] = A (only when nr == 1)
            insn(0x60, 0, 0, 0), // A = M[0]
            insn(0x16, 0, 0, 0), // ret A
        ]);
        assert_eq!(
            check(&p),
            Err(VerifyError::Uninitialised { pc: 3, slot: 0 })
        );
    }
}
