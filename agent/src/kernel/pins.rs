//! The programs and maps kept across restarts of moatd: pinned under the bpffs
//! directory `MOAT_BPF_DIR` (default `/sys/fs/bpf/moat`), so that the kernel
//! side keeps counting while moatd is stopped or being upgraded.
//!
//! Layout of the directory:
//! - `RECORD_*`: the recording maps `moat` opens (pinned whether or not the
//!   rest is kept);
//! - `agent-<fingerprint>/`: one link pin per attached program (`link-<name>`;
//!   the pin is what keeps it attached) and the maps moatd reads, by name. The
//!   fingerprint (see [`fingerprint`]) covers everything that shapes them, so a
//!   directory whose name matches this moatd's is one it can adopt as is; any
//!   other `agent-*` directory is another layout, removed (which detaches its
//!   programs) before a fresh load.
//!
//! A directory is created as `agent-<fingerprint>-partial` and renamed once
//! every pin is in place, so a moatd killed half-way leaves nothing adoptable.
//! The subdirectory `moatd` is `flock`ed for as long as a moatd uses the
//! pins: two agents never adopt the same programs. (Not the pin directory
//! itself: `moat` locks that one, briefly, while it changes the recording
//! maps.)

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use sha2::{Digest as _, Sha256};

use super::{
    config::KernelConfig,
    error::{Error, Result},
};

/// The prefix of a layout directory's name.
const LAYOUT_PREFIX: &str = "agent-";
/// The suffix of a layout directory not yet complete.
// bpffs refuses names with a dot.
const PARTIAL_SUFFIX: &str = "-partial";
/// The subdirectory moatd locks.
const LOCK_DIR: &str = "moatd";
/// The prefix of a link pin's name, before the program's name.
pub(super) const LINK_PREFIX: &str = "link-";

/// What moatd found in the pin directory when it loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinState {
    /// Programs and maps of the same layout were adopted: nothing was
    /// attached again and every counter continues.
    Reused,
    /// Nothing was pinned: the programs were loaded, attached and pinned.
    Created,
    /// Pins of another layout (another build or other map sizes, ring size,
    /// tracing settings) were removed, then a fresh set loaded and pinned.
    Replaced,
    /// `keep_pinned` is off: the programs detach when moatd exits.
    Unpinned,
}

impl PinState {
    /// The `state` label of `moat_ebpf_pins_info`.
    pub fn as_str(self) -> &'static str {
        match self {
            PinState::Reused => "reused",
            PinState::Created => "created",
            PinState::Replaced => "replaced",
            PinState::Unpinned => "unpinned",
        }
    }
}

/// An exclusive `flock` on the pin directory's `moatd` subdirectory, held
/// while a moatd uses the pins.
#[derive(Debug)]
pub struct PinLock {
    _dir: File,
}

impl PinLock {
    /// Creates `dir/moatd` if needed and locks it; [`Error::PinsInUse`] if
    /// another process holds it.
    pub fn acquire(dir: &Path) -> Result<PinLock> {
        let lock = dir.join(LOCK_DIR);
        let pin_dir = |source| Error::PinDir {
            path: lock.clone(),
            source,
        };
        std::fs::create_dir_all(&lock).map_err(pin_dir)?;
        let file = File::open(&lock).map_err(pin_dir)?;
        // SAFETY: flock(2) on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::PinsInUse {
                    path: dir.to_path_buf(),
                });
            }
            return Err(pin_dir(err));
        }
        Ok(PinLock { _dir: file })
    }
}

