//! Unit tests of detection and of the file logic, against fake cgroup trees
//! in temporary directories (see `fs.rs` for how the fake stands in for the
//! kernel). The real kernel is exercised by `runtime/tests/cgroup_real.rs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::fs::{clear_faults, inject, Fault};
use super::kill::sigkill_members;
use super::*;

/// A temporary directory removed on drop.
pub struct TempTree(PathBuf);

impl TempTree {
    pub fn new(label: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "moat-cgroup-unit-{}-{}-{label}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempTree(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A fake hybrid host: v1 pids at `<root>/pids`, cgroup2 at
/// `<root>/unified` without pids.
pub(super) fn fake_v1(label: &str) -> (TempTree, Layout, CgroupConfig) {
    let t = TempTree::new(label);
    let root = t.path().to_owned();
    fs::create_dir(root.join("pids")).unwrap();
    for f in ["tasks", "cgroup.procs"] {
        fs::write(root.join("pids").join(f), "").unwrap();
    }
    fake_v2_root(&root.join("unified"), "hugetlb");
    let layout = Layout {
        pids: PidsLocation::V1 {
            mount: root.join("pids"),
        },
        v2_mount: root.join("unified"),
    };
    (t, layout, cfg_at(&root))
}

/// A fake host with pids on cgroup2 at `<root>/unified`.
pub(super) fn fake_v2(label: &str) -> (TempTree, Layout, CgroupConfig) {
    let t = TempTree::new(label);
    let root = t.path().to_owned();
    fake_v2_root(&root.join("unified"), "hugetlb pids");
    let layout = Layout {
        pids: PidsLocation::V2 {
            mount: root.join("unified"),
        },
        v2_mount: root.join("unified"),
    };
    (t, layout, cfg_at(&root))
}

fn fake_v2_root(dir: &Path, controllers: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
    fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
    fs::write(dir.join("cgroup.procs"), "").unwrap();
}

fn cfg_at(root: &Path) -> CgroupConfig {
    CgroupConfig {
        mount_root: root.to_owned(),
        ..CgroupConfig::default()
    }
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p).unwrap()
}

// ---- detection ----------------------------------------------------------

fn mountinfo_line(id: u32, mount: &Path, fs_type: &str, super_opts: &str) -> String {
    format!(
        "{id} 31 0:{id} / {} rw,relatime - {fs_type} {fs_type} {super_opts}\n",
        mount.display()
    )
}

#[test]
fn detects_hybrid_with_v1_pids() {
    let t = TempTree::new("detect-hybrid");
    let root = t.path();
    fake_v2_root(&root.join("unified"), "hugetlb");
    let text = [
        mountinfo_line(32, &root.join("cpu"), "cgroup", "rw,cpu"),
        mountinfo_line(39, &root.join("pids"), "cgroup", "rw,pids"),
        mountinfo_line(41, &root.join("unified"), "cgroup2", "rw"),
    ]
    .concat();
    let layout = detect_from(&text, None, &cfg_at(root)).unwrap();
    assert_eq!(
        layout,
        Layout {
            pids: PidsLocation::V1 {
                mount: root.join("pids")
            },
            v2_mount: root.join("unified"),
        }
    );
}

#[test]
fn detects_pids_moved_to_v2_in_hybrid() {
    let t = TempTree::new("detect-hybrid-v2");
    let root = t.path();
    fake_v2_root(&root.join("unified"), "hugetlb pids");
    let text = [
        mountinfo_line(32, &root.join("cpu"), "cgroup", "rw,cpu"),
        mountinfo_line(41, &root.join("unified"), "cgroup2", "rw"),
    ]
    .concat();
    let layout = detect_from(&text, None, &cfg_at(root)).unwrap();
    assert_eq!(
        layout.pids,
        PidsLocation::V2 {
            mount: root.join("unified")
        }
    );
    assert_eq!(layout.v2_mount, root.join("unified"));
}

#[test]
fn detects_v2_only_and_prefers_the_mount_root() {
    let t = TempTree::new("detect-v2");
    let root = t.path().join("sys");
    fake_v2_root(&root, "cpu memory pids");
    let elsewhere = t.path().join("elsewhere");
    fake_v2_root(&elsewhere, "");
    // Another cgroup2 mount listed first, outside the mount root.
    let text = [
        mountinfo_line(20, &elsewhere, "cgroup2", "rw"),
        mountinfo_line(25, &root, "cgroup2", "rw,nsdelegate"),
    ]
    .concat();
    let layout = detect_from(&text, None, &cfg_at(&root)).unwrap();
    assert_eq!(
        layout.pids,
        PidsLocation::V2 {
            mount: root.clone()
        }
    );
    assert_eq!(layout.v2_mount, root);
}

#[test]
fn prefers_v1_pids_under_the_mount_root() {
    let t = TempTree::new("detect-prefer-v1");
    let root = t.path().join("cg");
    fake_v2_root(&root.join("unified"), "");
    let text = [
        mountinfo_line(10, Path::new("/mnt/other-pids"), "cgroup", "rw,pids"),
        mountinfo_line(39, &root.join("pids"), "cgroup", "rw,pids"),
        mountinfo_line(41, &root.join("unified"), "cgroup2", "rw"),
    ]
    .concat();
    let layout = detect_from(&text, None, &cfg_at(&root)).unwrap();
    assert_eq!(
        layout.pids,
        PidsLocation::V1 {
            mount: root.join("pids")
        }
    );
}

#[test]
fn no_cgroup2_says_where_to_mount_it() {
    let text = mountinfo_line(39, Path::new("/sys/fs/cgroup/pids"), "cgroup", "rw,pids");
    let e = detect_from(&text, None, &CgroupConfig::default()).unwrap_err();
    assert!(matches!(e, CgroupError::NoCgroup2 { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("mount -t cgroup2 none /sys/fs/cgroup/unified"),
        "{msg}"
    );
    // Nothing mounted at all: cgroup2 would own the root.
    let e = detect_from("", None, &CgroupConfig::default()).unwrap_err();
    assert!(e.to_string().contains("none /sys/fs/cgroup`"), "{e}");
}

#[test]
fn no_pids_anywhere_explains_why() {
    let t = TempTree::new("detect-nopids");
    let root = t.path();
    fake_v2_root(&root.join("unified"), "hugetlb");
    let text = mountinfo_line(41, &root.join("unified"), "cgroup2", "rw");
    let cfg = cfg_at(root);
    let header = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n";
    let cases = [
        (None, "does not list it"),
        (
            Some(format!("{header}cpu\t1\t1\t1\n")),
            "CONFIG_CGROUP_PIDS",
        ),
        (
            Some(format!("{header}pids\t0\t1\t0\n")),
            "cgroup_disable=pids",
        ),
        (
            Some(format!("{header}pids\t8\t1\t1\n")),
            "mount -t cgroup -o pids none",
        ),
        (Some(format!("{header}pids\t0\t1\t1\n")), "subtree_control"),
    ];
    for (proc_cgroups, expected) in cases {
        let e = detect_from(&text, proc_cgroups.as_deref(), &cfg).unwrap_err();
        assert!(matches!(e, CgroupError::NoPidsController { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(expected), "{proc_cgroups:?}: {msg}");
    }
}

#[test]
fn unreadable_v2_controllers_is_an_error_with_the_path() {
    let text = mountinfo_line(41, Path::new("/nonexistent/moat/unified"), "cgroup2", "rw");
    let e = detect_from(&text, None, &CgroupConfig::default()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    assert!(
        e.to_string()
            .contains("/nonexistent/moat/unified/cgroup.controllers"),
        "{e}"
    );
}

// ---- limits and names ---------------------------------------------------

#[test]
fn pids_limit_parsing() {
    assert_eq!("unlimited".parse(), Ok(PidsLimit::Unlimited));
    assert_eq!("64".parse(), Ok(PidsLimit::Max(64)));
    assert_eq!("1".parse(), Ok(PidsLimit::Max(1)));
    for bad in [
        "0",
        "-1",
        "",
        "max",
        "Unlimited",
        "1.5",
        "64 ",
        "99999999999999999999999",
    ] {
        let e = bad.parse::<PidsLimit>().unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{bad:?}"))
                && msg.contains("\"unlimited\" or a positive integer"),
            "{msg}"
        );
    }
    assert_eq!(PidsLimit::Max(20).to_string(), "20");
    assert_eq!(PidsLimit::Unlimited.to_string(), "unlimited");
    assert_eq!(PidsLimit::Inherit.to_string(), "inherit");
}

#[test]
fn workload_names_are_checked() {
    let (_t, layout, cfg) = fake_v1("names");
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "a b",
        "a\nb",
        "ü",
        "x:y",
        &"n".repeat(256),
    ] {
        let e = WorkloadCgroups::create(&layout, &cfg, bad, PidsLimit::Inherit).unwrap_err();
        assert!(
            matches!(e, CgroupError::InvalidName { .. }),
            "{bad:?}: {e:?}"
        );
        let e = WorkloadCgroups::open(&layout, &cfg, bad).unwrap_err();
        assert!(
            matches!(e, CgroupError::InvalidName { .. }),
            "{bad:?}: {e:?}"
        );
    }
    // Nothing was created for any of them.
    assert_eq!(fs::read_dir(layout.pids.mount()).unwrap().count(), 2);
    for good in ["web-1", "job_2.v3", "a@b+c", &"n".repeat(255)] {
        WorkloadCgroups::create(&layout, &cfg, good, PidsLimit::Inherit)
            .unwrap()
            .remove()
            .unwrap();
    }
}

#[test]
fn config_is_checked() {
    let (_t, layout, cfg) = fake_v1("config");
    for parent in ["", "/moat", "moat/", "a//b", "../up", "mo at"] {
        let cfg = CgroupConfig {
            parent: parent.to_owned(),
            ..cfg.clone()
        };
        let e = WorkloadCgroups::create(&layout, &cfg, "w", PidsLimit::Inherit).unwrap_err();
        assert!(
            matches!(
                e,
                CgroupError::InvalidConfig {
                    field: "parent",
                    ..
                }
            ),
            "{parent:?}: {e:?}"
        );
    }
    let zero = CgroupConfig {
        parent_pids_max: 0,
        ..cfg.clone()
    };
    let e = WorkloadCgroups::create(&layout, &zero, "w", PidsLimit::Inherit).unwrap_err();
    assert!(matches!(
        e,
        CgroupError::InvalidConfig {
            field: "parent_pids_max",
            ..
        }
    ));
    let e = WorkloadCgroups::create(&layout, &cfg, "w", PidsLimit::Max(0)).unwrap_err();
    assert!(
        matches!(e, CgroupError::InvalidLimit { limit: 0, .. }),
        "{e:?}"
    );
    assert!(!layout.pids.mount().join("moat").exists());
}

// ---- create -------------------------------------------------------------

#[test]
fn create_on_v1_makes_parent_pids_and_identity_dirs() {
    let (t, layout, cfg) = fake_v1("create-v1");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap();
    let root = t.path();
    assert_eq!(wl.pids_dir(), root.join("pids/moat/web"));
    assert_eq!(wl.v2_dir(), root.join("unified/moat/web"));
    assert!(!wl.pids_on_v2());
    assert_eq!(read(root.join("pids/moat/pids.max")), "512");
    assert_eq!(read(root.join("pids/moat/web/pids.max")), "64");
    assert!(root.join("unified/moat/web").is_dir());
    // The identity hierarchy needs no controllers.
    assert_eq!(read(root.join("unified/cgroup.subtree_control")), "");
    assert_eq!(wl.pids_limit().unwrap(), Some(64));

    // Second workload: the parent exists and keeps the administrator's cap.
    fs::write(root.join("pids/moat/pids.max"), "100").unwrap();
    let other = WorkloadCgroups::create(&layout, &cfg, "db", PidsLimit::Inherit).unwrap();
    assert_eq!(read(root.join("pids/moat/pids.max")), "100");
    assert_eq!(other.pids_limit().unwrap(), None); // untouched default
    let third = WorkloadCgroups::create(&layout, &cfg, "batch", PidsLimit::Unlimited).unwrap();
    assert_eq!(read(root.join("pids/moat/batch/pids.max")), "max");

    for w in [wl, other, third] {
        w.remove().unwrap();
    }
    assert!(root.join("pids/moat").is_dir(), "the parent stays");
    assert_eq!(
        fs::read_dir(root.join("pids/moat"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count(),
        0
    );
    assert!(!root.join("unified/moat/web").exists());
}

#[test]
fn create_on_v2_shares_one_directory_and_delegates_pids() {
    let (t, layout, cfg) = fake_v2("create-v2");
    let root = t.path().join("unified");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(20)).unwrap();
    assert!(wl.pids_on_v2());
    assert_eq!(wl.pids_dir(), wl.v2_dir());
    assert_eq!(wl.v2_dir(), root.join("moat/web"));
    assert_eq!(read(root.join("cgroup.subtree_control")), "+pids");
    assert_eq!(read(root.join("moat/cgroup.subtree_control")), "+pids");
    assert_eq!(read(root.join("moat/pids.max")), "512");
    assert_eq!(read(root.join("moat/web/pids.max")), "20");
    wl.remove().unwrap();
    assert!(!root.join("moat/web").exists());
    assert!(root.join("moat").is_dir());
}

#[test]
fn nested_parent_is_created_level_by_level() {
    let (t, layout, mut cfg) = fake_v2("nested");
    cfg.parent = "moat/team-a".to_owned();
    let root = t.path().join("unified");
    let wl = WorkloadCgroups::create(&layout, &cfg, "w", PidsLimit::Inherit).unwrap();
    assert_eq!(read(root.join("moat/cgroup.subtree_control")), "+pids");
    assert_eq!(
        read(root.join("moat/team-a/cgroup.subtree_control")),
        "+pids"
    );
    // Only the innermost parent gets the cap.
    assert_eq!(read(root.join("moat/pids.max")), "max\n");
    assert_eq!(read(root.join("moat/team-a/pids.max")), "512");
    assert!(root.join("moat/team-a/w/pids.max").exists());
    wl.remove().unwrap();
}

#[test]
fn v2_without_pids_at_the_root_is_refused_cleanly() {
    let (t, mut layout, cfg) = fake_v1("v2-missing");
    // Claim pids is on v2 although the fake root does not offer it.
    layout.pids = PidsLocation::V2 {
        mount: layout.v2_mount.clone(),
    };
    let e = WorkloadCgroups::create(&layout, &cfg, "w", PidsLimit::Max(5)).unwrap_err();
    assert!(matches!(e, CgroupError::NoPidsController { .. }), "{e:?}");
    assert!(!t.path().join("unified/moat").exists());
}

#[test]
fn second_create_of_a_live_name_fails_and_leaves_the_first_intact() {
    for (label, fake) in [
        ("twice-v1", fake_v1 as fn(&str) -> _),
        ("twice-v2", fake_v2),
    ] {
        let (_t, layout, cfg) = fake(label);
        let first = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap();
        let e = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(8)).unwrap_err();
        assert!(
            matches!(e, CgroupError::AlreadyExists { .. }),
            "{label}: {e:?}"
        );
        assert!(e.to_string().contains("running workload"), "{e}");
        assert!(
            first.pids_dir().is_dir() && first.v2_dir().is_dir(),
            "{label}"
        );
        assert_eq!(first.pids_limit().unwrap(), Some(64), "{label}");
        first.remove().unwrap();
    }
}

#[test]
fn leftover_without_processes_is_replaced() {
    let (_t, layout, cfg) = fake_v1("leftover");
    let first = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap();
    let (pids_dir, v2_dir) = (first.pids_dir().to_owned(), first.v2_dir().to_owned());
    drop(first); // a crashed moat: the cgroups stay, the lock goes
    assert!(pids_dir.is_dir() && v2_dir.is_dir());
    let second = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(8)).unwrap();
    assert_eq!(second.pids_limit().unwrap(), Some(8));
    second.remove().unwrap();

    // Half a leftover (only the pids cgroup) is cleaned up too.
    fs::create_dir(&pids_dir).unwrap();
    fs::write(pids_dir.join("cgroup.procs"), "").unwrap();
    let third = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
    third.remove().unwrap();
}

#[test]
fn leftover_with_processes_is_an_error() {
    let (_t, layout, cfg) = fake_v1("leftover-procs");
    let first = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap();
    let pids_dir = first.pids_dir().to_owned();
    drop(first);
    fs::write(pids_dir.join("cgroup.procs"), "4242\n").unwrap();
    let e = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(8)).unwrap_err();
    assert!(matches!(e, CgroupError::AlreadyExists { .. }), "{e:?}");
    assert!(e.to_string().contains("[4242]"), "{e}");
    assert_eq!(read(pids_dir.join("pids.max")), "64", "left as it was");
}

#[test]
fn a_leftover_with_cgroups_below_goes_whole_unless_they_hold_processes() {
    let (_t, layout, cfg) = fake_v1("leftover-below");
    let first = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap();
    let below = first.v2_dir().join("inner");
    drop(first);
    fs::create_dir(&below).unwrap();
    fs::write(below.join("cgroup.procs"), "4242\n").unwrap();
    let e = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(8)).unwrap_err();
    assert!(
        e.to_string().starts_with(&below.display().to_string()),
        "{e}"
    );
    assert!(e.to_string().contains("[4242]"), "{e}");
    fs::write(below.join("cgroup.procs"), "").unwrap();
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(8)).unwrap();
    assert!(!below.exists());
    assert_eq!(read(wl.pids_dir().join("pids.max")), "8");
}

