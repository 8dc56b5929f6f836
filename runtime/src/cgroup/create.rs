//! Creating a workload's cgroups, fail-closed: a leftover of a crashed moat
//! is cleared first, and a failure undoes every directory made.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::config::{CgroupConfig, PidsLimit};
use super::error::{CgroupError, Operation};
use super::fs;
use super::layout::Layout;
use super::names::levels;
use super::workload::WorkloadCgroups;

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
pub(super) fn try_lock(dir: &Path) -> Result<Option<Flock<File>>, CgroupError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| CgroupError::io(Operation::Open, dir, e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(Some(locked)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(CgroupError::io(
            Operation::Lock,
            dir,
            std::io::Error::from(errno),
        )),
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
        // Processes anywhere below count: a v1 cgroup lists only its own.
        for dir in &existing {
            for d in fs::subtree(dir)? {
                let procs = fs::read_procs(&d)?;
                if !procs.is_empty() {
                    return Err(CgroupError::AlreadyExists {
                        path: d,
                        reason: format!(
                            "a leftover that still has {} process(es) {:?}; kill them or \
                             choose another name",
                            procs.len(),
                            procs
                        ),
                    });
                }
            }
        }
        for dir in existing {
            fs::remove_tree(dir)?;
            log::info!("removed leftover cgroup {}", dir.display());
        }
        Ok(())
    }
}
