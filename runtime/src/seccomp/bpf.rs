//! Classic BPF seccomp programs: the in-memory form, the raw byte form that
//! `bwrap --seccomp FD` and `seccomp(2)` take, and an interpreter that runs a
//! program on a `seccomp_data` the way the kernel does.
//!
//! The interpreter lets tests compare two filters' verdicts for every
//! syscall number without loading either into the kernel.

use std::fmt;

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SockFilter {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Generic field (constant, offset).
    pub k: u32,
}

/// The size of one instruction in the raw form.
pub const INSN_SIZE: usize = std::mem::size_of::<SockFilter>();

/// Most instructions the kernel accepts in one filter (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// A whole seccomp BPF program.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Program(pub Vec<SockFilter>);

/// A raw program could not be decoded or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    /// The byte length is not a whole number of instructions.
    #[error("program length {len} is not a multiple of {INSN_SIZE} bytes")]
    BadLength {
        /// The byte length seen.
        len: usize,
    },
    /// The program is empty or longer than the kernel allows.
    #[error("program has {insns} instructions; the kernel accepts 1 to {MAX_INSNS}")]
    BadSize {
        /// Number of instructions.
        insns: usize,
    },
    /// An instruction the interpreter does not implement or that is invalid.
    #[error("instruction {pc}: unsupported opcode {code:#06x}")]
    BadOpcode {
        /// Index of the instruction.
        pc: usize,
        /// Its opcode.
        code: u16,
    },
    /// A load outside `seccomp_data` or a jump outside the program.
    #[error("instruction {pc}: {what} out of range")]
    OutOfRange {
        /// Index of the instruction.
        pc: usize,
        /// What was out of range.
        what: &'static str,
    },
    /// The program ran off its end without returning.
    #[error("program fell off its end without a return")]
    NoReturn,
}

impl Program {
    /// Decodes the raw native-endian form (an array of `struct sock_filter`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Program, BpfError> {
        if !bytes.len().is_multiple_of(INSN_SIZE) {
            return Err(BpfError::BadLength { len: bytes.len() });
        }
        let insns: Vec<SockFilter> = bytes
            .chunks_exact(INSN_SIZE)
            .map(|c| SockFilter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        if insns.is_empty() || insns.len() > MAX_INSNS {
            return Err(BpfError::BadSize { insns: insns.len() });
        }
        Ok(Program(insns))
    }

    /// Encodes the raw native-endian form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * INSN_SIZE);
        for i in &self.0 {
            out.extend_from_slice(&i.code.to_ne_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend_from_slice(&i.k.to_ne_bytes());
        }
        out
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty program (which the kernel refuses).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs the program on `data` and returns the filter's return value.
    pub fn evaluate(&self, data: &SeccompData) -> Result<u32, BpfError> {
        run(&self.0, data)
    }
}

/// The input the kernel hands a seccomp filter (`struct seccomp_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeccompData {
    /// Syscall number (with bit 30 set for x32).
    pub nr: i32,
    /// `AUDIT_ARCH_*` of the calling convention.
    pub arch: u32,
    /// Instruction pointer.
    pub instruction_pointer: u64,
    /// Syscall arguments.
    pub args: [u64; 6],
}

impl SeccompData {
    /// Size of `struct seccomp_data`.
    pub const SIZE: u32 = 64;

    fn word(&self, offset: u32) -> Option<u32> {
        if !offset.is_multiple_of(4) || offset >= Self::SIZE {
            return None;
        }
        let lo_hi = |v: u64, high: bool| {
            // seccomp_data is in native byte order; on little-endian the
            // low word of a u64 comes first.
            let first_is_low = cfg!(target_endian = "little");
            if high == first_is_low {
                (v >> 32) as u32
            } else {
                v as u32
            }
        };
        Some(match offset {
            0 => self.nr as u32,
            4 => self.arch,
            8 | 12 => lo_hi(self.instruction_pointer, offset == 12),
            _ => {
                let i = ((offset - 16) / 8) as usize;
                lo_hi(self.args[i], (offset - 16) % 8 == 4)
            }
        })
    }
}

