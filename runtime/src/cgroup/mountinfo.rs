//! Parsing `/proc/self/mountinfo` (proc(5)) far enough to find cgroup mounts.
//!
//! A line looks like
//! `39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids`:
//! mount id, parent id, major:minor, root, mount point, mount options, zero
//! or more optional fields, a `-` separator, file-system type, source and
//! super options. The optional fields make the position of everything after
//! them variable, so the separator is searched for rather than counted.

use std::path::PathBuf;

/// One mount of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory in the mounted file system that is the mount's root
    /// (`/` unless a subdirectory was bind-mounted or a cgroup namespace
    /// hides the upper part of the hierarchy).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The file-system type: `cgroup` for v1, `cgroup2` for v2.
    pub fs_type: String,
    /// Per-superblock options; for cgroup v1 these name the controllers
    /// bound to the hierarchy (`rw,pids`, `rw,cpu,cpuacct`).
    pub super_options: Vec<String>,
}

impl Mount {
    /// Whether the super options contain exactly `option` (so `pids` does
    /// not match `name=pids-like`).
    pub fn has_super_option(&self, option: &str) -> bool {
        self.super_options.iter().any(|o| o == option)
    }
}

/// Parses a whole mount table. Lines that do not have the expected shape are
/// skipped rather than refused: the kernel's format has grown before, and one
/// odd line must not stop moat from finding its cgroups.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// Parses one line, or `None` when it does not have the documented shape.
pub fn parse_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    // Mount id, parent id, major:minor, root, mount point, options: at least
    // six fields before the separator, and three after it.
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    Some(Mount {
        root: PathBuf::from(unescape(fields[3])),
        mount_point: PathBuf::from(unescape(fields[4])),
        fs_type: unescape(fields[sep + 1]),
        super_options: fields[sep + 3]
            .split(',')
            .filter(|o| !o.is_empty())
            .map(unescape)
            .collect(),
    })
}

/// Undoes the kernel's octal escaping (`\040` for a space, `\011` tab, `\012`
/// newline, `\134` backslash) in a mountinfo field. A backslash not followed
/// by three octal digits is kept as it is.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    // Mount points are bytes; a non-UTF-8 one is shown lossily rather than
    // dropped, since cgroup mounts never have such names in practice.
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's table (hybrid layout), abridged.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_this_machines_layout() {
        let mounts = parse(HYBRID);
        assert_eq!(mounts.len(), 5);
        let pids = &mounts[2];
        assert_eq!(pids.mount_point, PathBuf::from("/sys/fs/cgroup/pids"));
        assert_eq!(pids.fs_type, "cgroup");
        assert!(pids.has_super_option("pids"));
        assert!(!mounts[3].has_super_option("systemd"));
        assert!(mounts[3].has_super_option("name=systemd"));
        assert_eq!(mounts[4].fs_type, "cgroup2");
        assert_eq!(mounts[4].root, PathBuf::from("/"));
    }

    #[test]
    fn optional_fields_shift_the_separator() {
        let line = "25 1 0:22 / /sys/fs/cgroup rw,nosuid shared:9 master:2 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";
        let m = parse_line(line).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(m.fs_type, "cgroup2");
        assert!(m.has_super_option("nsdelegate"));
    }

    #[test]
    fn combined_v1_controllers() {
        let line = "33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct";
        let m = parse_line(line).unwrap();
        assert!(m.has_super_option("cpuacct"));
        assert!(!m.has_super_option("pids"));
    }

    #[test]
    fn escaped_mount_points() {
        let line = r"50 1 0:40 /a\134b /mnt/my\040cgroups\011x rw - cgroup cgroup rw,pids";
        let m = parse_line(line).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/mnt/my cgroups\tx"));
        assert_eq!(m.root, PathBuf::from(r"/a\b"));
        // Not an escape: kept verbatim, including at the very end.
        assert_eq!(unescape(r"a\9xy\"), r"a\9xy\");
        assert_eq!(unescape(r"\04"), r"\04");
        assert_eq!(unescape(r"\777"), r"\777"); // above 255: not a byte
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for line in [
            "",
            "garbage",
            "1 2 3 4 5 6 7",               // no separator
            "1 2 3 / /x rw - cgroup",      // too few after it
            "1 2 / /x - cgroup cgroup rw", // too few before it
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
        let text = format!("garbage\n{HYBRID}");
        assert_eq!(parse(&text).len(), 5);
    }
}
