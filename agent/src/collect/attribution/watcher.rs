//! The cgroup watcher: learns workload cgroups the moment they are created.
//!
//! A workload may live for less than a scrape interval, and counters keyed by its
//! cgroup id outlive its directory: an id met after the directory is gone can no
//! longer be resolved. So a thread watches the moat and Docker parent directories
//! with inotify (cgroup file systems report `mkdir` like any other), reads each
//! new directory's id at once, and sends it to the collector, which owns the
//! attribution state. Parents that do not exist yet are watched from when they
//! appear (checked every second).
//!
//! It also watches `pids.events` of each new workload in the pids hierarchy and
//! reports a change (a refused fork), so that a limit hit is read before a
//! short-lived workload's cgroup disappears.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor},
};
use tokio::sync::mpsc::UnboundedSender;

/// A directory whose new children are workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedDir {
    /// Whether it is in the pids hierarchy (rather than the v2 one).
    pub pids: bool,
    /// Its absolute path.
    pub dir: PathBuf,
    /// Its path relative to the hierarchy's root, e.g. `/moat`.
    pub rel: String,
    /// Whether its new children are watched in turn, for one level:
    /// `moat.slice`'s scopes hold the workload's own cgroup.
    pub nested: bool,
}

/// What the watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A cgroup was created.
    Created {
        /// In the pids hierarchy (rather than the v2 one).
        pids: bool,
        /// Its path relative to the hierarchy's root.
        rel: String,
        /// Its id (the directory's inode number).
        id: u64,
    },
    /// A workload's `pids.events` changed: a fork was refused.
    PidsChanged,
}

/// How long the thread waits for events before checking whether to stop.
const WAIT_MS: u16 = 200;
/// How often parents that do not exist yet are looked for.
const RETRY: Duration = Duration::from_secs(1);

/// The watcher thread; stopped on drop.
#[derive(Debug)]
pub struct CgroupWatcher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl CgroupWatcher {
    /// Starts watching `dirs`, sending what it sees to `events`; with
    /// `watch_pids`, also each new cgroup's `pids.events`.
    pub fn spawn(
        dirs: Vec<WatchedDir>,
        watch_pids: bool,
        events: UnboundedSender<WatchEvent>,
    ) -> std::io::Result<CgroupWatcher> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let handle = std::thread::Builder::new()
            .name("moat-cgroup-watch".to_owned())
            .spawn(move || {
                Loop {
                    inotify,
                    dirs,
                    watch_pids,
                    events,
                    watches: HashMap::new(),
                    pids_files: HashSet::new(),
                }
                .run(&stop_thread)
            })?;
        Ok(CgroupWatcher {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it (within [`WAIT_MS`]).
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                log::warn!("the cgroup watcher thread panicked");
            }
        }
    }
}

impl Drop for CgroupWatcher {
    fn drop(&mut self) {
        self.stop_now();
    }
}

struct Loop {
    inotify: Inotify,
    dirs: Vec<WatchedDir>,
    watch_pids: bool,
    events: UnboundedSender<WatchEvent>,
    /// Watched parent directories, by watch descriptor.
    watches: HashMap<WatchDescriptor, WatchedDir>,
    /// Watch descriptors of `pids.events` files.
    pids_files: HashSet<WatchDescriptor>,
}

impl Loop {
    fn run(mut self, stop: &AtomicBool) {
        let mut last_try: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            if last_try.is_none_or(|t| t.elapsed() >= RETRY) {
                last_try = Some(Instant::now());
                self.watch_parents();
            }
            let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            if !matches!(poll(&mut fds, PollTimeout::from(WAIT_MS)), Ok(n) if n > 0) {
                continue;
            }
            let Ok(events) = self.inotify.read_events() else {
                continue;
            };
            if !self.handle(events) {
                return; // the collector is gone
            }
        }
    }

    fn watch_parents(&mut self) {
        for watched in &self.dirs {
            if self.watches.values().any(|w| w.dir == watched.dir) {
                continue;
            }
            let mask = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ONLYDIR;
            if let Ok(wd) = self.inotify.add_watch(&watched.dir, mask) {
                log::debug!("watching {} for new cgroups", watched.dir.display());
                self.watches.insert(wd, watched.clone());
            }
        }
    }

    /// Reports the new cgroup `dir` and watches its `pids.events`; false
    /// when the receiver is gone.
    fn created(&mut self, dir: &WatchedDir) -> bool {
        if let Ok(meta) = fs::metadata(&dir.dir) {
            let created = WatchEvent::Created {
                pids: dir.pids,
                rel: dir.rel.clone(),
                id: meta.ino(),
            };
            if self.events.send(created).is_err() {
                return false;
            }
        }
        let pids_events = dir.dir.join("pids.events");
        if self.watch_pids && pids_events.exists() {
            // Removed with the cgroup, which drops the watch (IN_IGNORED).
            if let Ok(wd) = self
                .inotify
                .add_watch(&pids_events, AddWatchFlags::IN_MODIFY)
            {
                self.pids_files.insert(wd);
            }
        }
        true
    }

    /// Returns false when the receiver is gone.
    fn handle(&mut self, events: Vec<nix::sys::inotify::InotifyEvent>) -> bool {
        let mut pids_changed = false;
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                self.watches.remove(&event.wd);
                self.pids_files.remove(&event.wd);
                continue;
            }
            if event.mask.contains(AddWatchFlags::IN_MODIFY) && self.pids_files.contains(&event.wd)
            {
                pids_changed = true;
                continue;
            }
            if !event
                .mask
                .contains(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ISDIR)
            {
                continue;
            }
            let Some(name) = event.name.as_ref().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(parent) = self.watches.get(&event.wd) else {
                continue;
            };
            let path = parent.dir.join(name);
            let child = WatchedDir {
                pids: parent.pids,
                dir: path,
                rel: format!("{}/{name}", parent.rel),
                nested: false,
            };
            let nested = parent.nested;
            if !self.created(&child) {
                return false;
            }
            if nested {
                // Watched before its children are listed, so that none
                // made in between is missed.
                let mask = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ONLYDIR;
                if let Ok(wd) = self.inotify.add_watch(&child.dir, mask) {
                    self.watches.insert(wd, child.clone());
                }
                let existing = fs::read_dir(&child.dir).into_iter().flatten().flatten();
                for entry in existing.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                    let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                        continue;
                    };
                    let grandchild = WatchedDir {
                        pids: child.pids,
                        dir: entry.path(),
                        rel: format!("{}/{name}", child.rel),
                        nested: false,
                    };
                    if !self.created(&grandchild) {
                        return false;
                    }
                }
            }
        }
        !pids_changed || self.events.send(WatchEvent::PidsChanged).is_ok()
    }
}
