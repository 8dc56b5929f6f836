//! Attribution: which workload a cgroup id, or a process, belongs to.
//!
//! The kernel side keys everything by the task's cgroup v2 id
//! (`bpf_get_current_cgroup_id()`), which is the inode number of the cgroup's
//! directory in the v2 hierarchy. [`Attributor`] resolves ids to paths by walking
//! that hierarchy (reading each directory's inode number), caches the result, and
//! walks again when it meets an id it does not know. A path then maps to a label:
//!
//! | path (relative to the hierarchy root), first match wins  | label                  |
//! | --- | --- |
//! | a component `docker-<64 hex>.scope` (systemd driver)      | `docker:<first 12 hex>`|
//! | components `<docker parent>/<64 hex>` (cgroupfs driver)   | `docker:<first 12 hex>`|
//! | `/<moat parent>/<name>[/...]`                             | `<name>`               |
//! | deepest component ending in `.service` or `.scope`        | that component         |
//! | anything else, the root, an id that no longer resolves    | `host`                 |
//!
//! ## Hybrid hosts
//!
//! On a hybrid host Docker's cgroupfs driver places containers only in v1 cgroups,
//! so their tasks have the v2 *root* cgroup id and aggregated counters keyed by it
//! cannot tell them from the host. Two ways out are supported:
//!
//! - an event that carries a pid (audit records) is attributed from the v1 lines
//!   of `/proc/<pid>/cgroup` when its v2 cgroup is the root
//!   ([`Attributor::attribute_task`]);
//! - a kernel-side key may name the task's v1 *pids* cgroup instead of its v2
//!   cgroup: such ids carry [`V1_PIDS_ID_FLAG`] and are resolved by walking the
//!   pids hierarchy (its cgroup ids are its directories' inode numbers too).
//!
//! ## Label cap
//!
//! Distinct label values are capped ([`LabelCap`]): past the cap new workloads are
//! labelled `other` and each is counted once in
//! `moat_workload_label_overflow_total`. A label, once given, is kept for the
//! agent's lifetime, so a counter never moves from one label to another.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::config::WorkloadsConfig;

/// Set in a kernel-side cgroup key that names a cgroup of the v1 pids hierarchy
/// (its id, the directory's inode number, in the other bits) rather than a v2 one.
///
/// The programs key a task this way when its v2 cgroup is the v2 root and pids is
/// on v1 (see `Params::v1_pids_rekey` in `moat-common`). The kernel's id is the
/// pids cgroup's kernfs node id (`cgroup->kn->id`), which on 64-bit kernels is
/// the inode number of the cgroup's directory, the id this module's walk of the
/// pids hierarchy records (checked by the `moatd_docker` and
/// `moatd_attribution` tests).
pub use moat_common::V1_PIDS_ID_FLAG;

/// Label of everything that is not a recognised workload.
pub const HOST: &str = "host";
/// Label of workloads beyond the label cap.
pub const OTHER: &str = "other";

/// Where the hierarchies attribution reads are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    /// The unified (v2) hierarchy.
    pub v2_mount: PathBuf,
    /// The hierarchy the pids controller is on (the v2 mount when pids is on v2),
    /// if any.
    pub pids_mount: Option<PathBuf>,
}

impl CgroupLayout {
    /// Finds the layout from the mount table, preferring mounts under `cgroup_root`.
    /// Without a pids controller, `pids_mount` is `None`; without a v2 mount, the
    /// conventional path is assumed (`<root>/unified` if it exists, else `<root>`).
    pub fn detect(cgroup_root: &Path) -> CgroupLayout {
        let cfg = moat_runtime::cgroup::CgroupConfig {
            mount_root: cgroup_root.to_owned(),
            ..Default::default()
        };
        match moat_runtime::cgroup::detect(&cfg) {
            Ok(layout) => CgroupLayout {
                v2_mount: layout.v2_mount.clone(),
                pids_mount: Some(layout.pids.mount().to_owned()),
            },
            Err(err) => {
                log::warn!("cgroup layout: {err}; pids cgroups will not be read");
                let unified = cgroup_root.join("unified");
                let v2_mount = if unified.join("cgroup.controllers").exists() {
                    unified
                } else {
                    cgroup_root.to_owned()
                };
                CgroupLayout {
                    v2_mount,
                    pids_mount: None,
                }
            }
        }
    }
}

/// What an id or a task was attributed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// The workload label, after the cap (`host`, `other`, a name, `docker:...`).
    pub workload: Arc<str>,
    /// The cgroup path relative to its hierarchy's root, when known.
    pub cgroup_path: Option<Arc<str>>,
}

