//! Helpers shared by the end-to-end tests: locating the built binaries and
//! the shared fixtures, and deciding when a privileged test must skip.

use std::path::PathBuf;

pub mod fork;

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

/// Path of a binary built from this workspace (`moat`, `moatd`), building
/// it first if needed, in the same profile as the tests.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--bin", name])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building {name} failed");
    }
    path
}

/// Whether we run as root; privileged tests print why they skip otherwise.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
