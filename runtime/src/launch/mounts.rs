//! The workload's view of the file systems, built by moat's init in its new
//! mount namespace (owned by the host's user namespace, so that when the
//! workload gets a user namespace of its own, the copy it receives has every
//! one of these mounts locked: it cannot unmount a mask or remount a
//! read-only file system read-write, whatever capabilities it holds there).
//!
//! In order: every mount becomes a slave of the host's (host mounts still
//! appear, nothing made inside propagates out); a fresh `proc` for the new
//! PID namespace goes on `/proc`, and `proc` file systems mounted elsewhere
//! (which would show the host's processes) are hidden; with a new IPC
//! namespace, a new tmpfs on `/dev/shm` (POSIX shared memory is files there,
//! outside the IPC namespace's reach) and a new `mqueue` over any mounted
//! one; `/sys` and every `sysfs` and cgroup file system become read-only
//! (recursively); then Docker's read-only and masked paths.
//!
//! The plan is built before the clone (it allocates); [`MountPlan::apply`]
//! runs in the child and reports the index of the operation that failed, so
//! the parent can name it with [`MountPlan::describe`].

use std::ffi::{CStr, CString};

use super::namespaces::{Isolation, Share, Sysfs, SystemPaths};
use crate::cgroup::mountinfo;

/// Docker's `MaskedPaths`: hidden under an empty read-only tmpfs
/// (directories) or `/dev/null` (files).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's `ReadonlyPaths`: bound onto themselves read-only (without
/// their submounts, so e.g. a host `binfmt_misc` under `/proc/sys` is not
/// reachable either).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `struct mount_attr` for `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// `/` and everything under it become slaves of the host's mounts.
    SlaveAll,
    /// A new `proc` on `/proc`, for the new PID namespace.
    Proc,
    /// `proc` file systems elsewhere, hidden under an empty tmpfs.
    HideOtherProcs,
    /// A new tmpfs on `/dev/shm`.
    PrivateShm,
    /// A new `mqueue` (of the new IPC namespace) over every `mqueue` mount.
    PrivateMqueue,
    /// `/sys` and everything under it read-only.
    ReadOnlySys,
    /// `sysfs`, `cgroup` and `cgroup2` mounts outside `/sys` read-only.
    ReadOnlyKernelFs,
    /// One of [`READONLY_PATHS`].
    ReadOnly(CString),
    /// One of [`MASKED_PATHS`].
    Mask(CString),
}

/// The mount operations for one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    ops: Vec<Op>,
}

/// A failed operation: its index in the plan and the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountFailure {
    /// Index for [`MountPlan::describe`].
    pub index: u32,
    /// The errno.
    pub errno: i32,
}

impl MountPlan {
    /// The operations `isolation` asks for.
    pub fn new(isolation: &Isolation) -> MountPlan {
        let mut ops = vec![Op::SlaveAll];
        if isolation.pid == Share::Private {
            ops.push(Op::Proc);
        }
        if isolation.pid == Share::Private || isolation.system_paths == SystemPaths::Masked {
            ops.push(Op::HideOtherProcs);
        }
        if isolation.ipc == Share::Private {
            ops.push(Op::PrivateShm);
            ops.push(Op::PrivateMqueue);
        }
        if isolation.sysfs == Sysfs::ReadOnly {
            ops.push(Op::ReadOnlySys);
            ops.push(Op::ReadOnlyKernelFs);
        }
        if isolation.system_paths == SystemPaths::Masked {
            let c = |p: &str| CString::new(p).expect("constant paths have no NUL");
            ops.extend(READONLY_PATHS.iter().map(|p| Op::ReadOnly(c(p))));
            ops.extend(MASKED_PATHS.iter().map(|p| Op::Mask(c(p))));
        }
        MountPlan { ops }
    }

    /// What operation `index` does, for error messages.
    pub fn describe(&self, index: u32) -> String {
        match self.ops.get(index as usize) {
            Some(Op::SlaveAll) => "making every mount a slave of the host's".into(),
            Some(Op::Proc) => "mounting a new proc on /proc".into(),
            Some(Op::HideOtherProcs) => "hiding other proc mounts".into(),
            Some(Op::PrivateShm) => "mounting a new tmpfs on /dev/shm".into(),
            Some(Op::PrivateMqueue) => "mounting a new mqueue over the host's".into(),
            Some(Op::ReadOnlySys) => "making /sys read-only".into(),
            Some(Op::ReadOnlyKernelFs) => {
                "making sysfs and cgroup mounts outside /sys read-only".into()
            }
            Some(Op::ReadOnly(p)) => format!("making {} read-only", p.to_string_lossy()),
            Some(Op::Mask(p)) => format!("masking {}", p.to_string_lossy()),
            None => format!("mount operation {index}"),
        }
    }

