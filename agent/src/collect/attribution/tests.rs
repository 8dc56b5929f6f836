use std::{fs, os::unix::fs::MetadataExt as _, path::PathBuf, time::Duration};

use super::*;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn label(path: &str) -> String {
    classify(path, &CgroupParents::defaults())
}

fn parents(moat: &str, docker: &str, scopes: &[&str]) -> CgroupParents {
    CgroupParents {
        moat: moat.to_owned(),
        docker: docker.to_owned(),
        docker_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        pod_logs: PathBuf::from("/nonexistent"),
    }
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
    assert_eq!(
        classify("/a/b/w1", &parents("a/b", "docker", &["system.slice"])),
        "w1"
    );
    assert_eq!(
        classify(
            &format!("/ci/docker/{ID}"),
            &parents("moat", "ci/docker", &["system.slice"])
        ),
        "docker:0123456789ab"
    );
    assert_eq!(
        classify(
            &format!("/custom.slice/docker-{ID}.scope/init"),
            &parents("moat", "docker", &["custom.slice"])
        ),
        "docker:0123456789ab"
    );
}

#[test]
fn only_dockers_parents_name_containers() {
    // Anyone who may create a cgroup can name it like a container: only the
    // places Docker uses count, anchored at the root.
    for spoof in [
        format!("/evil/docker-{ID}.scope"),
        format!("/user.slice/user-1000.slice/docker-{ID}.scope"),
        format!("/evil/docker/{ID}"),
        format!("/moat/w/docker/{ID}"),
        format!("/docker-{ID}.scope"),
        format!("/system.slice/evil/docker-{ID}.scope"),
    ] {
        assert!(
            !label(&spoof).starts_with("docker:"),
            "{spoof} labelled {}",
            label(&spoof)
        );
    }
    assert_eq!(label(&format!("/moat/w/docker/{ID}")), "w");
}

