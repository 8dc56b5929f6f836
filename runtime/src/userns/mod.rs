//! User namespaces: what `--userns` asks for and which host ids a workload
//! is given.
//!
//! [`spec`] parses the `--userns` value and renders `/proc/PID/uid_map`
//! text, [`subid`] reads `/etc/subuid`-style files, and [`alloc`] picks a
//! free range for `--userns auto` among the ranges delegated to user
//! [`AUTO_USER`]. This module holds what they share: the applied mapping
//! ([`UserNamespace`]) and the error type.

pub mod alloc;
pub mod overlap;
pub mod spec;
pub mod subid;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use alloc::{allocate, AUTO_SIZE, AUTO_USER};
pub use overlap::Holder;
pub use spec::{render_map, validate_maps, IdMap, UsernsSpec, MAX_MAP_ENTRIES};
pub use subid::{read_subid, SubIdRange};

/// The mapping actually applied to a workload (uid and gid maps; for
/// explicit MAPs both are the same list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    /// Lines of `/proc/PID/uid_map`.
    pub uid_map: Vec<IdMap>,
    /// Lines of `/proc/PID/gid_map`.
    pub gid_map: Vec<IdMap>,
}

impl UserNamespace {
    /// The namespace for explicit `--userns MAP[,MAP...]`: the same list
    /// maps uids and gids.
    pub fn from_maps(maps: Vec<IdMap>) -> UserNamespace {
        UserNamespace {
            gid_map: maps.clone(),
            uid_map: maps,
        }
    }
}

/// A `--userns` value, a subordinate-id file or an allocation is wrong.
/// Every variant renders as one line naming what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// A `--userns` value could not be parsed or is not a valid mapping.
    #[error(
        "invalid --userns value: {piece:?}: {reason} \
         (expected \"host\", \"auto\" or CONTAINER:HOST:SIZE[,CONTAINER:HOST:SIZE...], \
         e.g. 0:100000:65536)"
    )]
    Spec {
        /// The offending part of the value (one mapping, or the whole value).
        piece: String,
        /// Why it is refused.
        reason: String,
    },
    /// A subordinate-id file could not be read.
    #[error("{}: cannot read: {error}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// The ids asked for would be shared with a running workload in a way
    /// that is not allowed (see [`overlap`]).
    #[error(
        "{asked} would share host ids with running workload {workload:?} ({held}): {detail}; \
         {advice} (a workload can signal and own the processes and files of another that \
         shares its host ids)"
    )]
    Overlap {
        /// The request, as the flag was given (`--userns MAP`, `--user U:G`).
        asked: String,
        /// The running workload.
        workload: String,
        /// How it holds its ids (`--userns auto, 0:100000:65536`).
        held: String,
        /// Which ids are shared.
        detail: String,
        /// What to do instead.
        advice: String,
    },
    /// A subordinate-id file is not a regular file, is too large, or
    /// someone other than root could have written it.
    #[error("{}: refusing to read it: {reason}", file.display())]
    Untrusted {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// A line of a subordinate-id file is malformed.
    #[error("{}:{line}: {field}: {reason} (expected NAME_OR_UID:START:COUNT)", file.display())]
    SubIdLine {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field at fault: `line`, `name`, `start` or `count`.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The user has no subordinate ids in the file, so `--userns auto` has
    /// nothing to allocate from.
    #[error(
        "{}: user {user:?} has no subordinate ids, so --userns auto has nothing to allocate from; \
         add the line {line_to_add:?} to {}",
        file.display(),
        file.display()
    )]
    NoSubIds {
        /// The file without entries (it may also not exist).
        file: PathBuf,
        /// The user looked up ([`AUTO_USER`]).
        user: String,
        /// A line that would fix it, chosen not to overlap the file's other
        /// ranges, e.g. `moat:100000:6553600`.
        line_to_add: String,
    },
    /// The user has subordinate ids, but no run of [`AUTO_SIZE`]
    /// consecutive ones to give a workload.
    #[error(
        "{}: the subordinate ids of user {user:?} hold at most {largest} consecutive ids; \
         --userns auto needs {AUTO_SIZE} per workload",
        file.display()
    )]
    RangesTooSmall {
        /// The file.
        file: PathBuf,
        /// The user looked up ([`AUTO_USER`]).
        user: String,
        /// The longest run of consecutive ids found.
        largest: u64,
    },
    /// Every slot in the user's subordinate ids is taken by a running
    /// workload.
    #[error(
        "{}: all {capacity} ranges of {AUTO_SIZE} ids delegated to user {AUTO_USER:?} are in use \
         ({in_use} running workloads hold host ids); stop one, or give {AUTO_USER:?} \
         more ids in {}",
        file.display(),
        file.display()
    )]
    Exhausted {
        /// The file whose ranges are exhausted (subuid or subgid).
        file: PathBuf,
        /// Running workloads that hold a user namespace.
        in_use: usize,
        /// How many [`AUTO_SIZE`]-wide slots the file's ranges hold.
        capacity: usize,
    },
}

/// Temporary files for the unit tests of this module.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// A directory under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        /// A new empty directory, unique per process and call.
        pub fn new(tag: &str) -> TempDir {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("moat-userns-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("create temp dir");
            TempDir(p)
        }

        /// The directory.
        pub fn path(&self) -> &Path {
            &self.0
        }

        /// Writes `contents` to `name` inside the directory.
        pub fn file(&self, name: &str, contents: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, contents).expect("write temp file");
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
