//! A pids cgroup removed with refused forks on its count leaves that count
//! behind (the `cgroup_rmdir` program), exactly as `pids.events` showed it last,
//! keyed like the counters and with its path; cgroups without refusals, and
//! cgroups of other hierarchies, leave nothing. On a hybrid host (pids on v1)
//! and on a pure v2 host (the kernel lab), where the counter read differs by
//! kernel: `events_limit` before 6.12, `events[PIDCG_MAX]` since.

mod kernel_common;

use std::{fs, os::unix::fs::MetadataExt as _, path::Path};

use kernel_common::{spawn_in, v2_root, TestCgroup};
use moat_agent::kernel::{Kernel, KernelSource};
use moat_common::V1_PIDS_ID_FLAG;

/// The `max` count of a `pids.events` file.
fn events_max(dir: &Path) -> u64 {
    moat_agent::collect::pids::parse_events_max(
        &fs::read_to_string(dir.join("pids.events")).unwrap_or_default(),
    )
}

/// Forks 6 times in `limited` (`pids.max` 2, holding the forking process):
/// one fork succeeds, five are refused; then removes `limited`, `quiet` (a
/// limit never reached) and `other` (another hierarchy, if any) and checks
/// that only `limited` is returned, once, with `key`, its path and the count
/// `pids.events` last showed.
fn removed_cgroup_leaves_its_count(
    kernel: &Kernel,
    limited: TestCgroup,
    quiet: TestCgroup,
    other: Option<TestCgroup>,
    key: u64,
) {
    let mut child = spawn_in(&[&limited], |shared| {
        let mut refused = 0;
        let mut kids = Vec::new();
        for _ in 0..6 {
            // SAFETY: fork; the child waits to be killed.
            match unsafe { libc::fork() } {
                0 => loop {
                    // SAFETY: pause until killed.
                    unsafe { libc::pause() };
                },
                -1 => refused += 1,
                pid => kids.push(pid),
            }
        }
        for pid in kids {
            // SAFETY: our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        kernel_common::report(shared, 0, refused);
        0
    });
    child.wait_success();
    let quiet_members: Vec<&TestCgroup> = std::iter::once(&quiet).chain(other.as_ref()).collect();
    let mut other_child = spawn_in(&quiet_members, |_| 0);
    other_child.wait_success();
    assert_eq!(child.value(0), 5, "refused forks");
    let last_read = events_max(&limited.path);
    assert_eq!(last_read, 5, "pids.events before the removal");
    let name = limited
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    drop(limited);
    drop(quiet);
    drop(other);

    let retired = kernel.retired_pids().unwrap();
    let ours: Vec<_> = retired.iter().filter(|r| r.cgroup_id == key).collect();
    assert_eq!(ours.len(), 1, "{retired:?}");
    assert_eq!(ours[0].hits, last_read);
    assert_eq!(ours[0].path.as_deref(), Some(format!("/{name}").as_str()));
    // Only cgroups with refusals are kept, and each is returned once.
    assert!(retired.iter().all(|r| r.hits > 0), "{retired:?}");
    assert!(kernel
        .retired_pids()
        .unwrap()
        .iter()
        .all(|r| r.cgroup_id != key));
}

#[test]
fn a_removed_v1_pids_cgroup_leaves_its_final_count_of_refused_forks() {
    skip_unless_privileged!();
    if !Path::new("/sys/fs/cgroup/pids/tasks").exists() {
        eprintln!("SKIP: pids is not on a v1 hierarchy here");
        return;
    }
    let kernel = Kernel::load(kernel_common::config()).expect("loading the kernel side");
    // Anything removed before this test's cgroups is someone else's.
    kernel.retired_pids().unwrap();

    let limited = TestCgroup::v1_pids("retired", 2);
    let quiet = TestCgroup::v1_pids("retired-quiet", 100);
    let other = TestCgroup::v2("retired-v2");
    let key = V1_PIDS_ID_FLAG | fs::metadata(&limited.path).unwrap().ino();
    removed_cgroup_leaves_its_count(&kernel, limited, quiet, Some(other), key);
}

#[test]
fn a_removed_v2_pids_cgroup_leaves_its_final_count_of_refused_forks() {
    skip_unless_privileged!();
    if Path::new("/sys/fs/cgroup/pids/tasks").exists() {
        eprintln!("SKIP: pids is on a v1 hierarchy here, not on cgroup v2");
        return;
    }
    let subtree = fs::read_to_string(v2_root().join("cgroup.subtree_control")).unwrap_or_default();
    if !subtree.split_whitespace().any(|c| c == "pids") {
        eprintln!("SKIP: pids is not enabled for the cgroup v2 root's children");
        return;
    }
    let kernel = Kernel::load(kernel_common::config()).expect("loading the kernel side");
    kernel.retired_pids().unwrap();

    let limited = TestCgroup::v2_pids("retired", 2);
    let quiet = TestCgroup::v2_pids("retired-quiet", 100);
    // A v2 cgroup's id is its directory's inode number, with no flag.
    let key = limited.id();
    removed_cgroup_leaves_its_count(&kernel, limited, quiet, None, key);
}