/// A hex digest of everything that shapes the pinned programs and maps: the
/// eBPF object, the parameters given to it (`params`, its `Debug` text: the
/// same build renders it the same way), `pid_max`, the map and ring sizes and
/// the tracing settings that choose the programs attached.
pub fn fingerprint(object: &[u8], config: &KernelConfig, params: &str, pid_max: u32) -> String {
    let mut hash = Sha256::new();
    hash.update(object);
    let shape = format!(
        "params={params};pid_max={pid_max};ring={};denials={};processes={};rate={};tier={};mechanism={}",
        config.ring_buffer_bytes,
        config.denial_map_entries,
        config.process_map_entries,
        config.rate_map_entries,
        config.denials.as_str(),
        config.mechanism.as_str(),
    );
    hash.update(shape.as_bytes());
    hash.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The complete layout directory of `fingerprint` under `dir`.
pub(super) fn layout_dir(dir: &Path, fingerprint: &str) -> PathBuf {
    dir.join(format!("{LAYOUT_PREFIX}{fingerprint}"))
}

/// The directory a fresh set is pinned in before [`publish`].
pub(super) fn partial_dir(dir: &Path, fingerprint: &str) -> PathBuf {
    dir.join(format!("{LAYOUT_PREFIX}{fingerprint}{PARTIAL_SUFFIX}"))
}

/// Removes every layout directory under `dir` but the complete one of
/// `fingerprint` (all of them for an empty `fingerprint`); returns whether
/// that one exists and which were removed.
pub(super) fn sweep(dir: &Path, fingerprint: &str) -> Result<(bool, Vec<String>)> {
    let ours = format!("{LAYOUT_PREFIX}{fingerprint}");
    let mut found = false;
    let mut removed = Vec::new();
    for name in layout_dirs(dir)? {
        if name == ours {
            found = true;
        } else {
            remove_layout(&dir.join(&name))?;
            removed.push(name);
        }
    }
    Ok((found, removed))
}

/// Renames the partial directory to its final name: the set is adoptable.
pub(super) fn publish(dir: &Path, fingerprint: &str) -> Result<PathBuf> {
    let done = layout_dir(dir, fingerprint);
    std::fs::rename(partial_dir(dir, fingerprint), &done).map_err(|source| Error::Unpin {
        path: done.clone(),
        source,
    })?;
    Ok(done)
}

/// Removes a layout directory: its link pins (the programs detach once no
/// process holds the links either) and map pins, then the directory.
pub(super) fn remove_layout(path: &Path) -> Result<()> {
    let unpin = |source| Error::Unpin {
        path: path.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(path).map_err(unpin)? {
        let entry = entry.map_err(unpin)?;
        std::fs::remove_file(entry.path()).map_err(unpin)?;
    }
    std::fs::remove_dir(path).map_err(unpin)
}

fn layout_dirs(dir: &Path) -> Result<Vec<String>> {
    let read = |source| Error::PinDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        if let Some(name) = entry.file_name().to_str() {
            if name.starts_with(LAYOUT_PREFIX) && entry.path().is_dir() {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// What [`unload`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unloaded {
    /// Layout directories removed (their programs detached).
    pub layouts: Vec<String>,
    /// Other pins removed (the recording maps).
    pub pins: Vec<String>,
}

/// Detaches and unpins everything moatd left in `dir` (`moatd --unload`):
/// every layout directory, the recording maps, then `dir` itself. Refuses
/// with [`Error::PinsInUse`] while a moatd runs on it.
pub fn unload(dir: &Path) -> Result<Unloaded> {
    if !dir.exists() {
        return Ok(Unloaded::default());
    }
    let lock = PinLock::acquire(dir)?;
    let mut unloaded = Unloaded::default();
    for name in layout_dirs(dir)? {
        remove_layout(&dir.join(&name))?;
        unloaded.layouts.push(name);
    }
    let unpin = |source| Error::Unpin {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(unpin)? {
        let entry = entry.map_err(unpin)?;
        if !entry.path().is_dir() {
            std::fs::remove_file(entry.path()).map_err(unpin)?;
            unloaded
                .pins
                .push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    unloaded.pins.sort();
    drop(lock);
    std::fs::remove_dir(dir.join(LOCK_DIR)).map_err(unpin)?;
    std::fs::remove_dir(dir).map_err(unpin)?;
    Ok(unloaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_changes_with_what_shapes_the_maps() {
        let base = KernelConfig::default();
        let a = fingerprint(b"object", &base, "p", 32768);
        assert_eq!(a.len(), 16);
        assert_eq!(a, fingerprint(b"object", &base, "p", 32768));
        assert_ne!(a, fingerprint(b"object2", &base, "p", 32768));
        assert_ne!(a, fingerprint(b"object", &base, "q", 32768));
        assert_ne!(a, fingerprint(b"object", &base, "p", 65536));
        let bigger = KernelConfig {
            denial_map_entries: base.denial_map_entries * 2,
            ..base.clone()
        };
        assert_ne!(a, fingerprint(b"object", &bigger, "p", 32768));
        // The channel is user space only: the same pins serve.
        let channel = KernelConfig {
            audit_channel_capacity: 7,
            ..base
        };
        assert_eq!(a, fingerprint(b"object", &channel, "p", 32768));
    }
}