#[test]
fn proc_cgroup_prefers_pids() {
    let text = format!(
        "12:memory:/process_api/x\n9:name=systemd:/system.slice/ssh.service\n\
         8:pids:/docker/{ID}\n0::/\n"
    );
    let parse = |text: &str| {
        <procfs::ProcessCGroups as procfs::FromBufRead>::from_buf_read(text.as_bytes()).unwrap()
    };
    assert_eq!(
        classify_proc_cgroup(&parse(&text), &CgroupParents::defaults()),
        Some(("docker:0123456789ab".to_owned(), format!("/docker/{ID}")))
    );
    assert_eq!(
        classify_proc_cgroup(&parse("8:pids:/\n0::/\n"), &CgroupParents::defaults()),
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

/// A fresh fake v2 hierarchy `<tmp>/moat-<tag>-XXXXXX/v2` containing `dir`:
/// the temporary directory (removed on drop), the hierarchy and its layout.
fn fake_v2(tag: &str, dir: &str) -> (tempfile::TempDir, PathBuf, CgroupLayout) {
    let root = tempfile::Builder::new()
        .prefix(&format!("moat-{tag}-"))
        .tempdir()
        .unwrap();
    let v2 = root.path().join("v2");
    fs::create_dir_all(v2.join(dir)).unwrap();
    let layout = CgroupLayout {
        v2_mount: v2.clone(),
        pids_mount: None,
    };
    (root, v2, layout)
}

#[test]
fn the_watcher_learns_cgroups_removed_before_they_are_looked_up() {
    let (_root, v2, layout) = fake_v2("watch", "moat");
    let mut attributor = Attributor::new(&layout, &WorkloadsConfig::default());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = CgroupWatcher::spawn(attributor.watched_dirs(), false, tx).unwrap();
    // Give the thread time to add its watch.
    std::thread::sleep(Duration::from_millis(300));
    fs::create_dir(v2.join("moat/brief")).unwrap();
    let id = fs::metadata(v2.join("moat/brief")).unwrap().ino();
    std::thread::sleep(Duration::from_millis(300));
    fs::remove_dir(v2.join("moat/brief")).unwrap();
    while let Ok(event) = rx.try_recv() {
        attributor.apply(event);
    }
    let got = attributor.attribute_id(id);
    assert_eq!(&*got.workload, "brief");
    watcher.stop();
}

#[test]
fn resolves_a_fake_hierarchy_by_inode() {
    let (_root, v2, layout) = fake_v2("attr", "moat/web");
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
}

#[test]
fn moat_scopes_in_moat_slice_are_their_workload() {
    // `moat run`'s systemd cgroup manager: moat.slice/moat-NAME.scope.
    assert_eq!(label("/moat.slice/moat-web.scope"), "web");
    assert_eq!(label("/moat.slice/moat-web.1.scope/sub"), "web.1");
    assert_eq!(label("/moat.slice/moat-ci.slice/moat-job-7.scope"), "job-7");
    // The slice itself, and what else is in it, are not workloads.
    assert_eq!(label("/moat.slice"), HOST);
    assert_eq!(label("/moat.slice/other.scope"), "other.scope");
    // Anchored at the root: a scope of that name made elsewhere (a user's
    // manager, a delegated subtree) is labelled by its unit, not taken for
    // workload "web".
    assert_eq!(
        label("/user.slice/user-1000.slice/user@1000.service/app.slice/moat-web.scope"),
        "moat-web.scope"
    );
    assert_eq!(
        label("/system.slice/moat.slice/moat-web.scope"),
        "moat-web.scope"
    );
    assert_eq!(
        label("/moat.slice/x.slice/moat-web.scope"),
        "moat-web.scope"
    );
    assert_eq!(label("/moat.slice/moat-.scope"), "moat-.scope");
    // Units stay units.
    assert_eq!(label("/system.slice/web.service"), "web.service");
}

#[test]
fn the_watcher_learns_a_scopes_payload_made_right_after_the_scope() {
    // systemd makes moat-NAME.scope; moat makes payload in it at once. The
    // payload is where the workload runs (its cgroup id), and may be gone
    // before anything looks its id up.
    let (_root, v2, layout) = fake_v2("watch-scope", "moat.slice");
    let mut attributor = Attributor::new(&layout, &WorkloadsConfig::default());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = CgroupWatcher::spawn(attributor.watched_dirs(), false, tx).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = Vec::new();
    for name in ["quick", "slow"] {
        let scope = v2.join(format!("moat.slice/moat-{name}.scope"));
        fs::create_dir(&scope).unwrap();
        if name == "slow" {
            // Made after the watcher watches the scope.
            std::thread::sleep(Duration::from_millis(300));
        }
        fs::create_dir(scope.join("payload")).unwrap();
        ids.push(fs::metadata(scope.join("payload")).unwrap().ino());
    }
    std::thread::sleep(Duration::from_millis(300));
    for name in ["quick", "slow"] {
        let scope = v2.join(format!("moat.slice/moat-{name}.scope"));
        fs::remove_dir(scope.join("payload")).unwrap();
        fs::remove_dir(scope).unwrap();
    }
    while let Ok(event) = rx.try_recv() {
        attributor.apply(event);
    }
    assert_eq!(&*attributor.attribute_id(ids[0]).workload, "quick");
    assert_eq!(&*attributor.attribute_id(ids[1]).workload, "slow");
    watcher.stop();
}

#[test]
fn a_cgroup_too_new_for_the_last_walk_is_waited_for_not_called_host() {
    let (_root, v2, layout) = fake_v2("wait", "moat/old");
    let mut attributor = Attributor::new(&layout, &WorkloadsConfig::default())
        .with_min_rewalk(Duration::from_millis(400));
    let old = fs::metadata(v2.join("moat/old")).unwrap().ino();
    assert_eq!(
        attributor.walk_wait(old),
        None,
        "never walked: a lookup walks"
    );
    attributor.refresh();
    assert_eq!(attributor.walk_wait(old), None, "known");
    // Made right after a walk: a lookup now could not walk, and would say host.
    fs::create_dir(v2.join("moat/new")).unwrap();
    let new = fs::metadata(v2.join("moat/new")).unwrap().ino();
    let wait = attributor.walk_wait(new).expect("a wait for the next walk");
    assert!(wait <= Duration::from_millis(400), "{wait:?}");
    std::thread::sleep(wait);
    assert_eq!(attributor.walk_wait(new), None, "a walk is allowed now");
    assert_eq!(&*attributor.attribute_id(new).workload, "new");
    // An id found gone by a walk is not waited for again.
    let gone = u64::MAX >> 3;
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(&*attributor.attribute_id(gone).workload, HOST);
    assert_eq!(attributor.walk_wait(gone), None);
}

#[test]
fn a_task_in_a_cgroup_deeper_than_path_max_is_attributed_from_proc() {
    // The v2 line of /proc/<pid>/cgroup names a path longer than PATH_MAX:
    // its inode is checked in steps, not with one stat(2) that fails.
    let segment = "d".repeat(200);
    let deep: Vec<String> = (0..24).map(|_| segment.clone()).collect();
    let rel = format!("/moat/deepwl/{}", deep.join("/"));
    let (root, v2, layout) = fake_v2("deep-proc", "moat/deepwl");
    let proc_root = root.path().join("proc");
    // Walked just before the cgroup was made: a lookup cannot walk again for
    // a minute, so only /proc can tell.
    let mut attributor = Attributor::new(&layout, &WorkloadsConfig::default())
        .with_min_rewalk(Duration::from_secs(60))
        .with_proc_root(proc_root.clone());
    attributor.refresh();
    let mut dir = std::fs::File::open(v2.join("moat/deepwl")).unwrap();
    for part in &deep {
        nix::sys::stat::mkdirat(
            &dir,
            part.as_str(),
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        )
        .unwrap();
        let next = nix::fcntl::openat(
            &dir,
            part.as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        dir = std::fs::File::from(next);
    }
    let id = nix::sys::stat::fstat(&dir).unwrap().st_ino;
    assert!(v2.as_os_str().len() + rel.len() > 4096);
    fs::create_dir_all(proc_root.join("42")).unwrap();
    fs::write(proc_root.join("42/cgroup"), format!("0::{rel}\n")).unwrap();
    let got = attributor.attribute_task(42, id);
    assert_eq!(&*got.workload, "deepwl");
    assert_eq!(got.cgroup_path.as_deref(), Some(rel.as_str()));
}

#[test]
fn kubelet_pods_are_named_from_synthetic_cgroup_trees_of_either_driver() {
    const POD_A: &str = "6b9d3c1e-8f2a-4d5b-9c7e-0a1b2c3d4e5f";
    const POD_B: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
    let b_ = POD_B.replace('-', "_");
    let (root, v2, layout) = fake_v2("k8s", "kubepods");
    let logs = root.path().join("pods");
    fs::create_dir_all(logs.join(format!("kube-system_coredns-7db6d8ff4d-abcde_{POD_A}"))).unwrap();
    fs::create_dir_all(logs.join(format!("shop_web-0_{POD_B}"))).unwrap();
    let config = WorkloadsConfig {
        kubernetes_pod_logs: logs,
        ..WorkloadsConfig::default()
    };
    let cgroupfs = format!("kubepods/burstable/pod{POD_A}/{ID}");
    let systemd = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{b_}.slice/cri-containerd-{ID}.scope"
    );
    let unknown = "kubepods/pod11111111-2222-3333-4444-555555555555";
    let impostor = format!("moat/kubepods/pod{POD_A}");
    for dir in [&cgroupfs, &systemd, unknown, &impostor] {
        fs::create_dir_all(v2.join(dir)).unwrap();
    }
    let mut attributor = Attributor::new(&layout, &config).with_min_rewalk(Duration::ZERO);
    let workload = |attributor: &mut Attributor, dir: &str| {
        let id = fs::metadata(v2.join(dir)).unwrap().ino();
        attributor.attribute_id(id).workload.to_string()
    };
    assert_eq!(
        workload(&mut attributor, &cgroupfs),
        "k8s:kube-system/coredns-7db6d8ff4d-abcde"
    );
    assert_eq!(workload(&mut attributor, &systemd), "k8s:shop/web-0");
    // The pod's own cgroup, above its containers', is the pod too.
    assert_eq!(
        workload(&mut attributor, &format!("kubepods/burstable/pod{POD_A}")),
        "k8s:kube-system/coredns-7db6d8ff4d-abcde"
    );
    assert_eq!(
        workload(&mut attributor, unknown),
        "k8s:11111111-2222-3333-4444-555555555555"
    );
    // Not at the root: moat workload "kubepods", not the pod.
    assert_eq!(workload(&mut attributor, &impostor), "kubepods");
    assert_eq!(workload(&mut attributor, "kubepods"), HOST);
}
