//! Attribution on the real cgroup hierarchies of this host (root only): a moat-style
//! cgroup (under a configurable parent), Docker-style cgroups on v2 and, as Docker's cgroupfs driver makes them on
//! hybrid hosts, on the v1 pids hierarchy only; and the pids cgroups' reading.
//! Everything lives under a `moat-test-<pid>` parent, removed at the end.

mod moatd_common;

use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use moat_agent::{
    collect::attribution::{Attributor, CgroupLayout, HOST, V1_PIDS_ID_FLAG},
    collect::pids,
    config::WorkloadsConfig,
};
use moatd_common::not_root;

const CONTAINER: &str = "feedfacecafe0123456789abcdef0123456789abcdef0123456789abcdef0123";

/// Cgroup directories created by the test, removed (deepest first) on drop, after
/// the processes in them are killed.
#[derive(Default)]
struct Cleanup {
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

impl Cleanup {
    fn mkdir(&mut self, root: &Path, rel: &str) -> PathBuf {
        let mut dir = root.to_owned();
        for part in rel.split('/') {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.dirs.push(dir.clone());
            }
        }
        dir
    }

    /// A sleeping child placed in the cgroup `dir` (its `cgroup.procs`).
    fn child_in(&mut self, dir: &Path) -> u32 {
        let child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        pid
    }
}

/// The cgroup id the kernel reports (`bpf_get_current_cgroup_id()`, and the file
/// handle of the directory): its kernfs node id.
fn kernel_cgroup_id(dir: &Path) -> u64 {
    let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        id: [u8; 8],
    }
    let mut handle = Handle {
        bytes: 8,
        kind: 0,
        id: [0; 8],
    };
    let mut mount_id = 0;
    // SAFETY: `handle` is a file_handle with room for the 8 bytes it declares.
    let ret = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            path.as_ptr(),
            (&mut handle as *mut Handle).cast(),
            &mut mount_id,
            0,
        )
    };
    assert_eq!(ret, 0, "name_to_handle_at {}", dir.display());
    u64::from_ne_bytes(handle.id)
}

fn layout() -> Option<CgroupLayout> {
    let layout = CgroupLayout::detect(Path::new("/sys/fs/cgroup"));
    layout
        .v2_mount
        .join("cgroup.controllers")
        .exists()
        .then_some(layout)
}

/// Workloads under `<parent>/moat` and containers under `<parent>/docker`.
fn workloads_under(parent: &str) -> WorkloadsConfig {
    WorkloadsConfig {
        moat_parent: format!("{parent}/moat"),
        docker_parent: format!("{parent}/docker"),
        docker_scope_parents: vec![format!("{parent}/system.slice")],
        ..Default::default()
    }
}

