//! Workload cgroups: a pids limit against fork bombs, and a cgroup v2
//! identity that moat's eBPF programs see as `bpf_get_current_cgroup_id()`.
//!
//! Every workload gets two cgroups, or one when they coincide:
//!
//! - its **pids cgroup** `<pids mount>/<parent>/<name>`, on whichever
//!   hierarchy the pids controller is bound to: a v1 hierarchy of its own on
//!   hybrid hosts (`/sys/fs/cgroup/pids`), the unified hierarchy otherwise;
//! - its **identity cgroup** `<v2 mount>/<parent>/<name>` on the unified
//!   hierarchy. The kernel's cgroup id (what eBPF reports) is always the v2
//!   one, so a workload placed only in a v1 cgroup would be
//!   indistinguishable from the host's root cgroup.
//!
//! When pids is on v2 both are the same directory. All workloads share the
//! parent (`moat` by default), which carries a node-wide cap
//! ([`CgroupConfig::parent_pids_max`]) so that many workloads together cannot
//! exhaust the node's pids either.
//!
//! [`detect`] finds the layout from `/proc/self/mountinfo`;
//! [`WorkloadCgroups`] creates, joins, measures, kills and removes one
//! workload's cgroups. Everything takes its paths from a [`Layout`] and a
//! [`CgroupConfig`], so tests can point it at a fake tree.

mod controller;
mod error;
mod fs;
pub mod mountinfo;
mod v1;
mod v2;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use controller::{PidsController, Version};
pub use error::{CgroupError, Operation};

/// Where moat's cgroups go and the cap shared by all workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupConfig {
    /// Where cgroup file systems are mounted; used to prefer the host's
    /// standard mounts when the mount table lists several. Default
    /// `/sys/fs/cgroup`.
    pub mount_root: PathBuf,
    /// The cgroup (relative to each hierarchy's root, `/`-separated) under
    /// which every workload's cgroups are created. Default `moat`.
    pub parent: String,
    /// `pids.max` written to the parent when moat creates it: the most
    /// tasks all workloads together may have. An existing parent's limit is
    /// left as the administrator set it. Default 512.
    pub parent_pids_max: u64,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            mount_root: PathBuf::from("/sys/fs/cgroup"),
            parent: "moat".to_owned(),
            parent_pids_max: 512,
        }
    }
}

/// A workload's own pids limit. The limit counts tasks (threads as well as
/// processes), like every pids cgroup limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidsLimit {
    /// No limit of its own: its `pids.max` is left at the kernel's default
    /// `max`, and the parent's cap applies.
    Inherit,
    /// Explicitly no limit of its own (`max` is written). Limits are
    /// hierarchical, so the parent's cap still applies: no cgroup below the
    /// parent can exceed it.
    Unlimited,
    /// At most this many tasks (positive).
    Max(u64),
}

impl fmt::Display for PidsLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidsLimit::Inherit => f.write_str("inherit"),
            PidsLimit::Unlimited => f.write_str("unlimited"),
            PidsLimit::Max(n) => write!(f, "{n}"),
        }
    }
}

/// A `--pids-limit` value that is neither `unlimited` nor a positive integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid pids limit {input:?}: expected \"unlimited\" or a positive integer \
     (the most tasks, threads included, the workload may have at once)"
)]
pub struct ParsePidsLimitError {
    /// The text given.
    pub input: String,
}

impl FromStr for PidsLimit {
    type Err = ParsePidsLimitError;

    /// Accepts `unlimited` or a positive integer. `0` is refused: it would
    /// forbid every fork, and Docker users read it as "no limit".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "unlimited" {
            return Ok(PidsLimit::Unlimited);
        }
        match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(PidsLimit::Max(n)),
            _ => Err(ParsePidsLimitError {
                input: s.to_owned(),
            }),
        }
    }
}

/// The hierarchy the pids controller is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidsLocation {
    /// A cgroup v1 hierarchy mounted at `mount`.
    V1 {
        /// Its mount point.
        mount: PathBuf,
    },
    /// The unified hierarchy mounted at `mount`.
    V2 {
        /// Its mount point.
        mount: PathBuf,
    },
}