// Opcode fields (linux/bpf_common.h).
const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_ST: u16 = 0x02;
const BPF_STX: u16 = 0x03;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_MISC: u16 = 0x07;

fn run(prog: &[SockFilter], data: &SeccompData) -> Result<u32, BpfError> {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    // Classic BPF only jumps forward, so this terminates within len steps.
    while pc < prog.len() {
        let SockFilter { code, jt, jf, k } = prog[pc];
        let oob = |what| BpfError::OutOfRange { pc, what };
        let bad = BpfError::BadOpcode { pc, code };
        let src = if code & 0x08 != 0 { x } else { k };
        match code & 0x07 {
            BPF_LD | BPF_LDX => {
                let v = match code & 0xe0 {
                    0x00 => k,                                                    // BPF_IMM
                    0x20 if code & 0x18 == 0 => data.word(k).ok_or(oob("load"))?, // BPF_ABS, W
                    0x60 => *mem.get(k as usize).ok_or(oob("scratch slot"))?,     // BPF_MEM
                    0x80 => SeccompData::SIZE,                                    // BPF_LEN
                    _ => return Err(bad),
                };
                if code & 0x07 == BPF_LD {
                    a = v
                } else {
                    x = v
                }
            }
            BPF_ST | BPF_STX => {
                let slot = mem.get_mut(k as usize).ok_or(oob("scratch slot"))?;
                *slot = if code & 0x07 == BPF_ST { a } else { x };
            }
            BPF_ALU => {
                a = match code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 => a.checked_div(src).unwrap_or(0),
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.checked_shl(src).unwrap_or(0),
                    0x70 => a.checked_shr(src).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(src).unwrap_or(0),
                    0xa0 => a ^ src,
                    _ => return Err(bad),
                }
            }
            BPF_JMP => {
                let taken = match code & 0xf0 {
                    0x00 => {
                        pc = pc + 1 + k as usize;
                        continue;
                    }
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    _ => return Err(bad),
                };
                pc += 1 + usize::from(if taken { jt } else { jf });
                continue;
            }
            BPF_RET => {
                return match code & 0x18 {
                    0x00 => Ok(k),
                    0x10 => Ok(a),
                    _ => Err(bad),
                }
            }
            BPF_MISC => match code & 0xf8 {
                0x00 => x = a,
                0x80 => a = x,
                _ => return Err(bad),
            },
            _ => unreachable!("code & 7 covers all classes"),
        }
        pc += 1;
    }
    Err(BpfError::NoReturn)
}

/// What a filter return value means, decoded (`SECCOMP_RET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Kill the whole process.
    KillProcess,
    /// Kill the thread.
    KillThread,
    /// SIGSYS.
    Trap(u16),
    /// Fail with this errno.
    Errno(u16),
    /// Hand to a user-space listener.
    UserNotif,
    /// Hand to a ptracer.
    Trace(u16),
    /// Allow and log.
    Log,
    /// Allow.
    Allow,
}

