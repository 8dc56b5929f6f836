//! Which descriptors reach the workload: 0, 1 and 2, and `--preserve-fds N`
//! more (3 to 3+N-1, as runc's option). Every other descriptor moat
//! inherited is marked close-on-exec in the child right before the
//! seccomp filter and `execve`, whoever opened it and however.

use super::error::LaunchError;

const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// The first descriptor after the preserved ones.
pub fn first_closed(preserve: u32) -> libc::c_uint {
    preserve.saturating_add(3)
}

/// Checks that the descriptors `--preserve-fds` names are open in moat, so
/// that none of them can be one moat opens for itself later. Must run
/// before moat opens anything that stays open.
pub fn check_preserved(preserve: u32) -> Result<(), LaunchError> {
    for fd in 3..first_closed(preserve) {
        let Ok(fd) = libc::c_int::try_from(fd) else {
            return Err(not_open(preserve, fd, libc::EBADF));
        };
        // SAFETY: F_GETFD only reads the descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(not_open(preserve, fd as u32, libc::EBADF));
        }
    }
    Ok(())
}

fn not_open(preserve: u32, fd: u32, errno: i32) -> LaunchError {
    LaunchError::os(
        format!(
            "--preserve-fds {preserve}: descriptor {fd} is not open in moat (pass exactly the descriptors 3 to {} that moat inherits)",
            u64::from(preserve) + 2
        ),
        std::io::Error::from_raw_os_error(errno),
    )
}

/// In the child: keeps descriptors below `first` across `execve` (clearing
/// a close-on-exec flag they may have) and marks every other one
/// close-on-exec. Returns the errno of a failure.
pub fn seal(first: libc::c_uint) -> Result<(), i32> {
    for fd in 3..first {
        // SAFETY: fcntl on a descriptor number with integer arguments.
        if unsafe { libc::fcntl(fd as libc::c_int, libc::F_SETFD, 0) } != 0 {
            return Err(super::failure::errno());
        }
    }
    // SAFETY: close_range with integer arguments only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    match super::failure::errno() {
        // Before Linux 5.11 (CLOSE_RANGE_CLOEXEC) or 5.9 (close_range).
        libc::ENOSYS | libc::EINVAL => cloexec_each(first),
        e => Err(e),
    }
}

fn max_fd() -> libc::c_uint {
    // SAFETY: getrlimit into a local structure.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1 << 20;
    }
    rl.rlim_cur.min(1 << 20) as libc::c_uint
}

fn cloexec_each(first: libc::c_uint) -> Result<(), i32> {
    for fd in first..max_fd() {
        // SAFETY: fcntl with integer arguments; EBADF for unused numbers.
        unsafe { libc::fcntl(fd as libc::c_int, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// In moat's init: closes every descriptor except those in `keep`
/// (sorted ascending), including its standard streams.
pub fn close_all_except(keep: &[libc::c_int]) {
    let mut from: libc::c_uint = 0;
    for &k in keep {
        let k = k as libc::c_uint;
        if k > from {
            close_range(from, k - 1);
        }
        from = k + 1;
    }
    close_range(from, libc::c_uint::MAX);
}

fn close_range(first: libc::c_uint, last: libc::c_uint) {
    // SAFETY: close_range with integer arguments only.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if rc != 0 {
        for fd in first..=last.min(max_fd()) {
            // SAFETY: closing descriptor numbers we do not use any more.
            unsafe { libc::close(fd as libc::c_int) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserved_ranges_never_overflow() {
        assert_eq!(first_closed(0), 3);
        assert_eq!(first_closed(2), 5);
        assert_eq!(first_closed(u32::MAX), u32::MAX);
        assert!(check_preserved(0).is_ok());
        let e = check_preserved(u32::MAX).err().map(|e| e.to_string());
        // The first descriptor that is not open is named (the test
        // harness has some open, never all).
        assert!(e.is_some_and(|m| m.contains("is not open in moat")));
    }
}
