//! Helpers shared by the end-to-end tests: locating the built binaries and
//! the shared fixtures, and deciding when a privileged test must skip.

use std::path::PathBuf;
use std::sync::Mutex;

pub mod bench;
pub mod fork;
pub mod moatd;
pub mod oci;
pub mod quick;
pub mod results;

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

/// Path of a binary built from this workspace (`moat`, `moatd`), in the
/// same profile as the tests. The first call in a test process runs
/// `cargo build` for it, so a test never drives a stale binary, unless
/// `MOAT_TEST_PREBUILT=1` says the caller built them and there is no cargo
/// to run: the kernel lab (`scripts/test-kernels.sh`), whose guests have
/// the binaries but no toolchain.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let prebuilt = std::env::var_os("MOAT_TEST_PREBUILT").is_some_and(|v| v == "1");
    if !prebuilt && !built.iter().any(|b| b == name) {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--bin", name])
            .current_dir(workspace_root());
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building {name} failed");
        built.push(name.to_string());
    }
    dir.join(name)
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
    _file: std::fs::File,
}

/// Takes the cgroup layout lock; see [`LayoutLock`].
pub fn cgroup_layout_lock(exclusive: bool) -> LayoutLock {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/moat-cgroup-layout.lock")
        .expect("open the layout lock file");
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock on a descriptor we own; blocks until granted.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), op) };
    assert_eq!(rc, 0, "flock the layout lock");
    LayoutLock { _file: file }
}