impl Verdict {
    /// Decodes a filter return value the way the kernel does: an unknown
    /// action is treated as KILL_PROCESS.
    pub fn from_ret(ret: u32) -> Verdict {
        let data = (ret & 0xffff) as u16;
        match ret & 0xffff_0000 {
            0x8000_0000 => Verdict::KillProcess,
            0x0000_0000 => Verdict::KillThread,
            0x0003_0000 => Verdict::Trap(data),
            0x0005_0000 => Verdict::Errno(data),
            0x7fc0_0000 => Verdict::UserNotif,
            0x7ff0_0000 => Verdict::Trace(data),
            0x7ffc_0000 => Verdict::Log,
            0x7fff_0000 => Verdict::Allow,
            _ => Verdict::KillProcess,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::KillProcess => f.write_str("kill_process"),
            Verdict::KillThread => f.write_str("kill_thread"),
            Verdict::Trap(d) => write!(f, "trap({d})"),
            Verdict::Errno(e) => match crate::errno::name(u32::from(*e)) {
                Some(n) => write!(f, "errno({n})"),
                None => write!(f, "errno({e})"),
            },
            Verdict::UserNotif => f.write_str("notify"),
            Verdict::Trace(d) => write!(f, "trace({d})"),
            Verdict::Log => f.write_str("log"),
            Verdict::Allow => f.write_str("allow"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }

    /// A hand-written filter: on x86_64, allow nr 39 (getpid), errno 1
    /// for nr 41 (socket) when arg0 == 40 (AF_VSOCK), else allow for 41,
    /// else kill.
    fn sample() -> Program {
        Program(vec![
            insn(0x20, 0, 0, 4),           // A = arch
            insn(0x15, 1, 0, 0xc000_003e), // if x86_64 skip next
            insn(0x06, 0, 0, 0),           // kill
            insn(0x20, 0, 0, 0),           // A = nr
            insn(0x15, 0, 1, 39),          // getpid?
            insn(0x06, 0, 0, 0x7fff_0000), // allow
            insn(0x15, 0, 4, 41),          // socket?
            insn(0x20, 0, 0, 16),          // A = low(arg0)
            insn(0x15, 0, 1, 40),          // == AF_VSOCK?
            insn(0x06, 0, 0, 0x0005_0001), // errno EPERM
            insn(0x06, 0, 0, 0x7fff_0000), // allow
            insn(0x06, 0, 0, 0x8000_0000), // kill process
        ])
    }

    fn data(nr: i32, arg0: u64) -> SeccompData {
        SeccompData {
            nr,
            arch: 0xc000_003e,
            args: [arg0, 0, 0, 0, 0, 0],
            ..Default::default()
        }
    }

    #[test]
    fn evaluates_like_the_kernel() {
        let p = sample();
        let v = |d| Verdict::from_ret(p.evaluate(&d).unwrap());
        assert_eq!(v(data(39, 0)), Verdict::Allow);
        assert_eq!(v(data(41, 40)), Verdict::Errno(1));
        assert_eq!(v(data(41, 2)), Verdict::Allow);
        assert_eq!(v(data(1, 0)), Verdict::KillProcess);
        let i386 = SeccompData {
            arch: 0x4000_0003,
            ..data(39, 0)
        };
        assert_eq!(v(i386), Verdict::KillThread);
    }

    #[test]
    fn high_words_of_arguments_are_separate() {
        let p = Program(vec![
            insn(0x20, 0, 0, 20), // A = high(arg0)
            insn(0x06 | 0x10, 0, 0, 0),
        ]);
        assert_eq!(
            p.evaluate(&data(0, 0x1234_5678_0000_0001)).unwrap(),
            0x1234_5678
        );
    }

    #[test]
    fn bytes_round_trip() {
        let p = sample();
        let b = p.to_bytes();
        assert_eq!(b.len(), p.len() * 8);
        assert_eq!(Program::from_bytes(&b).unwrap(), p);
        assert_eq!(
            Program::from_bytes(&b[..7]),
            Err(BpfError::BadLength { len: 7 })
        );
        assert_eq!(
            Program::from_bytes(&[]),
            Err(BpfError::BadSize { insns: 0 })
        );
    }

    #[test]
    fn bad_programs_are_errors_not_panics() {
        let p = Program(vec![insn(0x20, 0, 0, 64)]);
        assert!(matches!(
            p.evaluate(&data(0, 0)),
            Err(BpfError::OutOfRange { .. })
        ));
        let p = Program(vec![insn(0x15, 5, 5, 0)]);
        assert_eq!(p.evaluate(&data(0, 0)), Err(BpfError::NoReturn));
        let p = Program(vec![insn(0xff, 0, 0, 0)]);
        assert!(matches!(
            p.evaluate(&data(0, 0)),
            Err(BpfError::BadOpcode { .. })
        ));
    }

    #[test]
    fn decodes_return_values() {
        assert_eq!(Verdict::from_ret(0x0005_0026), Verdict::Errno(38));
        assert_eq!(Verdict::from_ret(0x0003_0000), Verdict::Trap(0));
        assert_eq!(Verdict::from_ret(0x7ffc_0000), Verdict::Log);
        assert_eq!(Verdict::from_ret(0x1234_0000), Verdict::KillProcess);
        assert_eq!(Verdict::Errno(38).to_string(), "errno(ENOSYS)");
    }
}
