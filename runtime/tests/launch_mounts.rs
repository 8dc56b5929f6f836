//! The read-only `/sys` of `moat run`'s mount namespace, on the real kernel:
//! both ways of making a mount tree read-only (`mount_setattr` with
//! `AT_RECURSIVE`, and the per-mount remount kernels before 5.12 need),
//! each in a forked child's private mount namespace.

use std::ffi::CString;
use std::path::Path;

use moat_runtime::cgroup::mountinfo;
use moat_runtime::launch::mounts;

/// Runs `f` in a forked child with a private mount namespace whose mounts
/// are slaves of the host's; returns the child's exit code.
fn in_private_mount_namespace(f: fn() -> i32) -> i32 {
    // SAFETY: the child only makes system calls and reads files before
    // _exit; glibc's malloc stays usable after fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: plain system calls in the child.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ) != 0
            {
                libc::_exit(90);
            }
            libc::_exit(f())
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    libc::WEXITSTATUS(status)
}

/// 0 if every cgroup.procs at the top of a cgroup mount under /sys refuses
/// to open for writing with EROFS; 1 if one opens; 2 if none was found.
fn cgroup_roots_are_read_only() -> i32 {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut checked = 0;
    for m in mountinfo::parse(&text) {
        if !m.fs_type.starts_with("cgroup") || !m.mount_point.starts_with("/sys") {
            continue;
        }
        let procs = m.mount_point.join("cgroup.procs");
        let c = CString::new(procs.to_str().unwrap()).unwrap();
        // SAFETY: opening a path; closed if it opened.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
            return 1;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EROFS) {
            return 3;
        }
        checked += 1;
    }
    if checked == 0 {
        2
    } else {
        0
    }
}

fn skip() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: mounting needs root");
        return true;
    }
    if !Path::new("/sys/fs/cgroup").exists() {
        eprintln!("SKIP: no cgroup file system under /sys");
        return true;
    }
    false
}

#[test]
fn mount_setattr_makes_sys_read_only_recursively() {
    if skip() {
        return;
    }
    assert_eq!(
        in_private_mount_namespace(cgroup_roots_are_read_only),
        1,
        "writable before"
    );
    let code = in_private_mount_namespace(|| {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let table = mountinfo::parse(&text);
        let below: Vec<&Path> = table
            .iter()
            .map(|m| m.mount_point.as_path())
            .filter(|p| p.starts_with("/sys"))
            .collect();
        if mounts::read_only_tree(c"/sys", &below).is_err() {
            return 10;
        }
        cgroup_roots_are_read_only()
    });
    assert_eq!(code, 0);
}

#[test]
fn the_per_mount_fallback_makes_sys_read_only_too() {
    if skip() {
        return;
    }
    let code = in_private_mount_namespace(|| {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let table = mountinfo::parse(&text);
        let below: Vec<&Path> = table
            .iter()
            .map(|m| m.mount_point.as_path())
            .filter(|p| p.starts_with("/sys"))
            .collect();
        if mounts::read_only_each(&below).is_err() {
            return 10;
        }
        cgroup_roots_are_read_only()
    });
    assert_eq!(code, 0);
}
