//! Rewrites of libseccomp's exported programs: chaining per-architecture
//! programs, the MAX_ERRNO placeholder, and the high-word markers of
//! 32-bit comparisons.

use std::collections::BTreeSet;

use super::bpf::{Program, SockFilter};
use super::profile::Action;
use super::resolve::Resolved;

const RET_K: u16 = 0x06;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;

/// Concatenates per-architecture programs: in each but the last, the
/// bad-architecture return (`TRACE(marker)`) becomes a jump to the next
/// program; in the last it becomes libseccomp's default bad-architecture
/// action (kill thread).
pub(super) fn chain(parts: Vec<Program>, marker: u16) -> Program {
    const RET_TRACE: u32 = 0x7ff0_0000;
    const RET_KILL_THREAD: u32 = 0;
    let count = parts.len();
    let mut out = Vec::with_capacity(parts.iter().map(Program::len).sum());
    for (i, part) in parts.into_iter().enumerate() {
        let len = part.len();
        for (pc, mut insn) in part.0.into_iter().enumerate() {
            if insn.code == RET_K && insn.k == RET_TRACE | u32::from(marker) {
                if i + 1 < count {
                    // Jump forward to the first instruction after this part.
                    insn = SockFilter {
                        code: JA,
                        jt: 0,
                        jf: 0,
                        k: (len - pc - 1) as u32,
                    };
                } else {
                    insn.k = RET_KILL_THREAD;
                }
            }
            out.push(insn);
        }
    }
    Program(out)
}

/// A TRACE data value no rule uses: per-architecture programs return
/// `TRACE(marker)` for a foreign architecture, and [`chain`] turns exactly
/// those returns into jumps to the next program.
pub(super) fn unused_trace_data(resolved: &Resolved) -> u16 {
    let used: BTreeSet<u32> = std::iter::once(resolved.default_action)
        .chain(resolved.rules.iter().map(|r| r.action))
        .filter(|a| a.action == Action::Trace)
        .filter_map(|a| a.errno)
        .collect();
    (0..=u16::MAX)
        .rev()
        .find(|d| !used.contains(&u32::from(*d)))
        .unwrap_or(u16::MAX)
}

/// Rewrites `return ERRNO(from)` to `return ERRNO(to)`.
pub(super) fn patch_errno(program: &mut Program, from: u32, to: u32) {
    const RET_ERRNO: u32 = 0x0005_0000;
    for insn in program.0.iter_mut() {
        if insn.code == RET_K && insn.k == RET_ERRNO | from {
            insn.k = RET_ERRNO | to;
        }
    }
}

/// A 32-bit word that no comparison of the profile uses, neither as a
/// value's high or low word nor as a syscall number or architecture token,
/// to mark the high word of comparisons that must ignore it.
pub(super) fn choose_marker(resolved: &Resolved) -> u32 {
    let mut used = BTreeSet::new();
    for rule in &resolved.rules {
        for a in &rule.args {
            for v in [a.value, a.value_two] {
                used.insert((v >> 32) as u32);
                used.insert(v as u32);
            }
        }
    }
    // Syscall numbers (x32's carry bit 30) stay below 0x4000_1000 and
    // AUDIT_ARCH_* values have bit 31 or 30 set with a small machine
    // number: this range is neither.
    (0x5ecc_0001u32..)
        .find(|m| !used.contains(m))
        .expect("a profile uses fewer than 2^20 distinct words")
}

/// Makes every comparison of a high word with `marker` take the branch it
/// takes when the high words are equal, so that only the low word decides:
/// `jeq #marker` always jumps to its true target, `jgt` to its false
/// target, `jge` to its true target. The marker appears nowhere else (see
/// [`choose_marker`]), so these are exactly the high-word comparisons of
/// marked conditions. Returns how many were rewritten.
pub(super) fn ignore_marked_high_words(
    program: &mut Program,
    marker: u32,
) -> Result<usize, String> {
    let mut count = 0;
    for (pc, insn) in program.0.iter_mut().enumerate() {
        if insn.k != marker || insn.code == RET_K {
            continue;
        }
        let target = match insn.code {
            JEQ_K | JGE_K => insn.jt,
            JGT_K => insn.jf,
            code => {
                return Err(format!(
                    "instruction {pc} (opcode {code:#06x}) uses the high-word marker {marker:#x} in a way moat does not rewrite"
                ));
            }
        };
        *insn = SockFilter {
            code: JA,
            jt: 0,
            jf: 0,
            k: u32::from(target),
        };
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::bpf::{SeccompData, Verdict};

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }

    /// libseccomp's shape for `arg0 > 40` on a 64-bit architecture, with
    /// the marker in the high word: hi > M → match; hi == M → lo > 40.
    fn gt_program(m: u32) -> Program {
        Program(vec![
            insn(0x20, 0, 0, 20),  // A = high(arg0)
            insn(JGT_K, 3, 0, m),  // > M: allow
            insn(JEQ_K, 0, 3, m),  // != M: deny
            insn(0x20, 0, 0, 16),  // A = low(arg0)
            insn(JGT_K, 0, 1, 40), // low > 40: allow
            insn(RET_K, 0, 0, 0x7fff_0000),
            insn(RET_K, 0, 0, 0x0005_0001),
        ])
    }

    fn verdict(p: &Program, arg0: u64) -> Verdict {
        let d = SeccompData {
            args: [arg0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        Verdict::from_ret(p.evaluate(&d).unwrap())
    }

    #[test]
    fn marked_high_words_stop_deciding() {
        let m = 0x5ecc_0001;
        let mut p = gt_program(m);
        assert_eq!(ignore_marked_high_words(&mut p, m), Ok(2));
        for (arg, want) in [
            (41, Verdict::Allow),
            (40, Verdict::Errno(1)),
            (0x1_0000_0028, Verdict::Errno(1)),
            (0xffff_ffff_0000_0029, Verdict::Allow),
            (0x5ecc_0002_0000_0000, Verdict::Errno(1)),
        ] {
            assert_eq!(verdict(&p, arg), want, "{arg:#x}");
        }
    }

    #[test]
    fn an_unexpected_use_of_the_marker_is_an_error() {
        let m = 0x5ecc_0001;
        let mut p = Program(vec![insn(0x54, 0, 0, m), insn(RET_K, 0, 0, 0)]);
        assert!(ignore_marked_high_words(&mut p, m).is_err());
    }
}