/// The label of a cgroup path relative to its hierarchy's root (`/`-separated,
/// starting with `/`), before the cap.
pub fn classify(path: &str, moat_parent: &str, docker_parent: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // Container ids first: they are the most specific.
    let docker: Vec<&str> = docker_parent.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if let Some(id) = part
            .strip_prefix("docker-")
            .and_then(|rest| rest.strip_suffix(".scope"))
            .filter(|id| is_container_id(id))
        {
            return docker_label(id);
        }
        if is_container_id(part) && i >= docker.len() && parts[i - docker.len()..i] == docker[..] {
            return docker_label(part);
        }
    }
    let parent: Vec<&str> = moat_parent.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() > parent.len() && parts[..parent.len()] == parent[..] {
        return parts[parent.len()].to_owned();
    }
    if let Some(unit) = parts
        .iter()
        .rev()
        .find(|p| p.ends_with(".service") || p.ends_with(".scope"))
    {
        return (*unit).to_owned();
    }
    HOST.to_owned()
}

/// Whether `text` is a full Docker container id (64 hex digits).
pub(crate) fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn docker_label(id: &str) -> String {
    format!("docker:{}", &id[..12])
}

/// Caps the number of distinct workload labels.
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    assigned: HashMap<String, Arc<str>>,
    refused: HashSet<String>,
    overflow_total: u64,
    host: Arc<str>,
    other: Arc<str>,
}

/// How many refused names are remembered to count each once; past it every
/// refusal of an unremembered name counts.
const MAX_REMEMBERED_REFUSALS: usize = 100_000;

impl LabelCap {
    /// At most `max` labels besides `host` and `other`.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            assigned: HashMap::new(),
            refused: HashSet::new(),
            overflow_total: 0,
            host: Arc::from(HOST),
            other: Arc::from(OTHER),
        }
    }

    /// The label to use for `raw`: itself if it has or can get a slot, else `other`.
    pub fn admit(&mut self, raw: &str) -> Arc<str> {
        if raw == HOST {
            return self.host.clone();
        }
        if raw == OTHER {
            return self.other.clone();
        }
        if let Some(label) = self.assigned.get(raw) {
            return label.clone();
        }
        if self.assigned.len() < self.max {
            let label: Arc<str> = Arc::from(raw);
            self.assigned.insert(raw.to_owned(), label.clone());
            return label;
        }
        if !self.refused.contains(raw) {
            self.overflow_total += 1;
            if self.refused.len() < MAX_REMEMBERED_REFUSALS {
                self.refused.insert(raw.to_owned());
            }
            log::debug!("workload label cap reached: {raw:?} is labelled {OTHER:?}");
        }
        self.other.clone()
    }

    /// Distinct workloads that were labelled `other`.
    pub fn overflow_total(&self) -> u64 {
        self.overflow_total
    }

    /// Labels given so far, besides `host` and `other`.
    pub fn assigned(&self) -> usize {
        self.assigned.len()
    }
}

/// One hierarchy's id → path table.
#[derive(Debug)]
struct Hierarchy {
    mount: PathBuf,
    root_id: Option<u64>,
    /// id → (path relative to the mount, raw label).
    known: HashMap<u64, (Arc<str>, Arc<str>)>,
    /// Ids a walk started after their first lookup did not find: dead cgroups.
    dead: HashSet<u64>,
    last_walk: Option<Instant>,
    /// How long the last walk took: walks on misses are spaced by at least ten
    /// times that, so a big hierarchy cannot be walked back to back.
    last_walk_took: Duration,
}

/// Upper bound of remembered ids of either kind, against unbounded growth when
/// cgroups churn; past it, a walk forgets the ids whose directories are gone.
const MAX_REMEMBERED_IDS: usize = 200_000;

