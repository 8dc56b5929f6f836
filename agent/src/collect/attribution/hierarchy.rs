//! One cgroup hierarchy's id → path cache, filled by walking the hierarchy.
//!
//! A cgroup's path can be longer than `PATH_MAX` (4096 bytes): `mkdir(2)` of
//! one more level only checks the name, not the whole path. The walk therefore
//! opens each directory relative to an ancestor's descriptor, at most
//! [`PATH_CHUNK`] bytes of path at a time, so deep cgroups resolve like any
//! other (a plain `opendir` of the whole path fails with `ENAMETOOLONG`, and
//! their events were attributed to `host`).

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::{fd::OwnedFd, unix::fs::MetadataExt as _},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use nix::{
    dir::{Dir, Type},
    fcntl::{openat, OFlag},
    sys::stat::Mode,
};

use super::{classify, CgroupParents, HOST};

/// One hierarchy's id → path table.
#[derive(Debug)]
pub(super) struct Hierarchy {
    pub(super) mount: PathBuf,
    pub(super) root_id: Option<u64>,
    /// id → (path relative to the mount, raw label).
    pub(super) known: HashMap<u64, (Arc<str>, Arc<str>)>,
    /// Bytes of the paths in `known`.
    known_bytes: usize,
    /// Ids a walk started after their first lookup did not find: dead cgroups.
    pub(super) dead: HashSet<u64>,
    pub(super) last_walk: Option<Instant>,
    /// How long the last walk took: walks on misses are spaced by at least ten
    /// times that, so a big hierarchy cannot be walked back to back.
    pub(super) last_walk_took: Duration,
}

/// Upper bound of remembered ids of either kind, against unbounded growth when
/// cgroups churn; past it, a walk forgets the ids whose directories are gone.
const MAX_REMEMBERED_IDS: usize = 200_000;
/// Upper bound of the bytes of remembered paths (deep cgroups have long ones);
/// past it, likewise.
const MAX_REMEMBERED_BYTES: usize = 64 << 20;
/// The most bytes of path one `openat(2)` is given (below `PATH_MAX`).
pub(super) const PATH_CHUNK: usize = 3072;

impl Hierarchy {
    pub(super) fn new(mount: PathBuf) -> Self {
        let root_id = fs::metadata(&mount).ok().map(|m| m.ino());
        Self {
            mount,
            root_id,
            known: HashMap::new(),
            known_bytes: 0,
            dead: HashSet::new(),
            last_walk: None,
            last_walk_took: Duration::ZERO,
        }
    }

    fn remember(&mut self, id: u64, rel: &str, parents: &CgroupParents) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.known.entry(id) {
            let label = classify(rel, parents);
            self.known_bytes += rel.len();
            slot.insert((Arc::from(rel), Arc::from(label)));
        }
    }

    /// Records a cgroup learnt without a walk (a watch event, a task's
    /// `/proc/<pid>/cgroup`).
    pub(super) fn learn(&mut self, id: u64, rel: &str, parents: &CgroupParents) {
        self.dead.remove(&id);
        self.remember(id, rel, parents);
    }

    /// The inode number (the cgroup id) of the directory `rel` below the
    /// mount, opened in steps so that paths longer than `PATH_MAX` work.
    pub(super) fn inode_of(&self, rel: &str) -> Option<u64> {
        let mount = open_dir_fd(None, self.mount.as_os_str().as_encoded_bytes()).ok()?;
        let dir = open_relative(&mount, rel).ok()?;
        nix::sys::stat::fstat(&dir).ok().map(|st| st.st_ino)
    }

    pub(super) fn walk(&mut self, parents: &CgroupParents) {
        let started = Instant::now();
        if self.known.len() + self.dead.len() > MAX_REMEMBERED_IDS
            || self.known_bytes > MAX_REMEMBERED_BYTES
        {
            self.known.clear();
            self.known_bytes = 0;
            self.dead.clear();
        }
        if let Ok(meta) = fs::metadata(&self.mount) {
            self.root_id = Some(meta.ino());
            self.known
                .entry(meta.ino())
                .or_insert_with(|| (Arc::from("/"), Arc::from(HOST)));
        }
        let Ok(mount) = open_dir_fd(None, self.mount.as_os_str().as_encoded_bytes()) else {
            return;
        };
        // Relative paths still to read; directories are opened when popped, so
        // the walk holds a descriptor or two whatever the depth.
        let mut stack = vec![String::new()];
        let mut seen = 0usize;
        while let Some(rel) = stack.pop() {
            let Ok(fd) = open_relative(&mount, &rel) else {
                continue;
            };
            let Ok(mut dir) = Dir::from_fd(fd) else {
                continue;
            };
            for entry in dir.iter().flatten() {
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                // cgroup directories only; their files are not cgroups
                // (kernfs always reports the type).
                if entry.file_type() != Some(Type::Directory) {
                    continue;
                }
                let Ok(name) = std::str::from_utf8(name) else {
                    continue;
                };
                let child_rel = format!("{rel}/{name}");
                seen += 1;
                self.remember(entry.ino(), &child_rel, parents);
                stack.push(child_rel);
            }
        }
        self.last_walk = Some(started);
        self.last_walk_took = started.elapsed();
        log::debug!(
            "walked {} ({seen} cgroups) in {:?}",
            self.mount.display(),
            started.elapsed()
        );
    }
}