impl PidsLocation {
    /// The mount point of the hierarchy.
    pub fn mount(&self) -> &Path {
        match self {
            PidsLocation::V1 { mount } | PidsLocation::V2 { mount } => mount,
        }
    }

    fn controller(&self) -> Box<dyn PidsController> {
        match self {
            PidsLocation::V1 { mount } => Box::new(v1::V1Pids::new(mount.clone())),
            PidsLocation::V2 { mount } => Box::new(v2::V2Pids::new(mount.clone())),
        }
    }
}

/// The host's cgroup layout as far as moat needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Where the pids controller is.
    pub pids: PidsLocation,
    /// Where the unified (v2) hierarchy is mounted.
    pub v2_mount: PathBuf,
}

/// Finds the layout from `/proc/self/mountinfo` (and `/proc/cgroups`, to
/// explain a missing pids controller). See [`detect_from`].
pub fn detect(cfg: &CgroupConfig) -> Result<Layout, CgroupError> {
    let mountinfo = Path::new("/proc/self/mountinfo");
    let text = fs::read(mountinfo)?;
    // Only read to explain a missing controller, so a failure to read it
    // is no error.
    detect_with(&text, || std::fs::read_to_string("/proc/cgroups").ok(), cfg)
}

/// Finds the layout from the text of a mount table.
///
/// pids is on v1 if a `cgroup` mount has `pids` among its super options;
/// otherwise on the `cgroup2` mount if its `cgroup.controllers` lists it.
/// When a table has several candidates, a mount at `<mount_root>/unified` or
/// `<mount_root>` (for cgroup2), or else anywhere under `mount_root`, is
/// preferred. `proc_cgroups`, the text of `/proc/cgroups`, only serves to
/// say why pids is missing.
pub fn detect_from(
    mountinfo: &str,
    proc_cgroups: Option<&str>,
    cfg: &CgroupConfig,
) -> Result<Layout, CgroupError> {
    detect_with(mountinfo, || proc_cgroups.map(str::to_owned), cfg)
}

/// [`detect_from`], getting the text of `/proc/cgroups` only when it is
/// needed: to say why pids is missing.
fn detect_with(
    mountinfo: &str,
    proc_cgroups: impl FnOnce() -> Option<String>,
    cfg: &CgroupConfig,
) -> Result<Layout, CgroupError> {
    let mounts = mountinfo::parse(mountinfo);
    let root = &cfg.mount_root;
    let under_root = |m: &&&mountinfo::Mount| m.mount_point.starts_with(root);

    let v2: Vec<&mountinfo::Mount> = mounts.iter().filter(|m| m.fs_type == "cgroup2").collect();
    let v2_mount = [root.join("unified"), root.clone()]
        .iter()
        .find_map(|p| v2.iter().find(|m| &m.mount_point == p))
        .or_else(|| v2.iter().find(under_root))
        .or_else(|| v2.first())
        .map(|m| m.mount_point.clone());
    let has_v1 = mounts.iter().any(|m| m.fs_type == "cgroup");
    let Some(v2_mount) = v2_mount else {
        return Err(CgroupError::NoCgroup2 {
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            // Next to v1 hierarchies, cgroup2 conventionally goes to
            // `unified`; alone, it owns the root.
            suggested_mount: if has_v1 {
                root.join("unified")
            } else {
                root.clone()
            },
        });
    };

    let v1_pids: Vec<&mountinfo::Mount> = mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup" && m.has_super_option("pids"))
        .collect();
    if let Some(m) = v1_pids.iter().find(under_root).or_else(|| v1_pids.first()) {
        return Ok(Layout {
            pids: PidsLocation::V1 {
                mount: m.mount_point.clone(),
            },
            v2_mount,
        });
    }

    let controllers = v2_mount.join("cgroup.controllers");
    if fs::list_contains(&controllers, "pids")? {
        return Ok(Layout {
            pids: PidsLocation::V2 {
                mount: v2_mount.clone(),
            },
            v2_mount,
        });
    }
    Err(CgroupError::NoPidsController {
        reason: why_no_pids(proc_cgroups().as_deref(), &controllers, root),
    })
}

