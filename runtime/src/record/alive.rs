//! Whether a recorded cgroup still exists, from its key alone: the gate only
//! counts recordings whose cgroup exists, so that one a killed `moat` left
//! behind costs the node nothing.

use std::ffi::CString;
use std::path::Path;

use moat_common::V1_PIDS_ID_FLAG;

/// `FILEID_KERNFS`: a kernfs node id as a file handle (cgroup file systems).
const FILEID_KERNFS: i32 = 0xfe;

#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// Whether the cgroup named by `key` (a v2 cgroup id, or `V1_PIDS_ID_FLAG |
/// <v1 pids cgroup id>`) exists. Anything but a clear "gone" (`ESTALE`,
/// `ENOENT`) counts as existing: the gate stays open rather than miss a
/// recording.
pub fn cgroup_exists(key: u64) -> bool {
    let mount = if key & V1_PIDS_ID_FLAG != 0 {
        "/sys/fs/cgroup/pids"
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    let Ok(c) = CString::new(mount) else {
        return true;
    };
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let mount_fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if mount_fd < 0 {
        return true;
    }
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id: key & !V1_PIDS_ID_FLAG,
    };
    // SAFETY: a valid file handle of the size it declares.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount_fd,
            &mut handle as *mut KernfsHandle as *mut libc::file_handle,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    let err = std::io::Error::last_os_error().raw_os_error();
    // SAFETY: descriptors we opened.
    unsafe {
        if fd >= 0 {
            libc::close(fd);
        }
        libc::close(mount_fd);
    }
    fd >= 0 || !matches!(err, Some(libc::ESTALE) | Some(libc::ENOENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_that_exists_is_found_and_a_made_up_one_is_not() {
        let v2 = if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
            "/sys/fs/cgroup/unified"
        } else {
            "/sys/fs/cgroup"
        };
        let Ok(meta) = std::fs::metadata(v2) else {
            eprintln!("SKIP: no cgroup v2 mount");
            return;
        };
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: open_by_handle_at needs CAP_DAC_READ_SEARCH");
            return;
        }
        use std::os::unix::fs::MetadataExt as _;
        assert!(cgroup_exists(meta.ino()));
        assert!(!cgroup_exists(0x7fff_ffff_ff00));
    }
}