#[test]
fn moat_and_docker_cgroups_on_v2_are_attributed_by_id() {
    skip_if!(not_root());
    let Some(layout) = layout() else {
        eprintln!("SKIP: no cgroup v2 hierarchy mounted");
        return;
    };
    let parent = format!("moat-test-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    let web = cleanup.mkdir(&layout.v2_mount, &format!("{parent}/moat/web"));
    let docker = cleanup.mkdir(&layout.v2_mount, &format!("{parent}/docker/{CONTAINER}"));
    let scope = cleanup.mkdir(
        &layout.v2_mount,
        &format!("{parent}/system.slice/docker-{CONTAINER}.scope"),
    );
    let unit = cleanup.mkdir(
        &layout.v2_mount,
        &format!("{parent}/system.slice/foo.service"),
    );
    let config = workloads_under(&parent);
    let mut attributor = Attributor::new(&layout, &config);

    // The directory's inode number is the id the kernel reports for the cgroup.
    let web_id = fs::metadata(&web).unwrap().ino();
    assert_eq!(kernel_cgroup_id(&web), web_id);
    let got = attributor.attribute_id(web_id);
    assert_eq!(&*got.workload, "web");
    assert_eq!(
        got.cgroup_path.as_deref(),
        Some(format!("/{parent}/moat/web").as_str())
    );

    for dir in [&docker, &scope] {
        let got = attributor.attribute_id(fs::metadata(dir).unwrap().ino());
        assert_eq!(&*got.workload, "docker:feedfacecafe", "{}", dir.display());
    }
    assert_eq!(
        &*attributor
            .attribute_id(fs::metadata(&unit).unwrap().ino())
            .workload,
        "foo.service"
    );
    let root_id = fs::metadata(&layout.v2_mount).unwrap().ino();
    assert_eq!(&*attributor.attribute_id(root_id).workload, HOST);

    // A process in the cgroup: its /proc/<pid>/cgroup names the same path, and
    // its events are attributed by the id alone.
    let pid = cleanup.child_in(&web);
    let proc_cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        proc_cgroup
            .lines()
            .any(|l| l == format!("0::/{parent}/moat/web")),
        "{proc_cgroup}"
    );
    assert_eq!(&*attributor.attribute_task(pid, web_id).workload, "web");

    // A cgroup removed after it was seen keeps its label (its counters outlive it).
    drop(cleanup);
    assert_eq!(&*attributor.attribute_id(web_id).workload, "web");
}

#[test]
fn containers_only_in_v1_pids_cgroups_are_attributed_by_pid_and_by_pids_id() {
    skip_if!(not_root());
    let Some(layout) = layout() else {
        eprintln!("SKIP: no cgroup v2 hierarchy mounted");
        return;
    };
    let Some(pids_mount) = layout.pids_mount.clone().filter(|m| *m != layout.v2_mount) else {
        eprintln!("SKIP: pids is not on a v1 hierarchy here (not a hybrid host)");
        return;
    };
    let parent = format!("moat-test-{}", std::process::id() as u64 + 1);
    let mut cleanup = Cleanup::default();
    // As Docker's cgroupfs driver does on a hybrid host: v1 cgroups only.
    let container = cleanup.mkdir(&pids_mount, &format!("{parent}/docker/{CONTAINER}"));
    fs::write(container.join("pids.max"), "7").unwrap();
    let pid = cleanup.child_in(&container);
    let config = workloads_under(&parent);
    let mut attributor = Attributor::new(&layout, &config);
    let root_id = fs::metadata(&layout.v2_mount).unwrap().ino();

    // The task's v2 cgroup is the root: counters keyed by it can only say host...
    assert_eq!(&*attributor.attribute_id(root_id).workload, HOST);
    // ...but an event with a pid is attributed from /proc/<pid>/cgroup's v1 lines,
    let got = attributor.attribute_task(pid, root_id);
    assert_eq!(&*got.workload, "docker:feedfacecafe");
    assert_eq!(
        got.cgroup_path.as_deref(),
        Some(format!("/{parent}/docker/{CONTAINER}").as_str())
    );
    // ...and a kernel key naming the v1 pids cgroup is resolved in that hierarchy.
    let pids_id = fs::metadata(&container).unwrap().ino();
    assert_eq!(kernel_cgroup_id(&container), pids_id);
    assert_eq!(
        &*attributor.attribute_id(V1_PIDS_ID_FLAG | pids_id).workload,
        "docker:feedfacecafe"
    );

    // The pids reading finds the container with its limit.
    let reading = pids::scan(
        &pids_mount,
        &moat_agent::collect::attribution::CgroupParents::from_config(&config),
        V1_PIDS_ID_FLAG,
    );
    let found = reading
        .iter()
        .find(|c| c.workload == "docker:feedfacecafe")
        .unwrap_or_else(|| panic!("container not in {reading:?}"));
    assert_eq!(found.current, 1);
    assert_eq!(found.limit, Some(7));
    assert_eq!(found.limit_hits, 0);
    assert_eq!(found.id, V1_PIDS_ID_FLAG | pids_id);
}
