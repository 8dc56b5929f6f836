//! `/etc/subuid` and `/etc/subgid`: the host ids delegated to each user.
//!
//! The format is shadow-utils': one `NAME_OR_UID:START:COUNT` per line.
//! Every line is checked, not only the requested user's, because a
//! malformed file is worth fixing before ids are handed out from it.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::UsernsError;

/// `count` consecutive host ids starting at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubIdRange {
    /// First id.
    pub start: u32,
    /// Number of ids.
    pub count: u32,
}

impl SubIdRange {
    /// One past the last id, widened so that it cannot overflow.
    pub fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.count)
    }
}

/// One parsed line of a subordinate-id file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubIdEntry {
    /// The user name or numeric uid the line is for.
    pub owner: String,
    /// The delegated ids.
    pub range: SubIdRange,
}

/// Parses `/etc/subuid`-style files: lines `name_or_uid:start:count`, `#`
/// comments and blank lines ignored; returns the ranges for `user` (matching
/// by name, or by its uid if the user exists in /etc/passwd). Malformed lines
/// are errors naming file and line number.
pub fn read_subid(path: &Path, user: &str) -> Result<Vec<SubIdRange>, UsernsError> {
    let entries = read_entries(path)?;
    // A line may name the user by uid; that only means something if the
    // user exists. Lookup failures are treated as "no such user".
    let uid = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw().to_string());
    Ok(entries
        .into_iter()
        .filter(|e| e.owner == user || uid.as_deref() == Some(e.owner.as_str()))
        .map(|e| e.range)
        .collect())
}

/// The largest subordinate-id file read: about 100,000 lines.
pub const MAX_SUBID_BYTES: u64 = 4 << 20;

/// Reads and checks every line of a subordinate-id file.
pub(crate) fn read_entries(path: &Path) -> Result<Vec<SubIdEntry>, UsernsError> {
    let text = read_trusted(path)?;
    parse_entries(path, &text)
}

