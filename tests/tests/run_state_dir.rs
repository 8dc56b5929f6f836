//! Attacks through the state directory (issue 9, item 8) and the sub-id
//! files: moat followed a symlink planted at a record's temporary name and
//! overwrote its target; a FIFO made `moat run` and `moat ps` hang holding
//! the lock; a device or a huge file made `moat ps` read gigabytes; a state
//! directory or sub-id file others can write was used as it was.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use moat_tests::runenv::{run_bounded, stderr, stdout, Bounded, RunEnv};

/// How long `moat ps` or a refused `moat run` may take here.
const QUICK: Duration = Duration::from_secs(10);
/// What `moat ps` may use at its peak (it uses about 8 MiB).
const SMALL_RSS_KIB: i64 = 64 * 1024;

/// Creates the state directory's layout, as a first `moat run` does.
fn init_state(env: &RunEnv) {
    let o = env.run(&["--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// `/dev/zero`'s device node at `path`.
fn mknod_zero(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string; makedev(1, 5) is /dev/zero.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 5)) };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
}

fn ps(env: &RunEnv) -> Bounded {
    let mut c = env.cmd();
    c.arg("ps");
    run_bounded(c, QUICK)
}

/// Asserts that a command ended in time, without reading much, and said
/// `needles` on stderr.
fn assert_quick(what: &str, b: &Bounded, needles: &[&str]) {
    assert!(
        b.status.is_some(),
        "ATTACK: {what} hung (killed after {QUICK:?}); stderr: {}",
        b.stderr
    );
    assert!(
        b.max_rss_kib < SMALL_RSS_KIB,
        "ATTACK: {what} used {} MiB",
        b.max_rss_kib / 1024
    );
    for n in needles {
        assert!(b.stderr.contains(n), "{what}: {n:?} not in: {}", b.stderr);
    }
}

#[test]
fn symlinks_at_temporary_names_are_not_followed() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("sd-tmp") else {
        return;
    };
    init_state(&env);
    let victim = env.dir.join("victim");
    std::fs::write(&victim, "victim\n").unwrap();
    for sub in ["workloads", "exits"] {
        symlink(&victim, env.state().join(sub).join(".web.json.tmp")).unwrap();
    }
    let o = env.run(&["--name", "web", "--", "true"]);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "victim\n",
        "ATTACK: moat wrote a record through a symlink"
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let exit = std::fs::symlink_metadata(env.state().join("exits/web.json")).unwrap();
    assert!(exit.file_type().is_file());
}

#[test]
fn a_fifo_record_does_not_hang_ps_or_run() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("sd-fifo") else {
        return;
    };
    init_state(&env);
    mkfifo(&env.state().join("workloads/f.json"));
    assert_quick("moat ps", &ps(&env), &["f.json", "FIFO"]);
    let run = run_bounded(env.run_cmd(&["--", "true"]), QUICK);
    assert_quick("moat run", &run, &["f.json", "FIFO"]);
    assert_eq!(run.status.and_then(|s| s.code()), Some(125));
}

#[test]
fn a_device_or_a_symlink_as_a_record_is_not_read() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("sd-dev") else {
        return;
    };
    init_state(&env);
    let w = env.state().join("workloads");
    mknod_zero(&w.join("z.json"));
    assert_quick("moat ps", &ps(&env), &["z.json", "character device"]);
    std::fs::remove_file(w.join("z.json")).unwrap();
    symlink("/dev/zero", w.join("s.json")).unwrap();
    assert_quick("moat ps", &ps(&env), &["s.json", "symbolic link"]);
    let run = run_bounded(env.run_cmd(&["--", "true"]), QUICK);
    assert_quick("moat run", &run, &["s.json", "symbolic link"]);
    assert_eq!(run.status.and_then(|s| s.code()), Some(125));
}

#[test]
fn an_oversize_record_is_not_read() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("sd-big") else {
        return;
    };
    init_state(&env);
    let big = env.state().join("workloads/big.json");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(1 << 30).unwrap(); // sparse: costs no disk
    drop(f);
    let b = ps(&env);
    assert_quick("moat ps", &b, &["big.json", "1073741824 bytes"]);
    assert_eq!(b.status.and_then(|s| s.code()), Some(0), "{}", b.stderr);
}

/// A state directory that someone else could have prepared, or could
/// change under moat, is refused before anything starts.
#[test]
fn a_state_directory_others_can_write_is_refused() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("sd-perm") else {
        return;
    };
    let state = env.state();
    let refused = |why: &str| {
        let o = env.run(&["--name", "p", "--", "true"]);
        assert_eq!(
            o.status.code(),
            Some(125),
            "{why}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stderr(&o).contains(why), "{why}: {}", stderr(&o));
        assert_eq!(env.cgroups_under_parent(), Vec::<String>::new());
        let ps = env.cmd().arg("ps").output().unwrap();
        assert!(!ps.status.success(), "moat ps used it");
        assert!(stderr(&ps).contains(why), "{why}: {}", stderr(&ps));
    };
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused("writable by group or others");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
    refused("owned by uid 65534");
    std::os::unix::fs::chown(&state, Some(0), None).unwrap();

    // A sub-directory others can write, or a symlink in its place.
    init_state(&env);
    let w = state.join("workloads");
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o733)).unwrap();
    refused("writable by group or others");
    std::fs::remove_dir(&w).unwrap();
    let elsewhere = env.dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&elsewhere, &w).unwrap();
    refused("symbolic link");
    std::fs::remove_file(&w).unwrap();

    // The state directory itself a symlink.
    let real = env.dir.join("real-state");
    std::fs::rename(&state, &real).unwrap();
    symlink(&real, &state).unwrap();
    refused("symbolic link");
}

#[test]
fn a_lock_file_that_is_not_a_regular_file_is_refused() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("sd-lock") else {
        return;
    };
    init_state(&env);
    let lock = env.state().join("lock");
    let target = env.dir.join("lock-target");
    std::fs::write(&target, "").unwrap();
    std::fs::remove_file(&lock).unwrap();
    symlink(&target, &lock).unwrap();
    let o = env.run(&["--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("lock") && stderr(&o).contains("symbolic link"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(&lock).unwrap();
    mkfifo(&lock);
    let run = run_bounded(env.run_cmd(&["--", "true"]), QUICK);
    assert_quick("moat run", &run, &["lock", "FIFO"]);
}

/// Whoever can write the sub-id files decides which host ids `--userns
/// auto` hands out: a world-writable one could map host root into the
/// workload. A FIFO there made `moat run` hang.
#[test]
fn sub_id_files_others_can_write_or_that_hang_are_refused() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("sd-subid") else {
        return;
    };
    let target = env.dir.join("root-only");
    std::fs::write(&target, "original\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    for f in ["subuid", "subgid"] {
        std::fs::write(env.dir.join(f), "moat:0:65536\n").unwrap();
        std::fs::set_permissions(env.dir.join(f), std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let script = format!("echo pwned > {}", target.display());
    let o = env.run(&["--userns", "auto", "--", "sh", "-c", &script]);
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "original\n",
        "ATTACK: a world-writable subuid file mapped host root into the workload"
    );
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("subuid") && e.contains("writable by group or others"),
        "{e}"
    );

    std::fs::remove_file(env.dir.join("subuid")).unwrap();
    mkfifo(&env.dir.join("subuid"));
    let run = run_bounded(env.run_cmd(&["--userns", "auto", "--", "true"]), QUICK);
    assert_quick("moat run", &run, &["subuid", "FIFO"]);
    assert_eq!(run.status.and_then(|s| s.code()), Some(125));
}
