//! Helpers shared by the end-to-end tests: locating the built binaries and
//! the shared fixtures, and deciding when a privileged test must skip.

use std::path::PathBuf;

pub mod authz;
pub mod bench;
pub mod dockerd;
pub mod fork;
pub mod fuzz;
pub mod fuzz_api;
pub mod moatd;
pub mod oci;
pub mod pty;
pub mod quick;
pub mod results;
pub mod runenv;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `../shared/fixtures` folder of real third-party profiles, when it
/// exists. Tests that need it print why they skip otherwise.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = workspace_root().join("../shared/fixtures");
    dir.is_dir().then_some(dir)
}

/// Path of a binary built from this workspace (`moat`, `moatd`), in the same
/// profile as the tests.
///
/// Tests do not build it: `cargo test --workspace` (what `scripts/test.sh` and
/// CI run) builds every binary before any test runs. Run alone
/// (`cargo test -p moat-tests`), a test stops with a clear message if the
/// binary is missing, or older than a source file it is built from, rather than
/// drive a stale one. `MOAT_TEST_PREBUILT=1` skips the age check: the kernel
/// lab (`scripts/test-kernels.sh`) copies the binaries and sources into its
/// guests, where their times say nothing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    let build = format!(
        "build it first: `cargo build{} --bin {name}` (or run `cargo test --workspace`, which builds it)",
        if dir.file_name().is_some_and(|p| p == "release") { " --release" } else { "" }
    );
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {build}", path.display()));
    let prebuilt = std::env::var_os("MOAT_TEST_PREBUILT").is_some_and(|v| v == "1");
    if let Some(newer) = newer_source(name, built).filter(|_| !prebuilt) {
        panic!(
            "{} is older than {}: {build}",
            path.display(),
            newer.display()
        );
    }
    path
}

/// A Rust source file that binary `name` is built from, modified after
/// `built`, if any.
fn newer_source(name: &str, built: std::time::SystemTime) -> Option<PathBuf> {
    let root = workspace_root();
    let dirs: &[&str] = match name {
        "moat" => &["runtime/src", "agent/api/src"],
        "moatd" => &[
            "runtime/src",
            "agent/src",
            "agent/api/src",
            "ebpf/moat-common/src",
            "ebpf/moat-ebpf/src",
        ],
        _ => &[],
    };
    // moatd links the runtime library, not the `moat` binary's own sources.
    let skip = (name == "moatd").then(|| root.join("runtime/src/bin"));
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| root.join(d)).collect();
    while let Some(path) = stack.pop() {
        if skip.as_ref() == Some(&path) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && meta.modified().is_ok_and(|m| m > built)
        {
            return Some(path);
        }
    }
    None
}

/// Finds the program `name` on `PATH` (a conventional one when `PATH` is
/// unset).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether we run as root; privileged tests print why they skip otherwise.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Serialises tests that depend on where the pids controller is mounted
/// with the ones that move it (v1 ↔ v2), across test binaries too: a
/// shared `flock` while a test relies on the layout, exclusive while one
/// changes it. The same file is used by `runtime/tests/cgroup_real.rs`.
pub struct LayoutLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes the cgroup layout lock; see [`LayoutLock`].
pub fn cgroup_layout_lock(exclusive: bool) -> LayoutLock {
    use nix::fcntl::{Flock, FlockArg};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/moat-cgroup-layout.lock")
        .expect("open the layout lock file");
    let arg = if exclusive {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockShared
    };
    // Blocks until granted; released when the lock (and its file) is dropped.
    let lock =
        Flock::lock(file, arg).unwrap_or_else(|(_, err)| panic!("flock the layout lock: {err}"));
    LayoutLock { _lock: lock }
}
