//! Telling the supervisor the command's pid as the host sees it.
//!
//! With the systemd cgroup manager the supervisor asks systemd to put the
//! waiting command into its scope, by pid. moat's init only knows that pid
//! in the workload's PID namespace, so it sends it as `SCM_CREDENTIALS` on
//! a Unix socket: the kernel translates a credential's pid into the
//! receiver's namespace, so the supervisor reads the host's number, with
//! no race and no `/proc` walk. (Sending another process's pid needs
//! `CAP_SYS_ADMIN` over the PID namespace, which the init has until it
//! hardens itself.)

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A connected pair of `SOCK_SEQPACKET` sockets (close-on-exec): the
/// supervisor's end (which receives credentials) and the init's.
pub fn pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills the two-element array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned these descriptors to us.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a local int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            ours.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((ours, theirs))
}

const CMSG_BUF: usize = 64;

/// Sends `pid` (a pid of the caller's PID namespace) as the credentials of
/// a one-byte message. Allocation-free: the init calls it after forking.
pub fn send_pid(sock: RawFd, pid: i32) -> Result<(), i32> {
    let cred = libc::ucred {
        pid,
        // SAFETY: getuid and getgid cannot fail.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getgid() },
    };
    let mut byte = [b'p'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    #[repr(C, align(8))]
    struct Buf([u8; CMSG_BUF]);
    let mut buf = Buf([0; CMSG_BUF]);
    // SAFETY: msghdr is plain data; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen =
        unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32) } as _;
    // SAFETY: the control buffer is aligned and large enough for one
    // ucred message (CMSG_BUF >= CMSG_SPACE(12)).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_CREDENTIALS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::ucred>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::ucred>(), cred);
    }
    loop {
        // SAFETY: sendmsg with the message built above.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n == 1 {
            return Ok(());
        }
        let e = super::failure::errno();
        if n < 0 && e == libc::EINTR {
            continue;
        }
        return Err(if n < 0 { e } else { libc::EIO });
    }
}

/// Receives the pid [`send_pid`] sent, as the caller's PID namespace sees
/// it. `Ok(None)` when the other end closed without sending (the init
/// failed first and reports why on its report pipe).
pub fn recv_pid(sock: &OwnedFd) -> std::io::Result<Option<i32>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    #[repr(C, align(8))]
    struct Buf([u8; CMSG_BUF]);
    let mut buf = Buf([0; CMSG_BUF]);
    loop {
        // SAFETY: msghdr is plain data; the pointers outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = buf.0.as_mut_ptr().cast();
        msg.msg_controllen = CMSG_BUF as _;
        // SAFETY: recvmsg into the buffers above.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(None);
        }
        // SAFETY: walking the control messages the kernel wrote into buf.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                    let cred: libc::ucred =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::ucred>());
                    if cred.pid <= 0 {
                        break;
                    }
                    return Ok(Some(cred.pid));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        return Err(std::io::Error::other(
            "moat's init sent no credentials with the command's pid",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_comes_through_as_the_receiver_sees_it() {
        let (ours, theirs) = pair().unwrap();
        let me = std::process::id() as i32;
        send_pid(theirs.as_raw_fd(), me).unwrap();
        assert_eq!(recv_pid(&ours).unwrap(), Some(me));
        drop(theirs);
        assert_eq!(recv_pid(&ours).unwrap(), None);
    }

    #[test]
    fn a_pid_that_is_not_a_process_is_refused_by_the_kernel() {
        let (_ours, theirs) = pair().unwrap();
        // pid_max is at most 4194304: this pid cannot exist.
        assert_eq!(send_pid(theirs.as_raw_fd(), 5_000_000), Err(libc::ESRCH));
    }
}
