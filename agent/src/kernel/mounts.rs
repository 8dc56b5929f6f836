//! The kernel file systems the eBPF side needs: tracefs (tracepoints are attached
//! by name through it) and bpffs (for pinning). Fresh machines do not always have
//! them mounted; moatd mounts them, and leaves them mounted when it exits since
//! other tools share them.

use std::path::Path;

use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, FsType, BPF_FS_MAGIC, TRACEFS_MAGIC},
};

/// A file system moatd makes sure is mounted.
#[derive(Debug, Clone, Copy)]
pub struct KernelFs {
    /// Where it belongs.
    pub path: &'static str,
    /// Its type for mount(2).
    pub fs_type: &'static str,
    magic: FsType,
}

/// tracefs at `/sys/kernel/tracing`.
pub const TRACEFS: KernelFs = KernelFs {
    path: "/sys/kernel/tracing",
    fs_type: "tracefs",
    magic: TRACEFS_MAGIC,
};

/// bpffs at `/sys/fs/bpf`.
pub const BPFFS: KernelFs = KernelFs {
    path: "/sys/fs/bpf",
    fs_type: "bpf",
    magic: BPF_FS_MAGIC,
};

/// Whether `fs` is mounted at its path.
pub fn is_mounted(fs: &KernelFs) -> bool {
    statfs(fs.path).is_ok_and(|s| s.filesystem_type() == fs.magic)
}

/// Mounts `fs` if it is not mounted yet; returns whether it mounted it.
pub fn ensure_mounted(fs: &KernelFs) -> Result<bool, String> {
    if is_mounted(fs) {
        return Ok(false);
    }
    let path = Path::new(fs.path);
    if !path.is_dir() {
        std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", fs.path))?;
    }
    mount(
        Some(fs.fs_type),
        path,
        Some(fs.fs_type),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("mount -t {} {} {}: {e}", fs.fs_type, fs.fs_type, fs.path))?;
    Ok(true)
}

/// Makes sure tracefs and bpffs are mounted; logs what it mounted and warns about
/// what it could not (the programs then fail to attach with their own error).
pub fn ensure_kernel_filesystems() {
    for fs in [TRACEFS, BPFFS] {
        match ensure_mounted(&fs) {
            Ok(true) => log::info!("mounted {} at {}", fs.fs_type, fs.path),
            Ok(false) => log::debug!("{} is mounted at {}", fs.fs_type, fs.path),
            Err(err) => log::warn!(
                "{} is not mounted and mounting it failed: {err}",
                fs.fs_type
            ),
        }
    }
}