    /// Applies the plan in the calling process's mount namespace, which
    /// must be a new one. Stops at the first failure.
    pub fn apply(&self) -> Result<(), MountFailure> {
        let mut table: Option<Vec<mountinfo::Mount>> = None;
        for (i, op) in self.ops.iter().enumerate() {
            let fail = |errno| MountFailure {
                index: i as u32,
                errno,
            };
            let needs_table = matches!(
                op,
                Op::HideOtherProcs | Op::PrivateMqueue | Op::ReadOnlySys | Op::ReadOnlyKernelFs
            );
            if needs_table && table.is_none() {
                let text = std::fs::read_to_string("/proc/self/mountinfo")
                    .map_err(|e| fail(e.raw_os_error().unwrap_or(libc::EIO)))?;
                table = Some(mountinfo::parse(&text));
            }
            let mounts = table.as_deref().unwrap_or(&[]);
            match op {
                Op::SlaveAll => mount(None, c"/", None, libc::MS_REC | libc::MS_SLAVE, None),
                Op::Proc => mount(
                    Some(c"proc"),
                    c"/proc",
                    Some(c"proc"),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    None,
                ),
                Op::HideOtherProcs => hide_other_procs(mounts),
                Op::PrivateShm => private_shm(),
                Op::PrivateMqueue => private_mqueue(mounts),
                Op::ReadOnlySys => read_only_sys(mounts),
                Op::ReadOnlyKernelFs => read_only_kernel_fs(mounts),
                Op::ReadOnly(p) => read_only_path(p),
                Op::Mask(p) => mask(p),
            }
            .map_err(fail)?;
        }
        Ok(())
    }
}

fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), i32> {
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: valid C strings or nulls, as mount(2) takes them.
    let rc = unsafe { libc::mount(p(source), target.as_ptr(), p(fstype), flags, p(data).cast()) };
    if rc != 0 {
        return Err(super::failure::errno());
    }
    Ok(())
}

fn is_under(path: &std::path::Path, top: &str) -> bool {
    path.starts_with(top)
}

fn cpath(p: &std::path::Path) -> Result<CString, i32> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)
}

/// An empty read-only tmpfs over every `proc` not on or under `/proc`.
fn hide_other_procs(mounts: &[mountinfo::Mount]) -> Result<(), i32> {
    for m in mounts {
        if m.fs_type == "proc" && !is_under(&m.mount_point, "/proc") {
            empty_dir_over(&cpath(&m.mount_point)?)?;
        }
    }
    Ok(())
}

/// A new tmpfs on `/dev/shm` (if the host has that directory), as the
/// host's is: world-writable and sticky, never executable.
fn private_shm() -> Result<(), i32> {
    if exists(c"/dev/shm")? != Some(true) {
        return Ok(());
    }
    mount(
        Some(c"shm"),
        c"/dev/shm",
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(c"mode=1777"),
    )
}

/// A new `mqueue` instance, which shows the mounting process's IPC
/// namespace, over every `mqueue` mount.
fn private_mqueue(mounts: &[mountinfo::Mount]) -> Result<(), i32> {
    for m in mounts.iter().filter(|m| m.fs_type == "mqueue") {
        mount(
            Some(c"mqueue"),
            &cpath(&m.mount_point)?,
            Some(c"mqueue"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )?;
    }
    Ok(())
}

fn empty_dir_over(path: &CStr) -> Result<(), i32> {
    mount(
        Some(c"tmpfs"),
        path,
        Some(c"tmpfs"),
        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(c"mode=0555"),
    )
}

/// `/sys` and its submounts read-only. `/sys` is first made a mount of its
/// own if it is not one, so that the root file system is never touched.
fn read_only_sys(mounts: &[mountinfo::Mount]) -> Result<(), i32> {
    let sys = std::path::Path::new("/sys");
    if !sys.exists() {
        return Ok(());
    }
    if !mounts.iter().any(|m| m.mount_point == sys) {
        mount(
            Some(c"/sys"),
            c"/sys",
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )?;
    }
    let below: Vec<&std::path::Path> = mounts
        .iter()
        .map(|m| m.mount_point.as_path())
        .filter(|p| is_under(p, "/sys"))
        .collect();
    read_only_tree(c"/sys", &below)
}

/// `sysfs`, `cgroup` and `cgroup2` mounted outside `/sys`.
fn read_only_kernel_fs(mounts: &[mountinfo::Mount]) -> Result<(), i32> {
    for m in mounts {
        let kernel_fs = matches!(m.fs_type.as_str(), "sysfs" | "cgroup" | "cgroup2");
        if kernel_fs && !is_under(&m.mount_point, "/sys") {
            let below: Vec<&std::path::Path> = mounts
                .iter()
                .map(|n| n.mount_point.as_path())
                .filter(|p| p.starts_with(&m.mount_point))
                .collect();
            read_only_tree(&cpath(&m.mount_point)?, &below)?;
        }
    }
    Ok(())
}

/// Makes the mount at `top` and every mount below it read-only:
/// `mount_setattr(AT_RECURSIVE)` (Linux 5.12), else a read-only bind
/// remount of each mount point in `below` (which lists `top`'s subtree).
pub fn read_only_tree(top: &CStr, below: &[&std::path::Path]) -> Result<(), i32> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid path and a mount_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            top.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = super::failure::errno();
    if e != libc::ENOSYS {
        return Err(e);
    }
    read_only_each(below)
}