/// Explains a missing pids controller from `/proc/cgroups`
/// (`subsys_name hierarchy num_cgroups enabled`).
fn why_no_pids(proc_cgroups: Option<&str>, controllers: &Path, root: &Path) -> String {
    let not_listed = format!(
        "no cgroup v1 mount has it and {} does not list it",
        controllers.display()
    );
    let Some(text) = proc_cgroups else {
        return not_listed;
    };
    let line = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"pids"));
    match line.as_deref() {
        None => "the kernel has no pids controller (no `pids` line in /proc/cgroups: \
                 it was built without CONFIG_CGROUP_PIDS)"
            .to_owned(),
        Some([_, _, _, "0", ..]) => "the pids controller is disabled on the kernel \
                                     command line (cgroup_disable=pids in /proc/cmdline)"
            .to_owned(),
        Some([_, hierarchy, ..]) if *hierarchy != "0" => format!(
            "{not_listed}; it is bound to cgroup v1 hierarchy {hierarchy}, which is not \
             mounted here: mount it with `mount -t cgroup -o pids none {}`",
            root.join("pids").display()
        ),
        _ => format!(
            "{not_listed}; it is on cgroup v2 but not delegated to this part of the \
             hierarchy (enable it in the parent's cgroup.subtree_control)"
        ),
    }
}

/// The longest workload or parent component name accepted (`NAME_MAX`).
const MAX_NAME_LEN: usize = 255;

/// Checks that `name` can be one cgroup directory name. The character set
/// is narrow on purpose: names end up in `/proc/<pid>/cgroup`, log lines and
/// metrics labels, where `/`, spaces, newlines or `:` would be ambiguous.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("it is longer than 255 bytes");
    }
    if name.starts_with('.') {
        return Err("it starts with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.@+".contains(&b))
    {
        return Err("only ASCII letters, digits and - _ . @ + are allowed");
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), CgroupError> {
    check_name(name).map_err(|reason| CgroupError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Checks `cfg.parent` and returns it as a relative path.
fn parent_path(cfg: &CgroupConfig) -> Result<PathBuf, CgroupError> {
    let invalid = |reason: String| CgroupError::InvalidConfig {
        field: "parent",
        reason,
    };
    if cfg.parent.starts_with('/') {
        return Err(invalid(format!(
            "{:?} must be relative to each hierarchy's root, e.g. \"moat\"",
            cfg.parent
        )));
    }
    for part in cfg.parent.split('/') {
        check_name(part)
            .map_err(|r| invalid(format!("{:?}: component {part:?}: {r}", cfg.parent)))?;
    }
    Ok(PathBuf::from(&cfg.parent))
}

/// The directories `mount/a`, `mount/a/b`, ... for a relative `parent`.
fn levels(mount: &Path, parent: &Path) -> Vec<PathBuf> {
    let mut dir = mount.to_owned();
    parent
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => {
                dir.push(part);
                Some(dir.clone())
            }
            _ => None,
        })
        .collect()
}

/// How long [`WorkloadCgroups::kill_all`] waits for the processes to go.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// One workload's cgroups: its pids cgroup and its v2 identity cgroup (the
/// same directory when pids is on v2).
///
/// A value made by [`WorkloadCgroups::create`] holds an exclusive `flock` on
/// the identity directory for as long as it lives. That is how a later
/// `create` of the same name tells a live workload (error) from a leftover
/// of a crashed moat (removed if it has no processes). Dropping the value
/// does not remove the cgroups; [`WorkloadCgroups::remove`] does.
#[derive(Debug)]
pub struct WorkloadCgroups {
    name: String,
    controller: Box<dyn PidsController>,
    pids_dir: PathBuf,
    v2_dir: PathBuf,
    _lock: Option<File>,
}

/// What `create` made so far, to undo on failure, in creation order.
#[derive(Default)]
struct Undo {
    /// Directories, and whether each is a shared parent (which another
    /// workload may have started to use meanwhile).
    dirs: Vec<(PathBuf, bool)>,
}

impl Undo {
    fn created(&mut self, dir: &Path, parent: bool) {
        self.dirs.push((dir.to_owned(), parent));
    }

    /// Removes what was created, newest first, and returns `error`, or
    /// [`CgroupError::RollbackIncomplete`] naming what could not be removed.
    fn roll_back(self, error: CgroupError) -> CgroupError {
        let mut left_behind = Vec::new();
        for (dir, parent) in self.dirs.into_iter().rev() {
            let result = if parent {
                fs::remove_parent_dir(&dir)
            } else {
                fs::remove_dir(&dir)
            };
            if let Err(e) = result {
                left_behind.push((dir, e));
            }
        }
        if left_behind.is_empty() {
            error
        } else {
            CgroupError::RollbackIncomplete {
                error: Box::new(error),
                left_behind,
            }
        }
    }
}

/// Opens `dir` and takes an exclusive `flock` on it without waiting.
/// `Ok(None)` when another open file holds it. `flock` (not `fcntl` locks)
/// because it belongs to the open file: a second `create` in the same
/// process conflicts too, and closing the file releases it even on a crash.
fn try_lock(dir: &Path) -> Result<Option<File>, CgroupError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| CgroupError::io(Operation::Open, dir, e))?;
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(file));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(CgroupError::io(Operation::Lock, dir, e))
    }
}

