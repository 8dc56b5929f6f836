//! One cgroup hierarchy's id → path cache, filled by walking the hierarchy.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{classify, HOST};

/// One hierarchy's id → path table.
#[derive(Debug)]
pub(super) struct Hierarchy {
    pub(super) mount: PathBuf,
    pub(super) root_id: Option<u64>,
    /// id → (path relative to the mount, raw label).
    pub(super) known: HashMap<u64, (Arc<str>, Arc<str>)>,
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

impl Hierarchy {
    pub(super) fn new(mount: PathBuf) -> Self {
        let root_id = fs::metadata(&mount).ok().map(|m| m.ino());
        Self {
            mount,
            root_id,
            known: HashMap::new(),
            dead: HashSet::new(),
            last_walk: None,
            last_walk_took: Duration::ZERO,
        }
    }

    /// Records a cgroup learnt without a walk (a watch event, a task's
    /// `/proc/<pid>/cgroup`).
    pub(super) fn learn(&mut self, id: u64, rel: &str, moat_parent: &str, docker_parent: &str) {
        self.dead.remove(&id);
        self.known.entry(id).or_insert_with(|| {
            let label = classify(rel, moat_parent, docker_parent);
            (Arc::from(rel), Arc::from(label))
        });
    }

    pub(super) fn walk(&mut self, moat_parent: &str, docker_parent: &str) {
        let started = Instant::now();
        if self.known.len() + self.dead.len() > MAX_REMEMBERED_IDS {
            self.known.clear();
            self.dead.clear();
        }
        if let Ok(meta) = fs::metadata(&self.mount) {
            self.root_id = Some(meta.ino());
            self.known
                .entry(meta.ino())
                .or_insert_with(|| (Arc::from("/"), Arc::from(HOST)));
        }
        let mut stack = vec![(self.mount.clone(), String::new())];
        let mut seen = 0usize;
        while let Some((dir, rel)) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                // cgroup directories only; their files are not cgroups.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let child_rel = format!("{rel}/{name}");
                let id = entry.ino();
                seen += 1;
                self.known.entry(id).or_insert_with(|| {
                    let label = classify(&child_rel, moat_parent, docker_parent);
                    (Arc::from(child_rel.as_str()), Arc::from(label))
                });
                stack.push((entry.path(), child_rel));
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
