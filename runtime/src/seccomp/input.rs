//! Reading profile text with bounds: a profile file must be a regular file
//! no larger than [`MAX_PROFILE_BYTES`], and standard input is read only
//! when the caller asks for it (the path `-`), and only up to the same cap.
//!
//! A profile path is user input. Without these checks `/dev/zero` was read
//! until memory ran out and a FIFO with no writer blocked forever.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::error::{ProfileError, Source};

/// Largest profile accepted, in bytes. Real profiles are far smaller
/// (Docker's default is 13 KB, its old format 29 KB, Podman's 18 KB); the
/// cap leaves room for generated profiles hundreds of times larger.
pub const MAX_PROFILE_BYTES: u64 = 16 << 20;

/// Reads the profile file at `path`: it is opened without blocking (a FIFO
/// with no writer would otherwise hang the open), must be a regular file,
/// and must not be larger than [`MAX_PROFILE_BYTES`].
pub fn read_file(path: &Path) -> Result<String, ProfileError> {
    let source = Source::File(path.to_path_buf());
    let read_err = |error| ProfileError::Read {
        source_name: source.clone(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(ProfileError::NotRegular {
            source_name: source,
            kind: file_kind(&ft),
        });
    }
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(ProfileError::TooLarge {
            source_name: source,
            size: Some(meta.len()),
            cap: MAX_PROFILE_BYTES,
        });
    }
    // The size can change between fstat and read: the cap is enforced on
    // what is actually read, too.
    read_capped(file, source)
}

/// Reads a profile from standard input, up to [`MAX_PROFILE_BYTES`].
pub fn read_stdin() -> Result<String, ProfileError> {
    read_capped(std::io::stdin().lock(), Source::Stdin)
}

/// Reads at most [`MAX_PROFILE_BYTES`] from `r`; one byte more is an error.
pub fn read_capped(r: impl Read, source: Source) -> Result<String, ProfileError> {
    let mut bytes = Vec::new();
    r.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| ProfileError::Read {
            source_name: source.clone(),
            error,
        })?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(ProfileError::TooLarge {
            source_name: source,
            size: None,
            cap: MAX_PROFILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| ProfileError::Read {
        source_name: source,
        error: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ),
    })
}

fn file_kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("moat-input-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        let _ = std::fs::remove_dir(&d);
        d
    }

    #[test]
    fn dev_zero_is_refused_without_reading_it() {
        let e = read_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert_eq!(
            e,
            "/dev/zero: not a regular file (a character device); a profile must be a regular file, or `-` for standard input"
        );
    }

    #[test]
    fn a_fifo_without_a_writer_is_refused_at_once() {
        let p = tmp("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let start = std::time::Instant::now();
        let e = read_file(&p).unwrap_err().to_string();
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        assert!(e.ends_with("not a regular file (a FIFO); a profile must be a regular file, or `-` for standard input"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn directories_are_refused() {
        let e = read_file(Path::new("/")).unwrap_err().to_string();
        assert!(e.starts_with("/: not a regular file (a directory)"), "{e}");
    }

    #[test]
    fn files_over_the_cap_are_refused_by_size() {
        let p = tmp("big");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_PROFILE_BYTES + 1).unwrap();
        let e = read_file(&p).unwrap_err().to_string();
        assert!(
            e.ends_with(&format!(
                "profile is {} bytes; the limit is {MAX_PROFILE_BYTES} bytes (16 MiB)",
                MAX_PROFILE_BYTES + 1
            )),
            "{e}"
        );
        f.set_len(MAX_PROFILE_BYTES).unwrap();
        // At the cap the file is read whole.
        assert_eq!(read_file(&p).unwrap().len() as u64, MAX_PROFILE_BYTES);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn streams_are_cut_at_the_cap() {
        let e = read_capped(std::io::repeat(b' '), Source::Stdin)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("<standard input>: profile is larger than the limit of {MAX_PROFILE_BYTES} bytes (16 MiB)")
        );
        let ok = read_capped(&b"{}"[..], Source::Stdin).unwrap();
        assert_eq!(ok, "{}");
    }

    #[test]
    fn invalid_utf8_names_the_offset() {
        let e = read_capped(&b"{\"a\xff"[..], Source::Stdin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid byte at offset 3"), "{e}");
    }
}
