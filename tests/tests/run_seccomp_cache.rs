//! `moat run` with the cache of compiled seccomp filters, end to end on the
//! real kernel: the filter a workload runs under is always the one its
//! profile and capabilities ask for, whatever the cache holds; damaged
//! entries are compiled again; concurrent launches share the cache; an
//! untrusted cache is bypassed, never used, and never stops a launch.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use moat_runtime::seccomp::cache::{self, HEADER_SIZE};
use moat_tests::runenv::{err, RunEnv};

/// uname(2) fails with this profile's errno; everything else is allowed.
fn uname_profile(errno: u32) -> String {
    format!(
        r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["uname"],"action":"SCMP_ACT_ERRNO","errnoRet":{errno}}}]}}"#
    )
}

/// The cache directory of `env` (the default, under its state directory).
fn cache_dir(env: &RunEnv) -> PathBuf {
    env.state().join("cache/seccomp")
}

/// The names in `dir`, sorted; empty when it does not exist.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `moat run [extra] --seccomp-profile P -- uname`, with moat's debug log.
fn run_uname(env: &RunEnv, profile: &Path, extra: &[&str]) -> Output {
    let mut args = extra.to_vec();
    args.extend([
        "--seccomp-profile",
        profile.to_str().unwrap(),
        "--",
        "uname",
    ]);
    env.run_cmd(&args)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run moat")
}

/// What uname(2) did in the workload: the message `uname` printed.
fn uname_verdict(o: &Output) -> &'static str {
    let e = err(o);
    if o.status.success() {
        "allowed"
    } else if e.contains("Permission denied") {
        "EACCES"
    } else if e.contains("Operation not permitted") {
        "EPERM"
    } else {
        panic!("unexpected outcome of uname ({:?}): {e}", o.status)
    }
}

fn from_cache(o: &Output) -> bool {
    err(o).contains("seccomp filter from the cache")
}

