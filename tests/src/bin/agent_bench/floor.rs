//! The floor variants of the overhead figures: raw-tracepoint programs that
//! do nothing (`r0 = 0; exit`), attached to `sys_exit` alone or to
//! `sys_enter` and `sys_exit`. What they cost a syscall is the machine's
//! fixed price of running *any* program on those tracepoints, which no
//! agent can go below; moatd's cost over it is that of its own logic.
//!
//! They are loaded straight through bpf(2) rather than with a BPF library,
//! so the harness needs no new dependency and the programs are exactly the
//! two instructions above.

use std::ffi::CStr;
use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};

/// `enum bpf_cmd` values from `<linux/bpf.h>` (stable kernel ABI).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
/// `BPF_PROG_TYPE_RAW_TRACEPOINT` of `enum bpf_prog_type`.
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// `r0 = 0` (`BPF_ALU64 | BPF_MOV | BPF_K`, dst r0, imm 0) and `exit`
/// (`BPF_JMP | BPF_EXIT`), as `struct bpf_insn` (code, regs, off, imm) in
/// little-endian order, which is what x86_64 and the kernel expect.
const PROGRAM: [u64; 2] = [0xb7, 0x95];

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to
/// `expected_attach_type`; the kernel treats the bytes after the size
/// passed as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_RAW_TRACEPOINT_OPEN` member of `union bpf_attr` (without the
/// later `cookie`, left zero by passing this size).
#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// Which tracepoints a floor variant attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// `sys_exit` only: moatd's minimum (an unpaired exit is a denial).
    Exit,
    /// `sys_enter` and `sys_exit`, and `sched_switch`: the tracepoints of
    /// moatd's pairing (it writes its per-CPU cache back on `sched_switch`).
    Pair,
}

impl Floor {
    fn tracepoints(self) -> &'static [&'static CStr] {
        match self {
            Floor::Exit => &[c"sys_exit"],
            Floor::Pair => &[c"sched_switch", c"sys_enter", c"sys_exit"],
        }
    }
}

/// Empty programs attached while this lives: one program and one
/// raw-tracepoint descriptor per tracepoint. Dropping it closes the
/// descriptors, which detaches and frees the programs (nothing is pinned).
pub struct Attached {
    /// Links first: they go before the programs they hold.
    _links: Vec<OwnedFd>,
    _progs: Vec<OwnedFd>,
}

impl Attached {
    /// Loads and attaches the empty programs of `floor`.
    pub fn attach(floor: Floor) -> Result<Attached, String> {
        let mut progs = Vec::new();
        let mut links = Vec::new();
        for tp in floor.tracepoints() {
            let prog = load_empty(tp)?;
            links.push(open_raw_tracepoint(tp, &prog)?);
            progs.push(prog);
        }
        Ok(Attached {
            _links: links,
            _progs: progs,
        })
    }
}

/// bpf(2); the new descriptor (the kernel opens them close-on-exec, so the
/// agents and workloads the harness spawns do not inherit them).
fn bpf<T>(cmd: libc::c_long, attr: &mut T, what: &str) -> Result<OwnedFd, String> {
    // SAFETY: `attr` is a live #[repr(C)] prefix of `union bpf_attr` whose
    // pointers, if any, point to memory that outlives the call; its size is
    // passed with it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor the kernel just returned and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Loads `r0 = 0; exit` as a raw-tracepoint program named after `tp`.
fn load_empty(tp: &CStr) -> Result<OwnedFd, String> {
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
        insn_cnt: PROGRAM.len() as u32,
        insns: PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    // A name shows in `bpftool prog list`, so a leftover would be ours to
    // recognise; at most 15 characters of [A-Za-z0-9_.].
    let name = prog_name(tp);
    attr.prog_name[..name.len()].copy_from_slice(name.as_bytes());
    bpf(
        BPF_PROG_LOAD,
        &mut attr,
        &format!("loading an empty raw-tracepoint program for {tp:?} (BPF_PROG_LOAD)"),
    )
}

/// The program's name, `floor_<tracepoint without sys_>`: within the
/// kernel's limit of 15 characters.
fn prog_name(tp: &CStr) -> String {
    let short = tp.to_str().unwrap_or("tp").trim_start_matches("sys_");
    let mut name = format!("floor_{short}");
    name.truncate(15);
    name
}

/// Attaches `prog` to the raw tracepoint `tp`; the link's descriptor.
fn open_raw_tracepoint(tp: &CStr, prog: &OwnedFd) -> Result<OwnedFd, String> {
    use std::os::fd::AsRawFd as _;
    let mut attr = RawTracepointAttr {
        name: tp.as_ptr() as u64,
        prog_fd: prog.as_raw_fd() as u32,
        _pad: 0,
    };
    bpf(
        BPF_RAW_TRACEPOINT_OPEN,
        &mut attr,
        &format!("attaching the empty program to raw tracepoint {tp:?} (BPF_RAW_TRACEPOINT_OPEN)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel() {
        // Offsets of `union bpf_attr` in <linux/bpf.h>.
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, insns), 8);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(RawTracepointAttr, prog_fd), 8);
        assert_eq!(std::mem::size_of::<RawTracepointAttr>(), 16);
    }

    #[test]
    fn program_names_fit() {
        assert_eq!(prog_name(c"sys_enter"), "floor_enter");
        assert_eq!(prog_name(c"sys_exit"), "floor_exit");
        assert_eq!(prog_name(c"sched_switch"), "floor_sched_swi");
    }
}