impl Hierarchy {
    fn new(mount: PathBuf) -> Self {
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
    fn learn(&mut self, id: u64, rel: &str, moat_parent: &str, docker_parent: &str) {
        self.dead.remove(&id);
        self.known.entry(id).or_insert_with(|| {
            let label = classify(rel, moat_parent, docker_parent);
            (Arc::from(rel), Arc::from(label))
        });
    }

    fn walk(&mut self, moat_parent: &str, docker_parent: &str) {
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

/// Resolves cgroup ids and tasks to workloads. See the module documentation.
#[derive(Debug)]
pub struct Attributor {
    moat_parent: String,
    docker_parent: String,
    v2: Hierarchy,
    pids: Option<Hierarchy>,
    min_rewalk: Duration,
    labels: LabelCap,
    proc_root: PathBuf,
}

impl Attributor {
    /// An attributor for `layout`, with the parents and cap of `config`.
    pub fn new(layout: &CgroupLayout, config: &WorkloadsConfig) -> Self {
        Self {
            moat_parent: config.moat_parent.clone(),
            docker_parent: config.docker_parent.clone(),
            v2: Hierarchy::new(layout.v2_mount.clone()),
            pids: layout.pids_mount.clone().map(Hierarchy::new),
            min_rewalk: Duration::from_millis(20),
            labels: LabelCap::new(config.max_labels),
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// Reads processes from `proc_root` instead of `/proc` (for tests).
    pub fn with_proc_root(mut self, proc_root: PathBuf) -> Self {
        self.proc_root = proc_root;
        self
    }

    /// Lets a miss walk again at most every `interval` (default 20 ms, more for
    /// hierarchies that take long to walk; zero walks on every miss).
    pub fn with_min_rewalk(mut self, interval: Duration) -> Self {
        self.min_rewalk = interval;
        self
    }

    /// The v2 root cgroup's id, if its mount could be read.
    pub fn v2_root_id(&self) -> Option<u64> {
        self.v2.root_id
    }

    /// Walks every hierarchy now, so later lookups are hits.
    pub fn refresh(&mut self) {
        self.v2.walk(&self.moat_parent, &self.docker_parent);
        if let Some(pids) = &mut self.pids {
            pids.walk(&self.moat_parent, &self.docker_parent);
        }
    }

    /// The path (relative to its hierarchy's root) and raw label of a cgroup id,
    /// walking the hierarchy again on a miss; `None` for a dead or unknown id.
    fn resolve(&mut self, id: u64) -> Option<(Arc<str>, Arc<str>)> {
        let min_rewalk = self.min_rewalk;
        let (hierarchy, key) = if id & V1_PIDS_ID_FLAG != 0 {
            (self.pids.as_mut()?, id & !V1_PIDS_ID_FLAG)
        } else {
            (&mut self.v2, id)
        };
        if let Some(hit) = hierarchy.known.get(&key) {
            return Some(hit.clone());
        }
        if hierarchy.dead.contains(&key) {
            return None;
        }
        let looked_up = Instant::now();
        let spacing = if min_rewalk.is_zero() {
            Duration::ZERO
        } else {
            min_rewalk.max(hierarchy.last_walk_took * 10)
        };
        let may_walk = hierarchy
            .last_walk
            .is_none_or(|last| last.elapsed() >= spacing);
        if !may_walk {
            return None;
        }
        hierarchy.walk(&self.moat_parent, &self.docker_parent);
        if let Some(hit) = hierarchy.known.get(&key) {
            return Some(hit.clone());
        }
        // The walk started after the lookup, so the id's directory is gone (or
        // never was in this hierarchy): it will not resolve later either.
        if hierarchy.last_walk.is_some_and(|walk| walk >= looked_up) {
            hierarchy.dead.insert(key);
        }
        None
    }

    /// Attributes an aggregated counter keyed by a cgroup id.
    pub fn attribute_id(&mut self, id: u64) -> Attribution {
        match self.resolve(id) {
            Some((path, raw)) => Attribution {
                workload: self.labels.admit(&raw),
                cgroup_path: Some(path),
            },
            None => Attribution {
                workload: self.labels.admit(HOST),
                cgroup_path: None,
            },
        }
    }

    /// Attributes an event of task `pid` whose v2 cgroup id is `id`.
    ///
    /// When the id is the v2 root (a task placed only in v1 cgroups, as Docker's
    /// cgroupfs driver does on hybrid hosts) or does not resolve, the v1 lines of
    /// `/proc/<pid>/cgroup` are used, pids first. Best effort: a task that has
    /// already exited is attributed by its id alone.
    pub fn attribute_task(&mut self, pid: u32, id: u64) -> Attribution {
        let by_id = self.attribute_id(id);
        let ambiguous = by_id.cgroup_path.is_none() || Some(id) == self.v2.root_id;
        if !ambiguous || pid == 0 {
            return by_id;
        }
        let file = self.proc_root.join(pid.to_string()).join("cgroup");
        let Ok(text) = fs::read_to_string(file) else {
            return by_id;
        };
        // A cgroup too new for the last walk: the task's v2 line names it.
        if by_id.cgroup_path.is_none() {
            if let Some(rel) = text.lines().find_map(|l| l.strip_prefix("0::")) {
                let dir = self.v2.mount.join(rel.trim_start_matches('/'));
                if fs::metadata(dir).is_ok_and(|m| m.ino() == id) {
                    self.v2
                        .learn(id, rel, &self.moat_parent, &self.docker_parent);
                    return self.attribute_id(id);
                }
            }
        }
        match classify_proc_cgroup(&text, &self.moat_parent, &self.docker_parent) {
            Some((raw, path)) => Attribution {
                workload: self.labels.admit(&raw),
                cgroup_path: Some(Arc::from(path.as_str())),
            },
            None => by_id,
        }
    }

    /// Records that the directory `rel` (relative to the hierarchy's root) of the
    /// v2 hierarchy, or of the pids one with `pids`, has inode `id`.
    pub fn learn(&mut self, pids: bool, rel: &str, id: u64) {
        let hierarchy = if pids {
            match self.pids.as_mut() {
                Some(h) => h,
                None => return,
            }
        } else {
            &mut self.v2
        };
        hierarchy.learn(id, rel, &self.moat_parent, &self.docker_parent);
    }

    /// The directories whose new children are workloads: the moat and Docker
    /// parents in each hierarchy, with whether they are in the pids one, and their
    /// path relative to the hierarchy's root.
    fn watched_dirs(&self) -> Vec<(bool, PathBuf, String)> {
        let mut dirs = Vec::new();
        let hierarchies = std::iter::once((false, &self.v2.mount))
            .chain(self.pids.iter().map(|h| (true, &h.mount)))
            .filter(|(pids, mount)| !*pids || **mount != self.v2.mount);
        for (pids, mount) in hierarchies {
            for parent in [&self.moat_parent, &self.docker_parent] {
                dirs.push((pids, mount.join(parent), format!("/{parent}")));
            }
        }
        dirs
    }

    /// Gives a raw label (from [`classify`]) its capped label.
    pub fn admit(&mut self, raw: &str) -> Arc<str> {
        self.labels.admit(raw)
    }

    /// Distinct workloads that were labelled `other`.
    pub fn label_overflow_total(&self) -> u64 {
        self.labels.overflow_total()
    }

    /// The moat parent cgroup (relative).
    pub fn moat_parent(&self) -> &str {
        &self.moat_parent
    }

    /// The Docker cgroupfs parent (relative).
    pub fn docker_parent(&self) -> &str {
        &self.docker_parent
    }
}

/// Learns the workloads' cgroups the moment they are created.
///
/// A workload may live for less than a scrape interval, and counters keyed by its
/// cgroup id outlive its directory: an id met after the directory is gone can no
/// longer be resolved. So a thread watches the moat and Docker parent directories
/// with inotify (cgroup file systems report `mkdir` like any other) and records
/// each new directory's id at once. Parents that do not exist yet are watched from
/// when they appear (checked every second). Stops when `stop` is set.
///
/// It also watches `pids.events` of each new workload in the pids hierarchy and
/// notifies `pids_changed` when the kernel reports a change (a refused fork), so
/// that a limit hit is read before a short-lived workload's cgroup disappears.
pub fn spawn_watcher(
    attributor: Arc<std::sync::Mutex<Attributor>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    pids_changed: Option<Arc<tokio::sync::Notify>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // SAFETY: plain syscall; the fd is owned below.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let dirs = attributor
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .watched_dirs();
    std::thread::Builder::new()
        .name("moat-cgroup-watch".to_owned())
        .spawn(move || watch_loop(&fd, &attributor, dirs, &stop, pids_changed.as_deref()))
}

/// Adds an inotify watch; returns the watch descriptor.
fn add_watch(fd: i32, path: &Path, mask: u32) -> Option<i32> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: valid fd and NUL-terminated path.
    let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) };
    (wd >= 0).then_some(wd)
}

fn watch_loop(
    fd: &std::os::fd::OwnedFd,
    attributor: &std::sync::Mutex<Attributor>,
    dirs: Vec<(bool, PathBuf, String)>,
    stop: &std::sync::atomic::AtomicBool,
    pids_changed: Option<&tokio::sync::Notify>,
) {
    use std::os::fd::AsRawFd as _;
    let raw = fd.as_raw_fd();
    // watch descriptor → (pids hierarchy?, absolute dir, relative dir)
    let mut watches: HashMap<i32, (bool, PathBuf, String)> = HashMap::new();
    // watch descriptors of `pids.events` files
    let mut pids_files: HashSet<i32> = HashSet::new();
    let mut last_try: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if last_try.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_try = Some(Instant::now());
            for (pids, dir, rel) in &dirs {
                if watches.values().any(|(_, d, _)| d == dir) {
                    continue;
                }
                if let Some(wd) = add_watch(raw, dir, libc::IN_CREATE | libc::IN_ONLYDIR) {
                    log::debug!("watching {} for new cgroups", dir.display());
                    watches.insert(wd, (*pids, dir.clone(), rel.clone()));
                }
            }
        }
        let mut pollfd = libc::pollfd {
            fd: raw,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pollfd, 1, 200) };
        if ready <= 0 {
            continue;
        }
        // SAFETY: reads into a buffer we own, of the given length.
        let len = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(len) = usize::try_from(len) else {
            continue;
        };
        let mut offset = 0;
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut learnt = Vec::new();
        let mut pids_event = false;
        while offset + header <= len {
            // SAFETY: the kernel wrote a whole event header at `offset`.
            let event: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[offset..].as_ptr().cast()) };
            let name_len = event.len as usize;
            let name_bytes = &buf[offset + header..(offset + header + name_len).min(len)];
            offset += header + name_len;
            if event.mask & libc::IN_IGNORED != 0 {
                watches.remove(&event.wd);
                pids_files.remove(&event.wd);
                continue;
            }
            if event.mask & libc::IN_MODIFY != 0 && pids_files.contains(&event.wd) {
                pids_event = true;
                continue;
            }
            if event.mask & libc::IN_CREATE == 0 || event.mask & libc::IN_ISDIR == 0 {
                continue;
            }
            let name_end = name_bytes
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(name_bytes.len());
            let Ok(name) = std::str::from_utf8(&name_bytes[..name_end]) else {
                continue;
            };
            let Some((pids, dir, rel)) = watches.get(&event.wd) else {
                continue;
            };
            let path = dir.join(name);
            if let Ok(meta) = fs::metadata(&path) {
                learnt.push((*pids, format!("{rel}/{name}"), meta.ino()));
            }
            if pids_changed.is_some() && path.join("pids.events").exists() {
                // Removed with the cgroup, which drops the watch (IN_IGNORED).
                if let Some(wd) = add_watch(raw, &path.join("pids.events"), libc::IN_MODIFY) {
                    pids_files.insert(wd);
                }
            }
        }
        if pids_event {
            if let Some(notify) = pids_changed {
                notify.notify_one();
            }
        }
        if !learnt.is_empty() {
            let mut attributor = attributor.lock().unwrap_or_else(|p| p.into_inner());
            for (pids, rel, id) in learnt {
                log::debug!("new cgroup {rel} (id {id})");
                attributor.learn(pids, &rel, id);
            }
        }
    }
}