#[test]
fn the_filter_always_matches_the_profile_and_capabilities() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("cache-match") else {
        return;
    };
    let p = env.dir.join("p.json");
    std::fs::write(&p, uname_profile(13)).unwrap();
    let o = run_uname(&env, &p, &[]);
    assert_eq!(uname_verdict(&o), "EACCES");
    assert!(!from_cache(&o), "an empty cache gave a filter: {}", err(&o));
    let first = names(&cache_dir(&env));
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(cache::is_entry(&first[0]), "{first:?}");
    let entry = cache_dir(&env).join(&first[0]);
    let (ino, mtime) = {
        let m = std::fs::metadata(&entry).unwrap();
        (m.ino(), m.mtime_nsec())
    };
    assert_eq!(
        std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The same launch again: the same entry serves it, untouched.
    let o = run_uname(&env, &p, &[]);
    assert_eq!(uname_verdict(&o), "EACCES");
    assert!(from_cache(&o), "{}", err(&o));
    let m = std::fs::metadata(&entry).unwrap();
    assert_eq!(
        (m.ino(), m.mtime_nsec()),
        (ino, mtime),
        "a hit rewrote the entry"
    );

    // The profile changes in place: the old entry is never used.
    std::fs::write(&p, uname_profile(1)).unwrap();
    let o = run_uname(&env, &p, &[]);
    assert_eq!(uname_verdict(&o), "EPERM");
    assert!(!from_cache(&o), "{}", err(&o));
    assert_eq!(names(&cache_dir(&env)).len(), 2);

    // Other capabilities make other rules apply: the default profile allows
    // uname whatever the capabilities, but its filter is another one.
    let o = run_uname(&env, &p, &["--cap-drop", "ALL"]);
    assert_eq!(uname_verdict(&o), "EPERM");
    assert!(!from_cache(&o), "{}", err(&o));
    let o = env
        .run_cmd(&["--cap-add", "SYS_ADMIN", "--", "true"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert!(!from_cache(&o), "{}", err(&o));
    let o = env
        .run_cmd(&["--", "true"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert!(!from_cache(&o), "{}", err(&o));
    assert_eq!(names(&cache_dir(&env)).len(), 5);

    // --log-denials installs with another flag: another entry.
    let o = run_uname(&env, &p, &["--log-denials"]);
    assert_eq!(uname_verdict(&o), "EPERM");
    assert!(!from_cache(&o), "{}", err(&o));
    assert_eq!(names(&cache_dir(&env)).len(), 6);
}

#[test]
fn damaged_entries_are_compiled_again_and_the_right_filter_runs() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("cache-damage") else {
        return;
    };
    let p = env.dir.join("p.json");
    std::fs::write(&p, uname_profile(13)).unwrap();
    let o = run_uname(&env, &p, &[]);
    assert_eq!(uname_verdict(&o), "EACCES");
    let [name] = &names(&cache_dir(&env))[..] else {
        panic!("not one entry: {:?}", names(&cache_dir(&env)));
    };
    let entry = cache_dir(&env).join(name);
    let good = std::fs::read(&entry).unwrap();

    // One byte of the program: the EACCES of uname's rule becomes EPERM.
    // The header (with its checksum) is left as it was.
    let eacces = 0x0005_000du32.to_ne_bytes();
    let at = good[HEADER_SIZE..]
        .chunks(8)
        .position(|i| i[4..8] == eacces)
        .expect("the program returns ERRNO(EACCES)");
    let mut tampered = good.clone();
    tampered[HEADER_SIZE + at * 8 + 4] = 1;
    let truncated = good[..good.len() - 8].to_vec();
    let short_header = good[..HEADER_SIZE - 1].to_vec();

    for (what, damaged, why) in [
        ("tampered", tampered, "checksum does not match"),
        ("truncated", truncated, "truncated or extended"),
        (
            "header only",
            short_header,
            "shorter than an entry's header",
        ),
        ("empty", Vec::new(), "shorter than an entry's header"),
    ] {
        std::fs::write(&entry, &damaged).unwrap();
        let o = run_uname(&env, &p, &[]);
        assert_eq!(uname_verdict(&o), "EACCES", "{what}: {}", err(&o));
        assert!(!from_cache(&o), "{what}: {}", err(&o));
        assert!(
            err(&o).contains("seccomp cache entry not used") && err(&o).contains(why),
            "{what}: {}",
            err(&o)
        );
        assert_eq!(std::fs::read(&entry).unwrap(), good, "{what}: not replaced");
        // And the replacement serves the next launch.
        let o = run_uname(&env, &p, &[]);
        assert_eq!(uname_verdict(&o), "EACCES", "{what}");
        assert!(from_cache(&o), "{what}: {}", err(&o));
    }
}

#[test]
fn twenty_concurrent_launches_share_an_empty_cache() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("cache-race") else {
        return;
    };
    let p = env.dir.join("p.json");
    std::fs::write(&p, uname_profile(13)).unwrap();
    let children: Vec<_> = (0..20)
        .map(|i| {
            env.run_cmd(&[
                "--name",
                &format!("race-{i}"),
                "--seccomp-profile",
                p.to_str().unwrap(),
                "--",
                "uname",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert_eq!(uname_verdict(&o), "EACCES", "launch {i}: {}", err(&o));
        assert!(!err(&o).contains("WARN"), "launch {i}: {}", err(&o));
    }
    let left = names(&cache_dir(&env));
    assert_eq!(left.len(), 1, "one entry and no temporary file: {left:?}");
    assert!(cache::is_entry(&left[0]), "{left:?}");
    let bytes = std::fs::read(cache_dir(&env).join(&left[0])).unwrap();
    let digest: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&left[0][2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let entry = cache::decode(&digest.try_into().unwrap(), &bytes).expect("a valid entry");
    assert!(entry.program.len() > 1);
    let o = run_uname(&env, &p, &[]);
    assert_eq!(uname_verdict(&o), "EACCES");
    assert!(from_cache(&o), "{}", err(&o));
}

#[test]
fn an_untrusted_cache_is_bypassed_with_a_warning_and_never_used() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("cache-trust") else {
        return;
    };
    let p = env.dir.join("p.json");
    std::fs::write(&p, uname_profile(13)).unwrap();

    // A good cache, filled by a first launch, with its entry then made to
    // say EPERM (consistently, as whoever controls a directory could).
    let good = env.dir.join("good");
    let o = env
        .run_cmd(&["--seccomp-profile", p.to_str().unwrap(), "--", "uname"])
        .env("MOAT_CACHE_DIR", &good)
        .output()
        .unwrap();
    assert_eq!(uname_verdict(&o), "EACCES");
    let [name] = &names(&good)[..] else {
        panic!("{:?}", names(&good))
    };
    let bytes = std::fs::read(good.join(name)).unwrap();
    let digest: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(&name[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let mut forged = cache::decode(&digest, &bytes).unwrap();
    let eacces = 0x0005_000d;
    for i in forged.program.0.iter_mut().filter(|i| i.k == eacces) {
        i.k = 0x0005_0001;
    }
    let forged = cache::encode(&digest, &forged);

    // Caches whoever is not root could have written.
    let open = env.dir.join("open");
    let theirs = env.dir.join("theirs");
    let link = env.dir.join("link");
    for d in [&open, &theirs] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join(name), &forged).unwrap();
    }
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    let forged_dir = env.dir.join("forged");
    std::fs::create_dir(&forged_dir).unwrap();
    std::fs::set_permissions(&forged_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(forged_dir.join(name), &forged).unwrap();
    std::os::unix::fs::symlink(&forged_dir, &link).unwrap();
    // A forged entry in a trusted directory, but writable by others.
    let loose = env.dir.join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(loose.join(name), &forged).unwrap();
    std::fs::set_permissions(loose.join(name), std::fs::Permissions::from_mode(0o666)).unwrap();

    for (dir, why) in [
        (&open, "writable by group or others"),
        (&theirs, "owned by uid 65534"),
        (&link, "is a symbolic link, not a directory"),
        (&loose, "writable by group or others"),
    ] {
        let o = env
            .run_cmd(&["--seccomp-profile", p.to_str().unwrap(), "--", "uname"])
            .env("MOAT_CACHE_DIR", dir)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        assert_eq!(
            uname_verdict(&o),
            "EACCES",
            "{}: {}",
            dir.display(),
            err(&o)
        );
        assert!(!from_cache(&o), "{}: {}", dir.display(), err(&o));
        assert!(
            err(&o).contains("WARN") && err(&o).contains(why),
            "{}: {}",
            dir.display(),
            err(&o)
        );
    }
    // The forged entries were not replaced through the untrusted paths
    // (only the loose one, in a trusted directory, is compiled over).
    assert_eq!(std::fs::read(forged_dir.join(name)).unwrap(), forged);
    assert_eq!(std::fs::read(open.join(name)).unwrap(), forged);
    assert_ne!(std::fs::read(loose.join(name)).unwrap(), forged);

    // The forged entry itself, in a trusted place, is exactly what the
    // launch would load: the check above is what keeps it out.
    std::fs::write(good.join(name), &forged).unwrap();
    let o = env
        .run_cmd(&["--seccomp-profile", p.to_str().unwrap(), "--", "uname"])
        .env("MOAT_CACHE_DIR", &good)
        .output()
        .unwrap();
    assert_eq!(uname_verdict(&o), "EPERM", "{}", err(&o));
}

#[test]
fn no_cache_compiles_and_stores_nothing() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("cache-off") else {
        return;
    };
    let p = env.dir.join("p.json");
    std::fs::write(&p, uname_profile(13)).unwrap();
    let o = run_uname(&env, &p, &["--no-cache"]);
    assert_eq!(uname_verdict(&o), "EACCES");
    assert!(!cache_dir(&env).exists());
    // A filled cache is not read either.
    let o = run_uname(&env, &p, &[]);
    assert!(!from_cache(&o));
    let o = run_uname(&env, &p, &["--no-cache"]);
    assert_eq!(uname_verdict(&o), "EACCES");
    assert!(!from_cache(&o), "{}", err(&o));
}