/// Opens the directory `path` (bytes, relative to `at`, or absolute when `at`
/// is `None`).
fn open_dir_fd(at: Option<&OwnedFd>, path: &[u8]) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    match at {
        Some(fd) => openat(fd, path, flags, Mode::empty()),
        None => openat(nix::fcntl::AT_FDCWD, path, flags, Mode::empty()),
    }
}

/// Opens `rel` (`/a/b/...`, or empty for the root itself) below `root`, in
/// steps of at most [`PATH_CHUNK`] bytes.
pub(super) fn open_relative(root: &OwnedFd, rel: &str) -> nix::Result<OwnedFd> {
    let mut current: Option<OwnedFd> = None;
    let mut chunk = String::new();
    let components = rel.split('/').filter(|c| !c.is_empty());
    for component in components {
        if !chunk.is_empty() && chunk.len() + 1 + component.len() > PATH_CHUNK {
            current = Some(open_dir_fd(
                Some(current.as_ref().unwrap_or(root)),
                chunk.as_bytes(),
            )?);
            chunk.clear();
        }
        if !chunk.is_empty() {
            chunk.push('/');
        }
        chunk.push_str(component);
    }
    if chunk.is_empty() {
        chunk.push('.');
    }
    open_dir_fd(Some(current.as_ref().unwrap_or(root)), chunk.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_longer_than_path_max_are_walked() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("v2");
        fs::create_dir(&root).unwrap();
        // /moat/deep/ then 30 levels of 200 characters: about 6 KiB of path.
        let mut rel = String::from("/moat/deep");
        let root_fd = open_dir_fd(None, root.as_os_str().as_encoded_bytes()).unwrap();
        nix::sys::stat::mkdirat(&root_fd, "moat", Mode::from_bits_truncate(0o755)).unwrap();
        nix::sys::stat::mkdirat(&root_fd, "moat/deep", Mode::from_bits_truncate(0o755)).unwrap();
        for i in 0..30 {
            let parent = open_relative(&root_fd, &rel).unwrap();
            let name = format!("{i:02}{}", "x".repeat(198));
            nix::sys::stat::mkdirat(&parent, name.as_str(), Mode::from_bits_truncate(0o755))
                .unwrap();
            rel = format!("{rel}/{name}");
        }
        assert!(root.as_os_str().len() + rel.len() > 4096);
        let deepest = open_relative(&root_fd, &rel).unwrap();
        let id = nix::sys::stat::fstat(&deepest).unwrap().st_ino;

        let mut hierarchy = Hierarchy::new(root.clone());
        hierarchy.walk(&CgroupParents::defaults());
        let (path, label) = hierarchy.known.get(&id).expect("the deepest cgroup walked");
        assert_eq!(&**path, rel.as_str());
        assert_eq!(&**label, "deep");

        // Clean up from the bottom (remove_dir_all cannot reach that deep).
        let mut levels: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        while let Some(last) = levels.pop() {
            let parent = open_relative(&root_fd, &levels.join("/")).unwrap();
            nix::unistd::unlinkat(&parent, last, nix::unistd::UnlinkatFlags::RemoveDir).unwrap();
        }
    }
}