/// The workload named by the v1 lines of a `/proc/<pid>/cgroup` text (`pids` first,
/// then `name=systemd`, then the others): the raw label and the v1 path.
pub fn classify_proc_cgroup(
    text: &str,
    moat_parent: &str,
    docker_parent: &str,
) -> Option<(String, String)> {
    let mut lines: Vec<(u8, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let _hierarchy = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?;
            let rank = match controllers {
                "" => return None, // the v2 line: already known by id
                c if c.split(',').any(|c| c == "pids") => 0,
                "name=systemd" => 1,
                _ => 2,
            };
            Some((rank, path))
        })
        .collect();
    lines.sort_by_key(|(rank, _)| *rank);
    lines.into_iter().find_map(|(_, path)| {
        let raw = classify(path, moat_parent, docker_parent);
        (raw != HOST).then(|| (raw, path.to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn label(path: &str) -> String {
        classify(path, "moat", "docker")
    }

    #[test]
    fn classifies_paths() {
        assert_eq!(label("/moat/build"), "build");
        assert_eq!(label("/moat/build/sub"), "build");
        assert_eq!(label("/moat"), HOST);
        assert_eq!(label(&format!("/docker/{ID}")), "docker:0123456789ab");
        assert_eq!(
            label(&format!("/system.slice/docker-{ID}.scope")),
            "docker:0123456789ab"
        );
        assert_eq!(label("/system.slice/ssh.service"), "ssh.service");
        assert_eq!(
            label("/user.slice/user-1000.slice/session-3.scope"),
            "session-3.scope"
        );
        assert_eq!(
            label("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service"),
            "foo.service"
        );
        assert_eq!(label("/"), HOST);
        assert_eq!(label("/process_api/f7883729d51b"), HOST);
        assert_eq!(label("/docker/notanid"), HOST);
        assert_eq!(classify("/a/b/w1", "a/b", "docker"), "w1");
        assert_eq!(
            classify(&format!("/ci/docker/{ID}"), "moat", "ci/docker"),
            "docker:0123456789ab"
        );
    }

    #[test]
    fn proc_cgroup_prefers_pids() {
        let text = format!(
            "12:memory:/process_api/x\n9:name=systemd:/system.slice/ssh.service\n\
             8:pids:/docker/{ID}\n0::/\n"
        );
        assert_eq!(
            classify_proc_cgroup(&text, "moat", "docker"),
            Some(("docker:0123456789ab".to_owned(), format!("/docker/{ID}")))
        );
        assert_eq!(
            classify_proc_cgroup("8:pids:/\n0::/\n", "moat", "docker"),
            None
        );
    }

    #[test]
    fn cap_keeps_labels_and_counts_overflow_once() {
        let mut cap = LabelCap::new(2);
        assert_eq!(&*cap.admit("a"), "a");
        assert_eq!(&*cap.admit("b"), "b");
        assert_eq!(&*cap.admit("c"), OTHER);
        assert_eq!(&*cap.admit("c"), OTHER);
        assert_eq!(&*cap.admit("d"), OTHER);
        assert_eq!(&*cap.admit("a"), "a");
        assert_eq!(&*cap.admit(HOST), HOST);
        assert_eq!(cap.overflow_total(), 2);
        assert_eq!(cap.assigned(), 2);
    }

    /// A fresh fake v2 hierarchy `<tmp>/moat-<tag>-<pid>/v2` containing `dir`:
    /// the directory to remove at the end, the hierarchy and its layout.
    fn fake_v2(tag: &str, dir: &str) -> (PathBuf, PathBuf, CgroupLayout) {
        let root = std::env::temp_dir().join(format!("moat-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let v2 = root.join("v2");
        fs::create_dir_all(v2.join(dir)).unwrap();
        let layout = CgroupLayout {
            v2_mount: v2.clone(),
            pids_mount: None,
        };
        (root, v2, layout)
    }

    #[test]
    fn the_watcher_learns_cgroups_removed_before_they_are_looked_up() {
        let (root, v2, layout) = fake_v2("watch", "moat");
        let attributor = Arc::new(std::sync::Mutex::new(Attributor::new(
            &layout,
            &WorkloadsConfig::default(),
        )));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handle = spawn_watcher(attributor.clone(), stop.clone(), None).unwrap();
        // Give the thread time to add its watch.
        std::thread::sleep(Duration::from_millis(300));
        fs::create_dir(v2.join("moat/brief")).unwrap();
        let id = fs::metadata(v2.join("moat/brief")).unwrap().ino();
        std::thread::sleep(Duration::from_millis(300));
        fs::remove_dir(v2.join("moat/brief")).unwrap();
        let got = attributor.lock().unwrap().attribute_id(id);
        assert_eq!(&*got.workload, "brief");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        handle.join().unwrap();
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn resolves_a_fake_hierarchy_by_inode() {
        let (root, v2, layout) = fake_v2("attr", "moat/web");
        let mut attributor =
            Attributor::new(&layout, &WorkloadsConfig::default()).with_min_rewalk(Duration::ZERO);
        let web = fs::metadata(v2.join("moat/web")).unwrap().ino();
        let got = attributor.attribute_id(web);
        assert_eq!(&*got.workload, "web");
        assert_eq!(got.cgroup_path.as_deref(), Some("/moat/web"));

        // Created after the first walk: a miss walks again.
        fs::create_dir_all(v2.join(format!("docker/{ID}"))).unwrap();
        let container = fs::metadata(v2.join(format!("docker/{ID}"))).unwrap().ino();
        assert_eq!(
            &*attributor.attribute_id(container).workload,
            "docker:0123456789ab"
        );

        // Removed after being seen: still attributed.
        fs::remove_dir(v2.join("moat/web")).unwrap();
        assert_eq!(&*attributor.attribute_id(web).workload, "web");

        // Never seen: host, and remembered as dead.
        assert_eq!(&*attributor.attribute_id(u64::MAX >> 2).workload, HOST);
        let root_id = fs::metadata(&v2).unwrap().ino();
        assert_eq!(attributor.v2_root_id(), Some(root_id));
        assert_eq!(&*attributor.attribute_id(root_id).workload, HOST);
        fs::remove_dir_all(&root).unwrap();
    }
}
