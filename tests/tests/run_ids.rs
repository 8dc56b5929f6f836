//! Attacks on the ids a workload runs as (issue 9, item 2): `(uid_t)-1`
//! makes `setresuid`/`setresgid` leave the id unchanged, so a workload asked
//! to run as "-1" kept moat's uid or gid 0: host root without a user
//! namespace, host kuid 0 inside one whose map leaves it unmapped. Each test
//! is the attack; it succeeded before the fix (the workload ran as root)
//! and is refused after it, before anything starts.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use moat_tests::runenv::{stderr, stdout, RunEnv};

/// Asserts a refused launch: exit 125, the message names `--user`, and no
/// cgroup or record is left behind.
fn assert_refused(env: &RunEnv, o: &std::process::Output, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(125), "{}{}", stdout(o), stderr(o));
    let e = stderr(o);
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    for n in needles {
        assert!(e.contains(n), "{n:?} not in: {e}");
    }
    assert_eq!(env.cgroups_under_parent(), Vec::<String>::new());
    assert_eq!(env.record_files(), Vec::<String>::new());
}

/// A root-owned file with `mode`, holding "original\n".
fn root_file(env: &RunEnv, name: &str, mode: u32) -> std::path::PathBuf {
    let f = env.dir.join(name);
    std::fs::write(&f, "original\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    f
}

fn read(f: &Path) -> String {
    std::fs::read_to_string(f).unwrap()
}

#[test]
fn uid_minus_one_does_not_run_as_root() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("uidm1") else {
        return;
    };
    let o = env.run(&["--name", "m1", "--user", "4294967295", "--", "id", "-u"]);
    assert_ne!(stdout(&o), "0\n", "ATTACK: the workload ran as uid 0");
    assert_refused(&env, &o, &["--user", "uid 4294967295", "(uid_t)-1"]);
}

#[test]
fn gid_minus_one_does_not_run_as_group_root() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("gidm1") else {
        return;
    };
    let o = env.run(&["--user", "1000:4294967295", "--", "id", "-g"]);
    assert_ne!(stdout(&o), "0\n", "ATTACK: the workload ran as gid 0");
    assert_refused(&env, &o, &["--user", "gid 4294967295", "(gid_t)-1"]);
}

/// In `--userns auto` the unchanged uid is the host's kuid 0, unmapped in
/// the namespace: the owner of every root-owned file.
#[test]
fn uid_minus_one_in_an_auto_namespace_is_not_host_root() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("autom1") else {
        return;
    };
    let f = root_file(&env, "root-only", 0o600);
    let script = format!("echo pwned > {}", f.display());
    let o = env.run(&[
        "--userns",
        "auto",
        "--user",
        "4294967295",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(
        read(&f),
        "original\n",
        "ATTACK: host root's file overwritten"
    );
    assert_refused(&env, &o, &["--user", "uid 4294967295"]);
}

/// An explicit map that leaves gid 0 unmapped, and gid -1: the workload
/// kept the host's kgid 0 and read a file only group root may read.
#[test]
fn gid_minus_one_with_an_explicit_map_is_not_host_group_root() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("mapm1") else {
        return;
    };
    let f = root_file(&env, "group-root-only", 0o040);
    let map = format!("1000:{}:1", env.subid_start);
    let o = env.run(&[
        "--userns",
        &map,
        "--user",
        "1000:4294967295",
        "--",
        "cat",
        f.to_str().unwrap(),
    ]);
    assert!(
        !stdout(&o).contains("original"),
        "ATTACK: read a group-root file"
    );
    assert_refused(&env, &o, &["--user", "gid 4294967295"]);
}

#[test]
fn ids_the_user_namespace_does_not_map_are_refused_before_anything_starts() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("unmapped") else {
        return;
    };
    let start = env.subid_start;
    let o = env.run(&["--userns", "auto", "--user", "65536", "--", "true"]);
    assert_refused(
        &env,
        &o,
        &["--user", "uid 65536 is not mapped", "0:", ":65536"],
    );
    let map = format!("0:{start}:1000");
    let o = env.run(&["--userns", &map, "--user", "0:5000", "--", "true"]);
    assert_refused(&env, &o, &["gid 5000 is not mapped", &map]);
    // No --user means uid 0, which this map leaves out.
    let map = format!("1000:{start}:1");
    let o = env.run(&["--userns", &map, "--", "true"]);
    assert_refused(&env, &o, &["uid 0 is not mapped"]);
    // Refused before the id range was taken: the next auto workload gets
    // the lowest slot.
    let o = env.run(&["--userns", "auto", "--", "cat", "/proc/self/uid_map"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).split_whitespace().collect::<Vec<_>>(),
        ["0", &start.to_string(), "65536"]
    );
}

#[test]
fn user_is_a_plain_decimal_uid_and_gid() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("userfmt") else {
        return;
    };
    for bad in [
        "+1000",
        " 1000",
        "1000 ",
        "1000:",
        ":1000",
        "-1",
        "0x10",
        "1000:2000:3",
        "",
        "4294967296",
    ] {
        let o = env.run(&[&format!("--user={bad}"), "--", "true"]);
        assert_eq!(o.status.code(), Some(125), "{bad:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains(&format!("invalid --user {bad:?}")),
            "{bad:?}: {e}"
        );
        assert_eq!(env.record_files(), Vec::<String>::new());
    }
    let o = env.run(&["--user", "0001:02", "--", "id", "-u"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "1\n");
}

/// With `--allow-new-privileges` the filter goes in before the ids are
/// set, so a profile can make `setresuid` "succeed" without doing anything
/// (errno 0). The child checks what it got.
#[test]
fn a_profile_that_fakes_the_id_calls_cannot_keep_root() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("fakeids") else {
        return;
    };
    for (call, show) in [
        ("setresuid", "-u"),
        ("setresgid", "-g"),
        ("setgroups", "-G"),
    ] {
        let p = env.dir.join(&format!("fake-{call}.json"));
        std::fs::write(
            &p,
            format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["{call}"],"action":"SCMP_ACT_ERRNO","errnoRet":0}}]}}"#
            ),
        )
        .unwrap();
        let mut cmd = env.run_cmd(&[
            "--allow-new-privileges",
            "--seccomp-profile",
            p.to_str().unwrap(),
            "--user",
            "1000:1000",
            "--",
            "id",
            show,
        ]);
        // moat itself holds supplementary group 0, which a faked setgroups
        // would pass on.
        // SAFETY: setgroups(2) between fork and exec, on a local array.
        unsafe {
            cmd.pre_exec(|| {
                let groups = [0 as libc::gid_t, 27];
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let o = cmd.output().unwrap();
        let ids = stdout(&o);
        assert!(
            !ids.split_whitespace().any(|id| id == "0"),
            "ATTACK: faked {call}: id {show} printed {ids:?}"
        );
        assert_eq!(o.status.code(), Some(125), "{call}: {ids}{}", stderr(&o));
        assert!(
            stderr(&o).contains("failed in the workload before it started"),
            "{call}: {}",
            stderr(&o)
        );
    }
}