/// Reads a subordinate-id file, which decides the host ids `--userns auto`
/// hands out, so only if nobody but root could have written it: a regular
/// file (a FIFO would block, a device could be anything), owned by root
/// (or the caller) and writable by nobody else, of at most
/// [`MAX_SUBID_BYTES`]. A symbolic link is followed: the administrator
/// may keep the file elsewhere; what it points to is checked.
fn read_trusted(path: &Path) -> Result<String, UsernsError> {
    let read_err = |error| UsernsError::Read {
        file: path.to_path_buf(),
        error,
    };
    let untrusted = |reason: String| UsernsError::Untrusted {
        file: path.to_path_buf(),
        reason,
    };
    // Looked at before it is opened: opening a FIFO or a device can block
    // or act.
    let before = std::fs::metadata(path).map_err(read_err)?;
    if !before.file_type().is_file() {
        return Err(untrusted(format!(
            "it is {}, not a regular file",
            crate::trust::file_kind(before.mode())
        )));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if (meta.dev(), meta.ino()) != (before.dev(), before.ino()) || !meta.file_type().is_file() {
        return Err(untrusted("it changed while moat opened it".to_owned()));
    }
    crate::trust::check_owner_and_mode(meta.uid(), meta.mode()).map_err(|why| {
        untrusted(format!(
            "it is {why}; whoever can write it chooses the host ids --userns auto hands out"
        ))
    })?;
    let too_big = |size: u64| untrusted(format!("it is {size} bytes, more than {MAX_SUBID_BYTES}"));
    if meta.len() > MAX_SUBID_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut text = String::new();
    file.take(MAX_SUBID_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_SUBID_BYTES {
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}

fn parse_entries(path: &Path, text: &str) -> Result<Vec<SubIdEntry>, UsernsError> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |field: &'static str, reason: String| UsernsError::SubIdLine {
            file: PathBuf::from(path),
            line: i + 1,
            field,
            reason,
        };
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() != 3 {
            return Err(err(
                "line",
                format!(
                    "{} fields separated by ':' in {line:?}, not 3",
                    fields.len()
                ),
            ));
        }
        let owner = fields[0].trim();
        if owner.is_empty() {
            return Err(err("name", "the user name or uid is empty".to_string()));
        }
        let number = |field: &'static str, text: &str| {
            text.trim().parse::<u32>().map_err(|_| {
                err(
                    field,
                    format!("{text:?} is not a number from 0 to {}", u32::MAX),
                )
            })
        };
        let range = SubIdRange {
            start: number("start", fields[1])?,
            count: number("count", fields[2])?,
        };
        // The kernel refuses maps whose ids wrap past u32::MAX.
        if range.start.checked_add(range.count).is_none() {
            return Err(err(
                "count",
                format!("ids {}+{} go past {}", range.start, range.count, u32::MAX),
            ));
        }
        entries.push(SubIdEntry {
            owner: owner.to_string(),
            range,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userns::test_support::TempDir;

    fn r(start: u32, count: u32) -> SubIdRange {
        SubIdRange { start, count }
    }

    fn read(contents: &str, user: &str) -> Result<Vec<SubIdRange>, UsernsError> {
        let dir = TempDir::new("subid");
        let path = dir.file("subuid", contents);
        read_subid(&path, user)
    }

    fn err(contents: &str) -> (String, PathBuf) {
        let dir = TempDir::new("subid-err");
        let path = dir.file("subuid", contents);
        match read_subid(&path, "moat") {
            Ok(v) => panic!("{contents:?} parsed as {v:?}"),
            Err(e) => (e.to_string(), path),
        }
    }

    #[test]
    fn ranges_for_the_user_only() {
        let text = "alice:100000:65536\nmoat:200000:65536\n\nmoat:400000:1000\nbob:300000:5\n";
        assert_eq!(
            read(text, "moat").unwrap(),
            vec![r(200000, 65536), r(400000, 1000)]
        );
        assert_eq!(read(text, "alice").unwrap(), vec![r(100000, 65536)]);
        assert_eq!(read(text, "carol").unwrap(), vec![]);
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let text = "# header\n\n   \n  # indented comment\n moat:100000:65536 \r\n";
        assert_eq!(read(text, "moat").unwrap(), vec![r(100000, 65536)]);
        assert_eq!(read("", "moat").unwrap(), vec![]);
    }

    #[test]
    fn matches_by_uid_of_an_existing_user() {
        // root exists everywhere with uid 0.
        let text = "0:100000:65536\nroot:300000:10\n";
        assert_eq!(
            read(text, "root").unwrap(),
            vec![r(100000, 65536), r(300000, 10)]
        );
        // A user that does not exist matches only by name.
        assert_eq!(
            read("0:100000:65536\n", "no-such-user-moat-test").unwrap(),
            vec![]
        );
    }

    #[test]
    fn wrong_field_count_names_file_and_line() {
        let (e, path) = err("# c\nmoat:100000:65536\nmoat:100000\n");
        assert!(
            e.starts_with(&format!("{}:3: line:", path.display())),
            "{e}"
        );
        assert!(e.contains("2 fields"), "{e}");
        assert!(e.contains("NAME_OR_UID:START:COUNT"), "{e}");
        let (e, _) = err("moat:1:2:3\n");
        assert!(e.contains(":1: line: 4 fields"), "{e}");
    }

    #[test]
    fn empty_name() {
        let (e, _) = err(":100000:65536\n");
        assert!(e.contains(":1: name: the user name or uid is empty"), "{e}");
    }

    #[test]
    fn bad_numbers_name_the_field() {
        let (e, _) = err("moat:abc:65536\n");
        assert!(e.contains(":1: start: \"abc\" is not a number"), "{e}");
        let (e, _) = err("\nmoat:100000:-5\n");
        assert!(e.contains(":2: count: \"-5\" is not a number"), "{e}");
        let (e, _) = err("moat:100000:99999999999\n");
        assert!(e.contains(":1: count:"), "{e}");
    }

    #[test]
    fn overflow() {
        let (e, _) = err("moat:4294967000:1000\n");
        assert!(e.contains(":1: count: ids 4294967000+1000 go past"), "{e}");
    }

    #[test]
    fn malformed_line_of_another_user_is_still_an_error() {
        let (e, _) = err("moat:100000:65536\nbob:x:1\n");
        assert!(e.contains(":2: start:"), "{e}");
    }

    #[test]
    fn missing_file() {
        let dir = TempDir::new("subid-missing");
        let path = dir.path().join("nope");
        match read_subid(&path, "moat") {
            Err(UsernsError::Read { file, error }) => {
                assert_eq!(file, path);
                assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    fn untrusted(path: &Path) -> String {
        match read_subid(path, "moat") {
            Err(e @ UsernsError::Untrusted { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_files_nobody_else_could_write_are_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("subid-trust");
        let path = dir.file("subuid", "moat:0:65536\n");
        for mode in [0o666, 0o646, 0o664] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = untrusted(&path);
            assert!(e.starts_with(&path.display().to_string()), "{e}");
            assert!(e.contains("writable by group or others"), "{e}");
            assert!(e.contains("--userns auto"), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_subid(&path, "moat").unwrap(), vec![r(0, 65536)]);
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            assert!(untrusted(&path).contains("owned by uid 65534"));
        }
    }

    #[test]
    fn a_fifo_or_a_huge_file_is_not_read() {
        let dir = TempDir::new("subid-odd");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(untrusted(&fifo).contains("it is a FIFO, not a regular file"));
        let big = dir.file("big", "");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_SUBID_BYTES + 1)
            .unwrap();
        assert!(untrusted(&big).contains("more than 4194304"));
        // A symbolic link is followed to a file that passes.
        let good = dir.file("good", "moat:100000:65536\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert_eq!(read_subid(&link, "moat").unwrap(), vec![r(100000, 65536)]);
    }
}