#[test]
fn an_interface_file_with_the_name_is_not_a_leftover() {
    let (t, layout, cfg) = fake_v1("name-is-file");
    let wl = WorkloadCgroups::create(&layout, &cfg, "a", PidsLimit::Inherit).unwrap();
    // `pids.max` of the parent is a file in the pids hierarchy.
    let e = WorkloadCgroups::create(&layout, &cfg, "pids.max", PidsLimit::Inherit).unwrap_err();
    assert!(e.to_string().contains("not a cgroup directory"), "{e}");
    assert!(t.path().join("pids/moat/pids.max").is_file());
    assert!(!t.path().join("unified/moat/pids.max").exists());
    wl.remove().unwrap();
}

// ---- rollback -----------------------------------------------------------

/// The directories below `dir`, recursively, relative to it.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.push(p.strip_prefix(dir).unwrap().to_owned());
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn failed_workload_pids_max_rolls_back_the_workload_only() {
    for (label, fake) in [("rb-v1", fake_v1 as fn(&str) -> _), ("rb-v2", fake_v2)] {
        let (t, layout, cfg) = fake(label);
        // An existing parent, as after an earlier workload.
        WorkloadCgroups::create(&layout, &cfg, "old", PidsLimit::Inherit)
            .unwrap()
            .remove()
            .unwrap();
        let before = subdirs(t.path());

        inject(Fault::Write, "pids.max", libc::EINVAL);
        let e = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap_err();
        clear_faults();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{label}: {e:?}");
        assert!(e.to_string().contains("moat/web/pids.max"), "{e}");
        assert_eq!(subdirs(t.path()), before, "{label}: nothing left behind");
    }
}