/// The fallback of [`read_only_tree`] for kernels without `mount_setattr`:
/// each mount point remounted read-only (and nosuid, nodev, noexec, which
/// only ever narrows what a kernel file system allows).
pub fn read_only_each(mount_points: &[&std::path::Path]) -> Result<(), i32> {
    for p in mount_points {
        remount_read_only(&cpath(p)?)?;
    }
    Ok(())
}

fn remount_read_only(path: &CStr) -> Result<(), i32> {
    mount(
        None,
        path,
        None,
        libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        None,
    )
}

fn exists(path: &CStr) -> Result<Option<bool>, i32> {
    // SAFETY: stat into a zeroed local structure.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a valid pointer.
    if unsafe { libc::stat(path.as_ptr(), &mut st) } != 0 {
        let e = super::failure::errno();
        return if e == libc::ENOENT { Ok(None) } else { Err(e) };
    }
    Ok(Some(st.st_mode & libc::S_IFMT == libc::S_IFDIR))
}

/// Binds `path` onto itself (without submounts) and makes that read-only.
fn read_only_path(path: &CStr) -> Result<(), i32> {
    if exists(path)?.is_none() {
        return Ok(());
    }
    mount(Some(path), path, None, libc::MS_BIND, None)?;
    remount_read_only(path)
}

/// Hides `path`: an empty read-only tmpfs over a directory, `/dev/null`
/// over a file.
fn mask(path: &CStr) -> Result<(), i32> {
    match exists(path)? {
        None => Ok(()),
        Some(true) => empty_dir_over(path),
        Some(false) => mount(Some(c"/dev/null"), path, None, libc::MS_BIND, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_every_protection_in_order() {
        let plan = MountPlan::new(&Isolation::default());
        assert_eq!(plan.ops[0], Op::SlaveAll);
        assert_eq!(plan.ops[1], Op::Proc);
        assert_eq!(
            plan.ops.len(),
            7 + READONLY_PATHS.len() + MASKED_PATHS.len()
        );
        assert_eq!(plan.describe(1), "mounting a new proc on /proc");
        assert_eq!(plan.describe(3), "mounting a new tmpfs on /dev/shm");
        assert_eq!(plan.describe(10), "making /proc/sys read-only");
        assert_eq!(plan.describe(7 + 5 + 3), "masking /proc/kcore");
        assert_eq!(plan.describe(999), "mount operation 999");
    }

    #[test]
    fn relaxed_options_drop_their_operations() {
        let all_host = Isolation {
            pid: Share::Host,
            cgroup: Share::Host,
            ipc: Share::Host,
            system_paths: SystemPaths::Unconfined,
            sysfs: Sysfs::ReadWrite,
        };
        assert_eq!(MountPlan::new(&all_host).ops, [Op::SlaveAll]);
        let pid_host = Isolation {
            pid: Share::Host,
            ..Isolation::default()
        };
        let ops = MountPlan::new(&pid_host).ops;
        assert!(!ops.contains(&Op::Proc));
        assert!(ops.contains(&Op::HideOtherProcs), "{ops:?}");
        assert!(ops.contains(&Op::ReadOnlySys));
        assert!(ops.contains(&Op::PrivateShm));
        let ipc_host = Isolation {
            ipc: Share::Host,
            ..Isolation::default()
        };
        let ops = MountPlan::new(&ipc_host).ops;
        assert!(!ops.contains(&Op::PrivateShm) && !ops.contains(&Op::PrivateMqueue));
    }
}
