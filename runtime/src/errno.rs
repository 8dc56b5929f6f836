//! Errno names for x86_64/generic Linux, for messages and labels.

const NAMES: [&str; 134] = [
    "",
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR",
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS",
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
    "ELOOP",
    "",
    "ENOMSG",
    "EIDRM",
    "ECHRNG",
    "EL2NSYNC",
    "EL3HLT",
    "EL3RST",
    "ELNRNG",
    "EUNATCH",
    "ENOCSI",
    "EL2HLT",
    "EBADE",
    "EBADR",
    "EXFULL",
    "ENOANO",
    "EBADRQC",
    "EBADSLT",
    "",
    "EBFONT",
    "ENOSTR",
    "ENODATA",
    "ETIME",
    "ENOSR",
    "ENONET",
    "ENOPKG",
    "EREMOTE",
    "ENOLINK",
    "EADV",
    "ESRMNT",
    "ECOMM",
    "EPROTO",
    "EMULTIHOP",
    "EDOTDOT",
    "EBADMSG",
    "EOVERFLOW",
    "ENOTUNIQ",
    "EBADFD",
    "EREMCHG",
    "ELIBACC",
    "ELIBBAD",
    "ELIBSCN",
    "ELIBMAX",
    "ELIBEXEC",
    "EILSEQ",
    "ERESTART",
    "ESTRPIPE",
    "EUSERS",
    "ENOTSOCK",
    "EDESTADDRREQ",
    "EMSGSIZE",
    "EPROTOTYPE",
    "ENOPROTOOPT",
    "EPROTONOSUPPORT",
    "ESOCKTNOSUPPORT",
    "EOPNOTSUPP",
    "EPFNOSUPPORT",
    "EAFNOSUPPORT",
    "EADDRINUSE",
    "EADDRNOTAVAIL",
    "ENETDOWN",
    "ENETUNREACH",
    "ENETRESET",
    "ECONNABORTED",
    "ECONNRESET",
    "ENOBUFS",
    "EISCONN",
    "ENOTCONN",
    "ESHUTDOWN",
    "ETOOMANYREFS",
    "ETIMEDOUT",
    "ECONNREFUSED",
    "EHOSTDOWN",
    "EHOSTUNREACH",
    "EALREADY",
    "EINPROGRESS",
    "ESTALE",
    "EUCLEAN",
    "ENOTNAM",
    "ENAVAIL",
    "EISNAM",
    "EREMOTEIO",
    "EDQUOT",
    "ENOMEDIUM",
    "EMEDIUMTYPE",
    "ECANCELED",
    "ENOKEY",
    "EKEYEXPIRED",
    "EKEYREVOKED",
    "EKEYREJECTED",
    "EOWNERDEAD",
    "ENOTRECOVERABLE",
    "ERFKILL",
    "EHWPOISON",
];

/// The symbolic name of an errno value (`EPERM` for 1), if it has one.
pub fn name(errno: u32) -> Option<&'static str> {
    NAMES.get(errno as usize).copied().filter(|n| !n.is_empty())
}

/// The errno value of a symbolic name (`ENOSYS` → 38); `EWOULDBLOCK` and
/// `EDEADLOCK` are accepted as the aliases they are.
pub fn from_name(name: &str) -> Option<u32> {
    match name {
        "EWOULDBLOCK" => Some(11),
        "EDEADLOCK" => Some(35),
        "ENOTSUP" => Some(95),
        _ => NAMES
            .iter()
            .position(|n| !n.is_empty() && *n == name)
            .map(|p| p as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_libc_values() {
        assert_eq!(from_name("EPERM"), Some(libc::EPERM as u32));
        assert_eq!(from_name("ENOSYS"), Some(libc::ENOSYS as u32));
        assert_eq!(from_name("EAGAIN"), Some(libc::EAGAIN as u32));
        assert_eq!(name(libc::EHWPOISON as u32), Some("EHWPOISON"));
        assert_eq!(name(libc::ECONNREFUSED as u32), Some("ECONNREFUSED"));
        assert_eq!(name(0), None);
        assert_eq!(name(4095), None);
    }

    /// The table is hand-written (libseccomp profiles name errnos as text, and
    /// neither libc nor nix maps names to numbers); nix's `Errno` list, which
    /// names every Linux errno, checks it entry by entry.
    #[test]
    fn the_table_is_nix_s_errno_list() {
        for n in 1..NAMES.len() as i32 {
            let errno = nix::errno::Errno::from_raw(n);
            if errno == nix::errno::Errno::UnknownErrno {
                // Unused numbers (41, 58 on x86_64): no name either.
                assert_eq!(name(n as u32), None, "errno {n}");
                continue;
            }
            let nix_name = format!("{errno:?}");
            assert_eq!(name(n as u32), Some(nix_name.as_str()), "errno {n}");
            assert_eq!(from_name(&nix_name), Some(n as u32), "{nix_name}");
        }
        // nix knows nothing past the table's end.
        let past = NAMES.len() as i32;
        assert_eq!(
            nix::errno::Errno::from_raw(past),
            nix::errno::Errno::UnknownErrno
        );
    }
}
