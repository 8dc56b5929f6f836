//! The static analysis of the per-syscall rows: how many BPF instructions a
//! program executes for a workload's syscall (a counting interpreter), and
//! whether the kernel's seccomp action cache skips the program for it (a
//! port of the kernel's `seccomp_is_const_allow` emulation).

use moat_runtime::seccomp::bpf::{Program, SeccompData};

use super::workloads::Workload;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

/// What a program does for one workload's syscall, found without the
/// kernel.
pub(super) struct Analysis {
    /// Instructions the program executes for it.
    pub(super) executed: usize,
    /// Whether the kernel's action cache skips the program for it.
    pub(super) cached: bool,
}

/// Runs `program` on the workload's syscall (native `arch`) counting
/// instructions, checked against the runtime's interpreter, and asks the
/// emulated action cache about it.
pub(super) fn analyse(program: &Program, w: &Workload, arch: u32) -> Result<Analysis, String> {
    let data = SeccompData {
        nr: w.nr as i32,
        arch,
        instruction_pointer: 0,
        args: w.args,
    };
    let (executed, ret) = trace(program, &data).ok_or("unsupported instruction")?;
    let expected = program.evaluate(&data).map_err(|e| e.to_string())?;
    if ret != expected {
        return Err(format!(
            "trace returned {ret:#x}, the interpreter {expected:#x}"
        ));
    }
    Ok(Analysis {
        executed,
        cached: kernel_caches(program, w.nr as u32, arch)?,
    })
}

/// Whether the kernel's seccomp action cache (Linux 5.11+,
/// `seccomp_is_const_allow`) would mark syscall `nr` on `arch` as always
/// allowed by `p`, so the filter is skipped for it. A port of the kernel's
/// emulator: it follows the program with only `nr` and `arch` known and
/// gives up on any other load or instruction.
pub(super) fn kernel_caches(p: &Program, nr: u32, arch: u32) -> Result<bool, String> {
    let mut a = 0u32;
    let mut pc = 0usize;
    while pc < p.len() {
        let i = p.0[pc];
        match i.code {
            0x20 => match i.k {
                0 => a = nr,
                4 => a = arch,
                _ => return Ok(false),
            },
            0x06 => return Ok(i.k == SECCOMP_RET_ALLOW),
            0x05 => pc += i.k as usize,
            0x15 | 0x25 | 0x35 | 0x45 => {
                let taken = match i.code {
                    0x15 => a == i.k,
                    0x25 => a > i.k,
                    0x35 => a >= i.k,
                    _ => a & i.k != 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            0x54 => a &= i.k,
            _ => return Err(format!("pc {pc}: opcode {:#x}", i.code)),
        }
        pc += 1;
    }
    Ok(false)
}

/// Runs `p` on `data` counting executed instructions; `None` on an opcode
/// outside the subset libseccomp emits.
fn trace(p: &Program, data: &SeccompData) -> Option<(usize, u32)> {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    let mut steps = 0usize;
    // seccomp_data is in native byte order: on little-endian the low word
    // of a u64 comes first.
    let half = |v: u64, second: bool| {
        if second == cfg!(target_endian = "little") {
            (v >> 32) as u32
        } else {
            v as u32
        }
    };
    let word = |k: u32| -> Option<u32> {
        Some(match k {
            0 => data.nr as u32,
            4 => data.arch,
            8 | 12 => half(data.instruction_pointer, k == 12),
            16..=63 if k.is_multiple_of(4) => half(
                data.args[((k - 16) / 8) as usize],
                !(k - 16).is_multiple_of(8),
            ),
            _ => return None,
        })
    };
    while pc < p.len() {
        let i = p.0[pc];
        steps += 1;
        let src = if i.code & 0x08 != 0 { x } else { i.k };
        match i.code {
            0x20 => a = word(i.k)?,
            0x00 => a = i.k,
            0x01 => x = i.k,
            0x60 => a = *mem.get(i.k as usize)?,
            0x61 => x = *mem.get(i.k as usize)?,
            0x02 => *mem.get_mut(i.k as usize)? = a,
            0x03 => *mem.get_mut(i.k as usize)? = x,
            0x54 | 0x5c => a &= src,
            0x44 | 0x4c => a |= src,
            0x07 => x = a,
            0x87 => a = x,
            0x06 => return Some((steps, i.k)),
            0x05 => pc += i.k as usize,
            0x15 | 0x1d | 0x25 | 0x2d | 0x35 | 0x3d | 0x45 | 0x4d => {
                let taken = match i.code & 0xf0 {
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    _ => a & src != 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            _ => return None,
        }
        pc += 1;
    }
    None
}
