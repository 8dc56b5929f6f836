//! Writing a command's output file without ever leaving half of it, and
//! without clobbering what the path names when it is not a plain file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path`.
///
/// A regular file (or a path that does not exist yet) is replaced
/// atomically: the bytes go to a temporary file beside it, which is then
/// renamed over it, so a reader sees the old content or the new, never
/// half. A symbolic link is followed and its target replaced, the link
/// stays. Anything else (`/dev/null`, a FIFO, `/dev/stdout`,
/// `/proc/self/fd/N`) is written in place: renaming over a device node
/// would replace it with a regular file.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => write_in_place(path, bytes),
        Ok(_) => {
            let target = std::fs::canonicalize(path)
                .with_context(|| format!("cannot resolve {}", path.display()))?;
            replace(&target, bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => replace(path, bytes),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
}

fn write_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {} for writing", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_beside(path);
    let result = std::fs::write(&tmp, bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A hidden name in the same directory (so the rename stays on one file
/// system), unique to this process (so two writers do not collide).
fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    path.with_file_name(format!(".{name}.moat-tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("moat-output-{tag}-"))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn a_new_or_existing_file_is_replaced_and_no_temporary_stays() {
        let tmp = temp_dir("file");
        let d = tmp.path();
        let p = d.join("out.bpf");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_stays_a_symlink_and_its_target_gets_the_bytes() {
        let tmp = temp_dir("link");
        let d = tmp.path();
        let target = d.join("target.bpf");
        std::fs::write(&target, b"old").unwrap();
        let link = d.join("link.bpf");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn a_character_device_is_written_in_place_not_replaced() {
        write(Path::new("/dev/null"), b"discarded").unwrap();
        let m = std::fs::metadata("/dev/null").unwrap();
        assert!(
            std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()),
            "/dev/null is no longer a character device"
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_path() {
        let err = write(Path::new("/nonexistent-moat-dir/out.bpf"), b"x").unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent-moat-dir/"),
            "{err:#}"
        );
    }
}