impl WorkloadCgroups {
    /// Creates the workload's cgroups.
    ///
    /// Creates the parent on first use (with `pids.max` =
    /// `cfg.parent_pids_max` when this call creates it; on v2 with `+pids`
    /// in `cgroup.subtree_control` of the v2 root and of the parent), the
    /// workload's pids cgroup `<pids mount>/<parent>/<name>` with `pids.max`
    /// per `limit`, and its identity cgroup `<v2 mount>/<parent>/<name>`.
    ///
    /// If a cgroup of this name exists, this is an error when it belongs to
    /// a live [`WorkloadCgroups`] (its lock is held) or has processes;
    /// otherwise it is a leftover of a crash and is removed first.
    ///
    /// On failure, every directory this call created is removed before the
    /// error is returned. `+pids` enabled in the v2 root stays: it is a
    /// node-wide switch that other cgroups may have started to rely on, and
    /// leaving it on only makes `pids.*` files appear.
    pub fn create(
        layout: &Layout,
        cfg: &CgroupConfig,
        name: &str,
        limit: PidsLimit,
    ) -> Result<Self, CgroupError> {
        let (mut wl, parent) = WorkloadCgroups::at(layout, cfg, name)?;
        if cfg.parent_pids_max == 0 {
            return Err(CgroupError::InvalidConfig {
                field: "parent_pids_max",
                reason: "0 would forbid every fork in every workload".to_owned(),
            });
        }
        if limit == PidsLimit::Max(0) {
            return Err(CgroupError::InvalidLimit {
                limit: 0,
                reason: "it would forbid every fork; use a positive number or unlimited",
            });
        }

        wl.remove_leftover()?;

        let mut undo = Undo::default();
        match wl.build(&layout.v2_mount, &parent, cfg, limit, &mut undo) {
            Ok(()) => Ok(wl),
            // `wl` and its lock go only after the rollback, so that a
            // concurrent `create` does not take the half-made cgroups for
            // a leftover meanwhile.
            Err(e) => Err(undo.roll_back(e)),
        }
    }

    /// The (unlocked) cgroups of workload `name` under `cfg.parent`, which
    /// is returned as a relative path; nothing is touched on disk.
    fn at(layout: &Layout, cfg: &CgroupConfig, name: &str) -> Result<(Self, PathBuf), CgroupError> {
        validate_name(name)?;
        let parent = parent_path(cfg)?;
        let controller = layout.pids.controller();
        let wl = WorkloadCgroups {
            name: name.to_owned(),
            pids_dir: controller.mount().join(&parent).join(name),
            v2_dir: layout.v2_mount.join(&parent).join(name),
            controller,
            _lock: None,
        };
        Ok((wl, parent))
    }

