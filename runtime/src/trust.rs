//! Whether a file moat reads its decisions from could have been written by
//! someone else: the state directory, the records in it, the sub-id files.
//! A file is trusted when root (or the user running moat) owns it and
//! nobody else may write it; a directory on the way to it must not let
//! others replace it either.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What kind of file a `st_mode` describes, for messages ("a FIFO").
pub(crate) fn file_kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        _ => "a file of unknown type",
    }
}

/// Whether `mode` is of type `kind` (`libc::S_IFREG`, `libc::S_IFDIR`).
pub(crate) fn is_kind(mode: u32, kind: u32) -> bool {
    mode & libc::S_IFMT == kind
}

/// Checks that root or the effective user owns a file and that neither its
/// group nor others may write it; the error is the reason, for a message
/// that names the file.
pub(crate) fn check_owner_and_mode(uid: u32, mode: u32) -> Result<(), String> {
    let me = nix::unistd::geteuid().as_raw();
    if uid != 0 && uid != me {
        return Err(if me == 0 {
            format!("owned by uid {uid}, not by root")
        } else {
            format!("owned by uid {uid}, not by root or uid {me}")
        });
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "writable by group or others (mode {:04o})",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Checks the directories above `real` (a path without symbolic links):
/// each must belong to root or the effective user, and one that group or
/// others may write needs the sticky bit (as `/tmp` has), which keeps them
/// from renaming what they do not own. Returns the first one at fault and
/// why.
pub(crate) fn check_ancestors(real: &Path) -> Result<(), (std::path::PathBuf, String)> {
    for dir in real.ancestors().skip(1) {
        let meta =
            std::fs::symlink_metadata(dir).map_err(|e| (dir.to_path_buf(), e.to_string()))?;
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != me {
            return Err((
                dir.to_path_buf(),
                format!(
                    "owned by uid {}, who could replace what is below it",
                    meta.uid()
                ),
            ));
        }
        let sticky = meta.mode() & libc::S_ISVTX != 0;
        if meta.mode() & 0o022 != 0 && !sticky {
            return Err((
                dir.to_path_buf(),
                format!(
                    "writable by group or others without the sticky bit (mode {:04o}), \
                     so they could replace what is below it",
                    meta.mode() & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(file_kind(libc::S_IFIFO | 0o600), "a FIFO");
        assert_eq!(file_kind(libc::S_IFCHR), "a character device");
        assert_eq!(file_kind(libc::S_IFLNK | 0o777), "a symbolic link");
        assert!(is_kind(libc::S_IFREG | 0o644, libc::S_IFREG));
        assert!(!is_kind(libc::S_IFDIR | 0o755, libc::S_IFREG));
    }

    #[test]
    fn owner_and_mode() {
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(check_owner_and_mode(0, 0o700), Ok(()));
        assert_eq!(check_owner_and_mode(me, 0o644), Ok(()));
        let e = check_owner_and_mode(0, 0o1777).unwrap_err();
        assert_eq!(e, "writable by group or others (mode 1777)");
        assert!(check_owner_and_mode(0, 0o720).is_err());
        if me == 0 {
            let e = check_owner_and_mode(65534, 0o700).unwrap_err();
            assert_eq!(e, "owned by uid 65534, not by root");
        }
    }

    #[test]
    fn ancestors_of_a_temp_dir() {
        // /tmp is world-writable with the sticky bit: fine.
        let dir = std::env::temp_dir().join(format!("moat-trust-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        assert_eq!(check_ancestors(&dir.join("a/b")), Ok(()));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (at, why) = check_ancestors(&dir.join("a/b")).unwrap_err();
        assert_eq!(at, dir);
        assert!(why.contains("without the sticky bit (mode 0777)"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