#[test]
fn failure_in_a_fresh_tree_removes_the_new_parent_too() {
    for (label, fake) in [
        ("rb-fresh-v1", fake_v1 as fn(&str) -> _),
        ("rb-fresh-v2", fake_v2),
    ] {
        let (t, layout, cfg) = fake(label);
        let before = subdirs(t.path());
        // The first pids.max written is the new parent's.
        inject(Fault::Write, "pids.max", libc::EACCES);
        let e = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap_err();
        clear_faults();
        assert!(e.to_string().contains("moat/pids.max"), "{label}: {e}");
        assert_eq!(subdirs(t.path()), before, "{label}");
    }
}

#[test]
fn failure_on_the_identity_hierarchy_undoes_the_pids_side() {
    let (t, layout, cfg) = fake_v1("rb-identity");
    // Something that is not a directory where the v2 parent should be.
    fs::write(t.path().join("unified/moat"), "").unwrap();
    let before = subdirs(t.path());
    let e = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap_err();
    assert!(
        matches!(
            e,
            CgroupError::Io {
                operation: Operation::CreateDir,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(subdirs(t.path()), before);
}

#[test]
fn failed_join_into_cgroup_procs_is_reported_with_the_pid() {
    let (_t, layout, cfg) = fake_v1("join-fail");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap();
    inject(Fault::Write, "cgroup.procs", libc::ESRCH);
    let e = wl.join(77).unwrap_err();
    clear_faults();
    assert!(
        e.to_string().starts_with("writing \"77\" to ") && e.to_string().contains("cgroup.procs"),
        "{e}"
    );
    wl.remove().unwrap();
}

#[test]
fn rollback_that_cannot_remove_names_what_is_left() {
    let (t, layout, cfg) = fake_v1("rb-incomplete");
    WorkloadCgroups::create(&layout, &cfg, "old", PidsLimit::Inherit)
        .unwrap()
        .remove()
        .unwrap();
    inject(Fault::Write, "pids.max", libc::EINVAL);
    inject(Fault::Remove, "web", libc::EPERM);
    let e = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap_err();
    clear_faults();
    let CgroupError::RollbackIncomplete { error, left_behind } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(error.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(left_behind.len(), 1);
    assert_eq!(left_behind[0].0, t.path().join("pids/moat/web"));
    assert!(e.to_string().contains("left behind"), "{e}");
}

// ---- open, join, measure, kill, remove ----------------------------------

#[test]
fn open_finds_existing_and_refuses_missing() {
    let (_t, layout, cfg) = fake_v1("open");
    let e = WorkloadCgroups::open(&layout, &cfg, "web").unwrap_err();
    assert!(matches!(e, CgroupError::NotFound { .. }), "{e:?}");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(9)).unwrap();
    let again = WorkloadCgroups::open(&layout, &cfg, "web").unwrap();
    assert_eq!(again.pids_dir(), wl.pids_dir());
    assert_eq!(again.v2_dir(), wl.v2_dir());
    assert_eq!(again.pids_limit().unwrap(), Some(9));
    // open takes no lock: it does not block the live owner's cleanup.
    again.remove().unwrap();
    drop(wl);
    // Half missing is missing.
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(9)).unwrap();
    fs::remove_dir_all(wl.v2_dir()).unwrap();
    assert!(matches!(
        WorkloadCgroups::open(&layout, &cfg, "web"),
        Err(CgroupError::NotFound { .. })
    ));
}

#[test]
fn join_writes_every_cgroup_once() {
    let (_t, layout, cfg) = fake_v1("join-v1");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap();
    wl.join(1234).unwrap();
    assert_eq!(read(wl.pids_dir().join("cgroup.procs")), "1234");
    assert_eq!(read(wl.v2_dir().join("cgroup.procs")), "1234");
    fs::write(wl.v2_dir().join("cgroup.procs"), "").unwrap();
    wl.join_pids_only(99).unwrap();
    assert_eq!(read(wl.pids_dir().join("cgroup.procs")), "99");
    assert_eq!(read(wl.v2_dir().join("cgroup.procs")), "");
    for bad in [0, -1, i32::MIN] {
        assert!(matches!(wl.join(bad), Err(CgroupError::InvalidPid { .. })));
        assert!(matches!(
            wl.join_pids_only(bad),
            Err(CgroupError::InvalidPid { .. })
        ));
    }

    let (_t2, layout, cfg) = fake_v2("join-v2");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(64)).unwrap();
    wl.join(1234).unwrap();
    assert_eq!(read(wl.v2_dir().join("cgroup.procs")), "1234");
    fs::write(wl.v2_dir().join("cgroup.procs"), "").unwrap();
    wl.join_pids_only(55).unwrap(); // no-op: one directory
    assert_eq!(read(wl.v2_dir().join("cgroup.procs")), "");
}

#[test]
fn counters_are_read_from_the_pids_cgroup() {
    let (_t, layout, cfg) = fake_v1("counters");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
    assert_eq!(wl.pids_current().unwrap(), 0);
    assert_eq!(wl.limit_hits().unwrap(), 0);
    assert_eq!(wl.pids_limit().unwrap(), None);
    fs::write(wl.pids_dir().join("pids.current"), "17\n").unwrap();
    fs::write(wl.pids_dir().join("pids.events"), "max 5\n").unwrap();
    assert_eq!(wl.pids_current().unwrap(), 17);
    assert_eq!(wl.limit_hits().unwrap(), 5);
    fs::write(wl.pids_dir().join("pids.events"), "garbage\n").unwrap();
    assert!(matches!(wl.limit_hits(), Err(CgroupError::Parse { .. })));
}

#[test]
fn v2_id_and_fd_name_the_identity_directory() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let (_t, layout, cfg) = fake_v1("id-fd");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
    assert_eq!(
        wl.v2_id().unwrap(),
        fs::metadata(wl.v2_dir()).unwrap().ino()
    );
    let fd = wl.v2_fd().unwrap();
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    assert!(flags & libc::O_PATH != 0 && flags & libc::O_DIRECTORY != 0);
    // SAFETY: as above.
    let fd_flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    assert!(fd_flags & libc::FD_CLOEXEC != 0);
    let target = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    assert_eq!(target, wl.v2_dir());
}