    /// The steps of [`WorkloadCgroups::create`] after the leftover check,
    /// recording in `undo` each directory made.
    fn build(
        &mut self,
        v2_mount: &Path,
        parent: &Path,
        cfg: &CgroupConfig,
        limit: PidsLimit,
        undo: &mut Undo,
    ) -> Result<(), CgroupError> {
        let ctl = &self.controller;
        let shared = self.is_shared();

        // The parent on the pids hierarchy, delegating the controller level
        // by level on v2 so that each child gets `pids.*` files.
        ctl.delegate(ctl.mount())?;
        let pids_levels = levels(ctl.mount(), parent);
        let mut parent_created = false;
        for dir in &pids_levels {
            parent_created = fs::create_dir(dir)?;
            if parent_created {
                undo.created(dir, true);
            }
            ctl.delegate(dir)?;
        }
        let pids_parent = pids_levels.last().cloned().unwrap_or_default();
        // Only a parent made now gets the default cap: an existing one
        // carries whatever the administrator chose.
        if parent_created {
            ctl.set_max(&pids_parent, Some(cfg.parent_pids_max))?;
        }

        // The parent on the identity hierarchy needs no controllers.
        if !shared {
            for dir in levels(v2_mount, parent) {
                if fs::create_dir(&dir)? {
                    undo.created(&dir, true);
                }
            }
        }

        self.create_own_dir(&self.pids_dir.clone(), undo)?;
        if shared {
            self.take_lock()?;
        }
        match limit {
            PidsLimit::Inherit => {}
            PidsLimit::Unlimited => self.controller.set_max(&self.pids_dir, None)?,
            PidsLimit::Max(n) => {
                self.controller.set_max(&self.pids_dir, Some(n))?;
                if let Ok(Some(cap)) = self.controller.max(&pids_parent) {
                    if n > cap {
                        log::warn!(
                            "pids limit {n} of workload {} is above the cap {cap} of {}; \
                             the cap applies",
                            self.name,
                            pids_parent.display()
                        );
                    }
                }
            }
        }
        if !shared {
            self.create_own_dir(&self.v2_dir.clone(), undo)?;
            self.take_lock()?;
        }
        Ok(())
    }

    /// Takes the ownership lock on the identity directory, right after
    /// making it, so that it is never seen unlocked and empty (a leftover).
    fn take_lock(&mut self) -> Result<(), CgroupError> {
        let lock = try_lock(&self.v2_dir)?.ok_or_else(|| CgroupError::AlreadyExists {
            path: self.v2_dir.clone(),
            reason: "another moat process took it over while it was being created".to_owned(),
        })?;
        self._lock = Some(lock);
        Ok(())
    }

    /// Makes one of the workload's own directories; it must not exist.
    fn create_own_dir(&self, dir: &Path, undo: &mut Undo) -> Result<(), CgroupError> {
        if !fs::create_dir(dir)? {
            // `remove_leftover` cleared the name, so someone else created it
            // since: the caller broke its uniqueness promise.
            return Err(CgroupError::AlreadyExists {
                path: dir.to_owned(),
                reason: "created concurrently by someone else".to_owned(),
            });
        }
        undo.created(dir, false);
        Ok(())
    }

