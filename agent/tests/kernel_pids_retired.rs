//! A pids cgroup removed with refused forks on its count leaves that count
//! behind (the `cgroup_rmdir` program), exactly as `pids.events` showed it last,
//! keyed like the counters and with its path; cgroups without refusals, and
//! cgroups of other hierarchies, leave nothing.

mod kernel_common;

use std::{fs, os::unix::fs::MetadataExt as _, path::Path};

use kernel_common::{spawn_in, TestCgroup};
use moat_agent::kernel::{Kernel, KernelSource};
use moat_common::V1_PIDS_ID_FLAG;

/// The `max` count of a `pids.events` file.
fn events_max(dir: &Path) -> u64 {
    moat_agent::collect::pids::parse_events_max(
        &fs::read_to_string(dir.join("pids.events")).unwrap_or_default(),
    )
}

#[test]
fn a_removed_pids_cgroup_leaves_its_final_count_of_refused_forks() {
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
    // In the limited cgroup a process (1 of 2) tries 6 forks: one succeeds
    // (its child waits), five are refused, each counted once by the kernel.
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
    let mut other_child = spawn_in(&[&quiet, &other], |_| 0);
    other_child.wait_success();
    assert_eq!(child.value(0), 5, "refused forks");
    let last_read = events_max(&limited.path);
    assert_eq!(last_read, 5, "pids.events before the removal");
    let key = V1_PIDS_ID_FLAG | fs::metadata(&limited.path).unwrap().ino();
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
