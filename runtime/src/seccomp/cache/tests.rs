//! The cache against a real directory: what is found, what is never
//! found, what is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::seccomp::bpf::{SeccompData, Verdict};
use crate::seccomp::{builtin, parse, resolve_for_host};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("moat-cache-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn resolved(json: Option<&str>, caps: &CapSet) -> (Resolved, Host) {
    let (profile, source) = match json {
        None => (builtin::default_profile().unwrap(), builtin::SOURCE),
        Some(j) => (
            parse::from_str(j, crate::seccomp::Source::Stdin).unwrap(),
            crate::seccomp::Source::Stdin,
        ),
    };
    resolve_for_host(&profile, source, caps).unwrap()
}

fn key(json: Option<&str>, caps: &CapSet) -> Key {
    let (r, h) = resolved(json, caps);
    Key::new(&r, caps, &h, Options::default(), 0).unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

const GETPPID_EACCES: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
    {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#;

fn getppid_verdict(e: &Entry) -> Verdict {
    let data = SeccompData {
        nr: libc::SYS_getppid as i32,
        arch: 0xc000_003e,
        ..Default::default()
    };
    Verdict::from_ret(e.program.evaluate(&data).unwrap())
}

#[test]
fn a_compiled_filter_is_found_again_as_it_was() {
    let dir = tmp("hit");
    let caps = CapSet::docker_default();
    let (r, h) = resolved(None, &caps);
    let (first, origin) = compile_cached(&r, &caps, &h, Options::default(), 0, Some(&dir)).unwrap();
    assert_eq!(origin, Origin::Compiled);
    let (second, origin) =
        compile_cached(&r, &caps, &h, Options::default(), 0, Some(&dir)).unwrap();
    assert_eq!(origin, Origin::Cache);
    assert_eq!(second, first);
    let (plain, _) = compile_cached(&r, &caps, &h, Options::default(), 0, None).unwrap();
    assert_eq!(plain, first);
    let names = entries(&dir);
    assert_eq!(names, [file_name(&key(None, &caps).digest())]);
    let mode = std::fs::metadata(dir.join(&names[0]))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_changed_profile_caps_or_libseccomp_never_hits_an_old_entry() {
    let dir = tmp("miss");
    let cache = CacheDir::open(&dir).unwrap();
    let caps = CapSet::docker_default();
    let old = key(None, &caps);
    let marker = Entry {
        program: crate::seccomp::bpf::Program(vec![crate::seccomp::bpf::SockFilter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        }]),
        flags: 0,
    };
    cache.write(&old.digest(), &marker).unwrap();
    assert_eq!(cache.read(&old.digest()).unwrap(), Some(marker));

    let other_profile = key(Some(GETPPID_EACCES), &caps);
    let other_caps = key(None, &CapSet::all());
    let other_libseccomp = Key {
        libseccomp: "2.6.0 api 7".into(),
        ..old.clone()
    };
    let other_kernel = Key {
        kernel: format!("{} (rebuilt)", old.kernel),
        ..old.clone()
    };
    let logged = Key {
        install_flags: libc::SECCOMP_FILTER_FLAG_LOG as u32,
        ..old.clone()
    };
    for k in [
        &other_profile,
        &other_caps,
        &other_libseccomp,
        &other_kernel,
        &logged,
    ] {
        assert_ne!(k.digest(), old.digest());
        assert_eq!(cache.read(&k.digest()).unwrap(), None, "{k:?}");
    }
    // Through the whole path too: a different profile compiles its own.
    let (r, h) = resolved(Some(GETPPID_EACCES), &caps);
    let (e, origin) = compile_cached(&r, &caps, &h, Options::default(), 0, Some(&dir)).unwrap();
    assert_eq!(origin, Origin::Compiled);
    assert_eq!(getppid_verdict(&e), Verdict::Errno(13));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_renamed_entry_is_not_taken_for_another_key() {
    let dir = tmp("renamed");
    let caps = CapSet::docker_default();
    let (r, h) = resolved(Some(GETPPID_EACCES), &caps);
    compile_cached(&r, &caps, &h, Options::default(), 0, Some(&dir)).unwrap();
    let theirs = key(Some(GETPPID_EACCES), &caps).digest();
    let mine = key(None, &caps).digest();
    std::fs::rename(dir.join(file_name(&theirs)), dir.join(file_name(&mine))).unwrap();
    let cache = CacheDir::open(&dir).unwrap();
    let e = cache.read(&mine).unwrap_err().to_string();
    assert!(e.ends_with("it is the entry of another key"), "{e}");
    // compile_cached compiles the right filter and replaces the entry.
    let (r, h) = resolved(None, &caps);
    let (e, origin) = compile_cached(&r, &caps, &h, Options::default(), 0, Some(&dir)).unwrap();
    assert_eq!(origin, Origin::Compiled);
    assert_eq!(getppid_verdict(&e), Verdict::Allow);
    assert_eq!(cache.read(&mine).unwrap(), Some(e));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tampered_and_truncated_entries_are_recompiled() {
    let dir = tmp("tamper");
    let caps = CapSet::docker_default();
    let (r, h) = resolved(Some(GETPPID_EACCES), &caps);
    let (good, _) = compile_cached(&r, &caps, &h, Options::default(), 0, Some(&dir)).unwrap();
    let path = dir.join(file_name(&key(Some(GETPPID_EACCES), &caps).digest()));
    let bytes = std::fs::read(&path).unwrap();
    // The EACCES of getppid's rule becomes EPERM: one byte of the program,
    // header intact.
    let pos = bytes[HEADER_SIZE..]
        .chunks(8)
        .position(|i| i[4..8] == 0x0005_000du32.to_ne_bytes())
        .expect("the program returns ERRNO(EACCES) somewhere");
    let mut tampered = bytes.clone();
    tampered[HEADER_SIZE + pos * 8 + 4] = 1;
    let truncated = bytes[..bytes.len() - 3].to_vec();
    let cache = CacheDir::open(&dir).unwrap();
    for (what, damaged) in [("tampered", tampered), ("truncated", truncated)] {
        std::fs::write(&path, &damaged).unwrap();
        let e = cache.read(&key(Some(GETPPID_EACCES), &caps).digest());
        assert!(
            matches!(e, Err(CacheError::Invalid { .. })),
            "{what}: {e:?}"
        );
        let (again, origin) =
            compile_cached(&r, &caps, &h, Options::default(), 0, Some(&dir)).unwrap();
        assert_eq!(origin, Origin::Compiled, "{what}");
        assert_eq!(again, good, "{what}");
        assert_eq!(getppid_verdict(&again), Verdict::Errno(13), "{what}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: not replaced");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn untrusted_directories_are_bypassed() {
    let caps = CapSet::docker_default();
    let (r, h) = resolved(None, &caps);
    let (plain, _) = compile_cached(&r, &caps, &h, Options::default(), 0, None).unwrap();
    let base = tmp("untrusted");
    std::fs::create_dir_all(&base).unwrap();
    // World-writable.
    let open = base.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    // A symbolic link to a good directory.
    let good = base.join("good");
    std::fs::create_dir(&good).unwrap();
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = base.join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    // Below a world-writable directory without the sticky bit.
    let exposed = base.join("open/sub");
    let mut cases = vec![
        (open.clone(), "writable by group or others"),
        (link.clone(), "is a symbolic link, not a directory"),
        (exposed, "without the sticky bit"),
    ];
    // Another user's directory (only root can make one).
    if nix::unistd::geteuid().is_root() {
        let theirs = base.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        cases.push((theirs, "owned by uid 65534"));
    } else {
        println!("SKIP: another user's directory: needs root to chown");
    }
    for (dir, why) in cases {
        let e = CacheDir::open(&dir).unwrap_err().to_string();
        assert!(e.contains(why), "{}: {e}", dir.display());
        let (e, origin) = compile_cached(&r, &caps, &h, Options::default(), 0, Some(&dir)).unwrap();
        assert_eq!(origin, Origin::Compiled, "{}", dir.display());
        assert_eq!(e, plain);
    }
    // Nothing was written through the link or into the open directory.
    assert!(entries(&good).is_empty());
    assert!(
        entries(&open).iter().all(|n| n == "sub"),
        "{:?}",
        entries(&open)
    );
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn untrusted_entries_are_refused_unopened_or_unused() {
    let dir = tmp("entries");
    let cache = CacheDir::open(&dir).unwrap();
    let caps = CapSet::docker_default();
    let k = key(None, &caps).digest();
    let path = dir.join(file_name(&k));
    let (r, h) = resolved(None, &caps);
    let (good, _) = compile_cached(&r, &caps, &h, Options::default(), 0, None).unwrap();
    let bytes = encode(&k, &good);
    // A symbolic link to a valid entry elsewhere.
    let elsewhere = tmp("elsewhere");
    std::fs::write(&elsewhere, &bytes).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    let e = cache.read(&k).unwrap_err().to_string();
    assert!(e.contains("is a symbolic link, not a regular file"), "{e}");
    std::fs::remove_file(&path).unwrap();
    // A FIFO: refused without opening it (which would block).
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = cache.read(&k).unwrap_err().to_string();
    assert!(e.contains("is a FIFO"), "{e}");
    std::fs::remove_file(&path).unwrap();
    // Group-writable, and oversized.
    std::fs::write(&path, &bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
    let e = cache.read(&k).unwrap_err().to_string();
    assert!(e.contains("writable by group or others"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(MAX_ENTRY_SIZE as u64 + 1)
        .unwrap();
    let e = cache.read(&k).unwrap_err().to_string();
    assert!(e.contains("more than an entry can be"), "{e}");
    // Each time, the launch path compiles and replaces it.
    let (e, origin) = compile_cached(&r, &caps, &h, Options::default(), 0, Some(&dir)).unwrap();
    assert_eq!((e, origin), (good.clone(), Origin::Compiled));
    assert_eq!(cache.read(&k).unwrap(), Some(good));
    std::fs::remove_file(&elsewhere).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_directory_keeps_at_most_max_entries_and_no_old_temporaries() {
    let dir = tmp("evict");
    let cache = CacheDir::open(&dir).unwrap();
    let entry = |i: u32| Entry {
        program: crate::seccomp::bpf::Program(vec![crate::seccomp::bpf::SockFilter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: i,
        }]),
        flags: 0,
    };
    let digest = |i: u32| {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&i.to_le_bytes());
        d
    };
    // A killed writer's temporary file, an hour old, and a fresh one.
    let old_tmp = dir.join(format!(".{}.tmp-0000000000000001", file_name(&digest(999))));
    let new_tmp = dir.join(format!(".{}.tmp-0000000000000002", file_name(&digest(998))));
    std::fs::write(&old_tmp, b"x").unwrap();
    std::fs::write(&new_tmp, b"x").unwrap();
    set_mtime(&old_tmp, now_secs() - 3600);
    let n = MAX_ENTRIES as u32 + 5;
    for i in 0..n {
        cache.write(&digest(i), &entry(i)).unwrap();
        // Distinct modification times, oldest first.
        set_mtime(
            &dir.join(file_name(&digest(i))),
            now_secs() - 1000 + i64::from(i),
        );
    }
    cache.evict().unwrap();
    let names = entries(&dir);
    let kept: Vec<&String> = names.iter().filter(|n| is_entry(n)).collect();
    assert_eq!(kept.len(), MAX_ENTRIES);
    for i in 0..n {
        let present = names.contains(&file_name(&digest(i)));
        assert_eq!(present, i >= 5, "entry {i}");
    }
    assert!(!old_tmp.exists(), "an hour-old temporary file stays");
    assert!(
        new_tmp.exists(),
        "a writer's fresh temporary file was removed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn set_mtime(path: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