    /// Clears the way for `create`: errors if a cgroup of this name is live,
    /// removes it if it is a leftover.
    fn remove_leftover(&self) -> Result<(), CgroupError> {
        let dirs = self.dirs();
        let mut existing = Vec::new();
        for dir in &dirs {
            match std::fs::symlink_metadata(dir) {
                Ok(m) if m.is_dir() => existing.push(*dir),
                Ok(_) => {
                    return Err(CgroupError::AlreadyExists {
                        path: dir.to_path_buf(),
                        reason: "it is a file, not a cgroup directory (a cgroup interface \
                                 file has this name)"
                            .to_owned(),
                    })
                }
                // Not there, or cannot be there (a file where the parent
                // should be, which creating the parent will report).
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(e) => return Err(CgroupError::io(Operation::Stat, *dir, e)),
            }
        }
        if existing.is_empty() {
            return Ok(());
        }
        // The lock is held for the whole cleanup, so that two moat processes
        // finding the same leftover do not both act on it.
        let _lock = if existing.contains(&self.v2_dir.as_path()) {
            match try_lock(&self.v2_dir)? {
                Some(lock) => Some(lock),
                None => {
                    return Err(CgroupError::AlreadyExists {
                        path: self.v2_dir.clone(),
                        reason: "it belongs to a running workload (a moat process holds \
                                 its lock)"
                            .to_owned(),
                    })
                }
            }
        } else {
            None
        };
        for dir in &existing {
            let procs = fs::read_procs(dir)?;
            if !procs.is_empty() {
                return Err(CgroupError::AlreadyExists {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "a leftover that still has {} process(es) {:?}; kill them or \
                         choose another name",
                        procs.len(),
                        procs
                    ),
                });
            }
        }
        for dir in existing {
            fs::remove_dir(dir).map_err(|e| CgroupError::io(Operation::RemoveDir, dir, e))?;
            log::info!("removed leftover cgroup {}", dir.display());
        }
        Ok(())
    }

    /// Re-opens an existing workload's cgroups (for `moat ps` and stale
    /// cleanup). Errors with [`CgroupError::NotFound`] if either directory
    /// is missing. Takes no lock.
    pub fn open(layout: &Layout, cfg: &CgroupConfig, name: &str) -> Result<Self, CgroupError> {
        let (wl, _) = WorkloadCgroups::at(layout, cfg, name)?;
        for dir in wl.dirs() {
            if !dir.is_dir() {
                return Err(CgroupError::NotFound {
                    path: dir.to_owned(),
                });
            }
        }
        Ok(wl)
    }

    /// The workload's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The workload's pids cgroup directory.
    pub fn pids_dir(&self) -> &Path {
        &self.pids_dir
    }

    /// The workload's identity cgroup directory on the unified hierarchy.
    pub fn v2_dir(&self) -> &Path {
        &self.v2_dir
    }

    /// Whether the pids controller is on the unified hierarchy.
    pub fn pids_on_v2(&self) -> bool {
        self.controller.version() == Version::V2
    }

    fn is_shared(&self) -> bool {
        self.pids_dir == self.v2_dir
    }

    /// The distinct directories: pids first, then identity.
    fn dirs(&self) -> Vec<&Path> {
        if self.is_shared() {
            vec![&self.v2_dir]
        } else {
            vec![&self.pids_dir, &self.v2_dir]
        }
    }

    /// An `O_PATH|O_DIRECTORY|O_CLOEXEC` descriptor of the identity cgroup,
    /// for `clone3(CLONE_INTO_CGROUP)`.
    pub fn v2_fd(&self) -> Result<OwnedFd, CgroupError> {
        // std adds O_CLOEXEC to every open.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&self.v2_dir)
            .map_err(|e| CgroupError::io(Operation::Open, &self.v2_dir, e))?;
        Ok(OwnedFd::from(file))
    }

    /// The v2 cgroup id: the inode number of the identity directory, which
    /// on 64-bit kernels is the kernfs node id that
    /// `bpf_get_current_cgroup_id()` returns.
    pub fn v2_id(&self) -> Result<u64, CgroupError> {
        std::fs::metadata(&self.v2_dir)
            .map(|m| m.ino())
            .map_err(|e| CgroupError::io(Operation::Stat, &self.v2_dir, e))
    }

    /// Moves `pid` into every cgroup of the workload: the pids cgroup first
    /// (so the limit applies before anything else), then the identity
    /// cgroup if it is another directory.
    pub fn join(&self, pid: i32) -> Result<(), CgroupError> {
        check_pid(pid)?;
        for dir in self.dirs() {
            fs::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Moves `pid` into the pids cgroup only, for a process that
    /// `clone3(CLONE_INTO_CGROUP)` already placed in the identity cgroup. A
    /// no-op when pids is on v2 (the identity cgroup is the pids cgroup).
    pub fn join_pids_only(&self, pid: i32) -> Result<(), CgroupError> {
        check_pid(pid)?;
        if self.is_shared() {
            return Ok(());
        }
        fs::write(&self.pids_dir.join("cgroup.procs"), &pid.to_string())
    }

    /// Tasks charged to the pids cgroup now (`pids.current`). Zombies count
    /// until they are reaped.
    pub fn pids_current(&self) -> Result<u64, CgroupError> {
        self.controller.current(&self.pids_dir)
    }

    /// The workload's own `pids.max`; `None` for `max` (the parent's cap
    /// still applies).
    pub fn pids_limit(&self) -> Result<Option<u64>, CgroupError> {
        self.controller.max(&self.pids_dir)
    }

    /// How often the limit was hit: the `max` line of `pids.events`.
    ///
    /// With a limit of its own both versions count the workload's refused
    /// forks. They differ for forks refused by the *parent's* cap: v1 counts
    /// them here (forks that failed in this cgroup), v2 (Linux 6.10 and
    /// later) counts them in the parent (whose limit was hit).
    pub fn limit_hits(&self) -> Result<u64, CgroupError> {
        self.controller.limit_hits(&self.pids_dir)
    }

    /// Kills every process of the workload and waits, at most
    /// [`KILL_TIMEOUT`], until none is left.
    ///
    /// Writes `1` to `cgroup.kill` of the identity cgroup, which kills the
    /// whole cgroup atomically, even a fork bomb that forks faster than
    /// anyone can list it. Then, until both cgroups' `cgroup.procs` are
    /// empty, SIGKILLs whatever they still list: this is all there is on
    /// kernels without `cgroup.kill` (before 5.14), and it catches
    /// processes that were only put into the v1 pids cgroup.
    ///
    /// Killed processes stay zombies, still counted in `pids.current`,
    /// until their parent reaps them; orphans are reaped by the nearest
    /// subreaper or PID 1.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let start = Instant::now();
        let kill_file = self.v2_dir.join("cgroup.kill");
        if kill_file.exists() {
            fs::write(&kill_file, "1")?;
        }
        let mut pause = Duration::from_millis(1);
        loop {
            let mut alive: Option<(&Path, Vec<i32>)> = None;
            for dir in self.dirs() {
                let procs = fs::read_procs(dir)?;
                if !procs.is_empty() {
                    sigkill_members(dir, &procs)?;
                    alive.get_or_insert((dir, procs));
                }
            }
            let Some((dir, remaining)) = alive else {
                return Ok(());
            };
            if start.elapsed() >= KILL_TIMEOUT {
                return Err(CgroupError::KillTimeout {
                    path: dir.to_owned(),
                    waited: start.elapsed(),
                    remaining,
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Removes the workload's cgroup directories (`rmdir`, retried for a
    /// moment on `EBUSY`). Never removes the parent. A directory already
    /// gone counts as removed; every directory is attempted even if one
    /// fails, and the first failure is returned.
    pub fn remove(self) -> Result<(), CgroupError> {
        let mut first = None;
        for dir in self.dirs() {
            if let Err(e) = fs::remove_dir(dir) {
                first.get_or_insert(CgroupError::io(Operation::RemoveDir, dir, e));
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn check_pid(pid: i32) -> Result<(), CgroupError> {
    if pid <= 0 {
        return Err(CgroupError::InvalidPid { pid });
    }
    Ok(())
}

/// SIGKILLs the processes `pids` listed in `dir`'s `cgroup.procs`, without
/// hitting an unrelated process that reused a pid after a member exited:
/// each pid is pinned with a pidfd first, and only signalled if the cgroup
/// still lists it afterwards. A pidfd keeps naming its process even if the
/// number is reused, so a pid still listed after the pidfd was opened is
/// either the member the pidfd names or a new member, and signalling a
/// pidfd whose process is gone does nothing.
fn sigkill_members(dir: &Path, pids: &[i32]) -> Result<(), CgroupError> {
    let mut pinned = Vec::with_capacity(pids.len());
    for &pid in pids {
        // SAFETY: pidfd_open with integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
            pinned.push((pid, Some(fd)));
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ESRCH) => {} // already gone
            // Kernels before 5.3: fall back to kill(2) and its small race.
            Some(libc::ENOSYS) => pinned.push((pid, None)),
            _ => return Err(CgroupError::io(Operation::Kill { pid }, dir, e)),
        }
    }
    let still = fs::read_procs(dir)?;
    for (pid, fd) in pinned {
        if still.binary_search(&pid).is_err() {
            continue;
        }
        let rc = match &fd {
            // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            // SAFETY: kill with integer arguments.
            None => unsafe { libc::kill(pid, libc::SIGKILL) }.into(),
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(CgroupError::io(Operation::Kill { pid }, dir, e));
            }
        }
    }
    Ok(())
}