#[test]
fn kill_all_writes_cgroup_kill_and_returns_when_empty() {
    let (_t, layout, cfg) = fake_v1("kill");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
    wl.kill_all().unwrap();
    assert_eq!(read(wl.v2_dir().join("cgroup.kill")), "1");
    assert!(!wl.pids_dir().join("cgroup.kill").exists(), "v1 has none");
}

#[test]
fn kill_all_falls_back_to_sigkill_without_cgroup_kill() {
    use std::os::unix::process::ExitStatusExt;
    let (_t, layout, cfg) = fake_v1("kill-fallback");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
    fs::remove_file(wl.v2_dir().join("cgroup.kill")).unwrap(); // a kernel before 5.14
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let procs = wl.pids_dir().join("cgroup.procs");
    fs::write(&procs, format!("{}\n", child.id())).unwrap();
    // The fake's cgroup.procs does not notice the death; play the kernel.
    let reaper = std::thread::spawn(move || {
        let status = child.wait().unwrap();
        fs::write(&procs, "").unwrap();
        status
    });
    wl.kill_all().unwrap();
    let status = reaper.join().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

#[test]
fn kill_all_skips_pids_that_left_the_cgroup() {
    // A pid listed once but gone from cgroup.procs by the time it is
    // pinned must not be signalled: it may be an unrelated process.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let t = TempTree::new("kill-skip");
    fs::write(t.path().join("cgroup.procs"), "").unwrap();
    sigkill_members(t.path(), &[child.id() as i32]).unwrap();
    assert!(child.try_wait().unwrap().is_none(), "not killed");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn kill_all_times_out_with_the_survivors() {
    let (_t, layout, cfg) = fake_v1("kill-timeout");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
    // A pid that does not exist: never killed, never leaves the fake list.
    let pid = i32::MAX;
    fs::write(wl.pids_dir().join("cgroup.procs"), format!("{pid}\n")).unwrap();
    let e = wl.kill_all().unwrap_err();
    let CgroupError::KillTimeout {
        remaining, waited, ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(remaining, &[pid]);
    assert!(*waited >= KILL_TIMEOUT);
}

#[test]
fn remove_tolerates_missing_dirs_and_keeps_the_parent() {
    let (t, layout, cfg) = fake_v1("remove");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
    fs::remove_dir_all(wl.pids_dir()).unwrap();
    wl.remove().unwrap();
    assert!(t.path().join("pids/moat").is_dir());
    assert!(t.path().join("unified/moat").is_dir());
    assert!(!t.path().join("unified/moat/web").exists());

    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
    inject(Fault::Remove, "web", libc::EPERM);
    let e = wl.remove().unwrap_err();
    clear_faults();
    assert!(
        matches!(
            e,
            CgroupError::Io {
                operation: Operation::RemoveDir,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn remove_takes_cgroups_made_below_the_workloads_with_it() {
    let (t, layout, cfg) = fake_v1("remove-below");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
    for d in [wl.pids_dir().to_owned(), wl.v2_dir().to_owned()] {
        fs::create_dir_all(d.join("a/b")).unwrap();
        for sub in ["a", "a/b"] {
            fs::write(d.join(sub).join("cgroup.procs"), "").unwrap();
        }
    }
    wl.kill_all().unwrap();
    wl.remove().unwrap();
    assert!(!t.path().join("pids/moat/web").exists());
    assert!(!t.path().join("unified/moat/web").exists());
    assert!(t.path().join("pids/moat").is_dir());
}

#[test]
fn kill_all_reaches_members_of_cgroups_below() {
    use std::os::unix::process::ExitStatusExt;
    let (_t, layout, cfg) = fake_v1("kill-below");
    let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let below = wl.pids_dir().join("inner");
    fs::create_dir(&below).unwrap();
    fs::write(below.join("cgroup.procs"), format!("{}\n", child.id())).unwrap();
    // The fake cgroupfs does not drop a killed process from cgroup.procs:
    // empty it once the child is dead, as the kernel would.
    let dir = below.clone();
    let pid = child.id();
    let watcher = std::thread::spawn(move || loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z") {
            fs::write(dir.join("cgroup.procs"), "").unwrap();
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    });
    wl.kill_all().unwrap();
    watcher.join().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
}
