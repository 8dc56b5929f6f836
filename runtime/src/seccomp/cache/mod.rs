//! A cache of compiled filters, so that a launch does not pay libseccomp's
//! compile (about 4.5 ms for the default profile here) again for a filter
//! it compiled before.
//!
//! Entries are named by the digest of a [`Key`] that holds everything that
//! decides the program (the resolved profile, capabilities, host, compiler
//! options and install flags, kernel, libseccomp, moat's own build), so an
//! entry can only ever be found for the input it was compiled from. They
//! live in a directory trusted as the state directory is (default
//! `<state dir>/cache/seccomp`, i.e. `/run/moat/cache/seccomp`, which a
//! reboot empties, as a new kernel would make it useless anyway), and are
//! verified before use ([`entry`]): an entry that is truncated, damaged,
//! another key's, or holds a program the kernel would refuse is compiled
//! again and replaced, never loaded.
//!
//! The cache only ever saves time: a directory that cannot be used (not
//! trusted, not writable) is skipped with a warning and the filter is
//! compiled as without it; a launch never fails because of the cache.

mod dir;
mod entry;
mod key;

use std::path::{Path, PathBuf};

pub use dir::{file_name, is_entry, is_temporary, CacheDir, MAX_ENTRIES};
pub use entry::{decode, encode, Entry, HEADER_SIZE, MAX_ENTRY_SIZE};
pub use key::Key;

use super::arch::Host;
use super::compile::{self, Options};
use super::resolve::Resolved;
use super::CompileError;
use crate::caps::CapSet;

/// The cache under the state directory `state_dir`.
pub fn default_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cache").join("seccomp")
}

/// Why the cache, or one of its entries, was not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The directory or an entry could have been written by someone else
    /// than root, or is not what moat writes.
    #[error("{}: {reason}", path.display())]
    Untrusted {
        /// The file or directory.
        path: PathBuf,
        /// Why it is not trusted.
        reason: String,
    },
    /// An entry is not a whole, undamaged entry for its key.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The entry.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file system operation failed.
    #[error("{}: {op} failed: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// The error.
        error: std::io::Error,
    },
}

/// Where a filter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A verified cache entry.
    Cache,
    /// Compiled now (and stored, if the cache could be used).
    Compiled,
}

/// The filter of `resolved` (resolved for `host` and `caps`) compiled with
/// `options`, with `install_flags` added to the profile's flags: from the
/// cache in `cache_dir` when it holds a valid entry for exactly this input,
/// else compiled and stored there. `None` compiles without a cache.
pub fn compile_cached(
    resolved: &Resolved,
    caps: &CapSet,
    host: &Host,
    options: Options,
    install_flags: u32,
    cache_dir: Option<&Path>,
) -> Result<(Entry, Origin), CompileError> {
    let cache = cache_dir.and_then(|path| match CacheDir::open(path) {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn!("seccomp cache not used ({e}); compiling the filter without it");
            None
        }
    });
    let key = cache.as_ref().and_then(|_| {
        Key::new(resolved, caps, host, options, install_flags)
            .map_err(|why| log::warn!("seccomp cache not used: {why}"))
            .ok()
    });
    let digest = key.as_ref().map(Key::digest);
    if let (Some(cache), Some(digest)) = (&cache, &digest) {
        match cache.read(digest) {
            Ok(Some(entry)) => {
                log::debug!("seccomp filter from the cache: {}", file_name(digest));
                return Ok((entry, Origin::Cache));
            }
            Ok(None) => {}
            Err(e) => log::warn!("seccomp cache entry not used ({e}); compiling it again"),
        }
    }
    let compiled = compile::compile(resolved, options)?;
    for w in &compiled.warnings {
        log::debug!("seccomp: {w}");
    }
    let entry = Entry {
        program: compiled.program,
        flags: compiled.flags | install_flags,
    };
    if let (Some(cache), Some(digest)) = (&cache, &digest) {
        if let Err(e) = cache.write(digest, &entry) {
            log::warn!("could not store the compiled seccomp filter in the cache: {e}");
        }
    }
    Ok((entry, Origin::Compiled))
}

#[cfg(test)]
mod tests;
