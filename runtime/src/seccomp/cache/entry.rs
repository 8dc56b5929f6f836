//! The format of a cache entry, and its verification.
//!
//! ```text
//! offset size
//!      0    8  magic "MOATBPF\x01"
//!      8   32  SHA-256 digest of the key (the file's name says the same)
//!     40    4  install flags (SECCOMP_FILTER_FLAG_*), little-endian
//!     44    4  number of instructions N, little-endian
//!     48   32  SHA-256 of bytes 0..48 and the program
//!     80  8*N  the program, as the kernel takes it (native struct sock_filter)
//! ```
//!
//! An entry is used only if it is exactly that long, names the key asked
//! for, its checksum matches, and the program passes the kernel's
//! structural rules ([`crate::seccomp::verify`]): a truncated, damaged or
//! renamed entry is never loaded.

use sha2::{Digest, Sha256};

use crate::seccomp::bpf::{Program, INSN_SIZE, MAX_INSNS};
use crate::seccomp::verify;

const MAGIC: &[u8; 8] = b"MOATBPF\x01";
/// Bytes before the program.
pub const HEADER_SIZE: usize = 80;
/// The largest entry: a header and the longest program the kernel takes.
pub const MAX_ENTRY_SIZE: usize = HEADER_SIZE + MAX_INSNS * INSN_SIZE;

/// A compiled filter, ready to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The program.
    pub program: Program,
    /// The `SECCOMP_FILTER_FLAG_*` bits to install it with.
    pub flags: u32,
}

/// The entry's bytes for the key digest `key`.
pub fn encode(key: &[u8; 32], e: &Entry) -> Vec<u8> {
    let program = e.program.to_bytes();
    let mut out = Vec::with_capacity(HEADER_SIZE + program.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(key);
    out.extend_from_slice(&e.flags.to_le_bytes());
    out.extend_from_slice(&(e.program.len() as u32).to_le_bytes());
    let sum = checksum(&out, &program);
    out.extend_from_slice(&sum);
    out.extend_from_slice(&program);
    out
}

fn checksum(head: &[u8], program: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(head);
    h.update(program);
    h.finalize().into()
}

/// The entry in `bytes` if it is a whole, undamaged entry for `key` whose
/// program the kernel would accept; otherwise why not.
pub fn decode(key: &[u8; 32], bytes: &[u8]) -> Result<Entry, String> {
    if bytes.len() < HEADER_SIZE {
        return Err(format!(
            "{} bytes is shorter than an entry's header ({HEADER_SIZE})",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a moat seccomp cache entry (wrong magic)".into());
    }
    if &bytes[8..40] != key {
        return Err("it is the entry of another key".into());
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let flags = word(40);
    let insns = word(44) as usize;
    if insns == 0 || insns > MAX_INSNS {
        return Err(format!(
            "its header says {insns} instructions; the kernel accepts 1 to {MAX_INSNS}"
        ));
    }
    let want = HEADER_SIZE + insns * INSN_SIZE;
    if bytes.len() != want {
        return Err(format!(
            "{} bytes, where its header says {want} (truncated or extended)",
            bytes.len()
        ));
    }
    let (head, rest) = bytes.split_at(48);
    let (sum, program) = rest.split_at(32);
    if checksum(head, program)[..] != sum[..] {
        return Err("its checksum does not match its content (damaged)".into());
    }
    let program = Program::from_bytes(program).map_err(|e| e.to_string())?;
    verify::check(&program).map_err(|e| format!("the kernel would refuse its program: {e}"))?;
    Ok(Entry { program, flags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::bpf::SockFilter;

    fn entry() -> Entry {
        let insn = |code, k| SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        Entry {
            program: Program(vec![insn(0x20, 0), insn(0x06, 0x7fff_0000)]),
            flags: 2,
        }
    }

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn round_trips() {
        let bytes = encode(&KEY, &entry());
        assert_eq!(bytes.len(), HEADER_SIZE + 16);
        assert_eq!(decode(&KEY, &bytes), Ok(entry()));
    }

    #[test]
    fn every_damage_is_detected() {
        let bytes = encode(&KEY, &entry());
        // Any single byte changed anywhere.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(decode(&KEY, &b).is_err(), "byte {i} changed went unnoticed");
        }
        // Cut anywhere, or extended.
        for n in 0..bytes.len() {
            assert!(
                decode(&KEY, &bytes[..n]).is_err(),
                "cut at {n} went unnoticed"
            );
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(decode(&KEY, &longer)
            .unwrap_err()
            .contains("truncated or extended"));
        // Another key's entry.
        assert_eq!(
            decode(&[8; 32], &bytes),
            Err("it is the entry of another key".to_string())
        );
    }

    #[test]
    fn a_consistent_entry_with_a_bad_program_is_refused() {
        // A program the kernel would refuse, with a correct checksum: only
        // the structural check stands between it and the kernel.
        let bad = Entry {
            program: Program(vec![SockFilter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 0,
            }]),
            flags: 0,
        };
        let e = decode(&KEY, &encode(&KEY, &bad)).unwrap_err();
        assert!(e.contains("the kernel would refuse"), "{e}");
    }
}
