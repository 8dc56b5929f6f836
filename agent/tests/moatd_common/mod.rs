//! Helpers shared by moatd's integration tests: a fake kernel source, and thin
//! wrappers over the test-support library (`moat-tests`: starting moatd, waiting
//! with a deadline) and the contract crate (`moat-api`: HTTP requests and
//! exposition lookups).
#![allow(dead_code)]

use std::{
    ffi::OsStr,
    net::SocketAddr,
    path::Path,
    process::Child,
    sync::{mpsc, Mutex},
};

use moat_agent::kernel::{KernelSnapshot, KernelSource, RetiredPids};
pub use moat_api::client::Response;
use moat_api::{client::HttpUrl, exposition::Exposition};

/// A kernel source whose snapshot (and removed pids cgroups) the test sets.
#[derive(Default)]
pub struct FakeKernel {
    pub snapshot: Mutex<KernelSnapshot>,
    /// Handed out (once) at the next `retired_pids`.
    pub retired: Mutex<Vec<RetiredPids>>,
}

impl KernelSource for FakeKernel {
    fn snapshot(&self) -> moat_agent::kernel::Result<KernelSnapshot> {
        Ok(self.snapshot.lock().unwrap().clone())
    }

    fn retired_pids(&self) -> moat_agent::kernel::Result<Vec<RetiredPids>> {
        Ok(std::mem::take(&mut *self.retired.lock().unwrap()))
    }
}

/// `METHOD path` on `addr` with extra headers, through the one HTTP client
/// (`moat_api::client`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, moat_api::client::ClientError> {
    moat_api::client::request(method, &HttpUrl::at(addr, path), headers)
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[]).expect("HTTP request")
}

/// Starts the `moatd` binary under test with `args`; see
/// [`moat_tests::moatd::spawn_following`].
pub fn spawn_moatd<S: AsRef<OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> (Child, mpsc::Receiver<String>) {
    moat_tests::moatd::spawn_following(Path::new(env!("CARGO_BIN_EXE_moatd")), args)
}

#[allow(unused_imports)] // not every test file uses both
pub use moat_tests::moatd::{served_address, wait_for};

/// The value of the sample `name{labels}` in a text exposition, e.g.
/// `sample(&body, "moat_forks_total{workload=\"a\",kind=\"process\"}")`, read
/// by the one exposition reader (`moat_api::exposition`).
pub fn sample(body: &str, series: &str) -> Option<f64> {
    Exposition::parse(body)
        .expect("a text exposition")
        .value(series)
}

/// A fresh temporary directory for one test, removed on drop.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("moatd-test-{name}-"))
        .tempdir()
        .unwrap()
}

/// Why a root-only test cannot run here, if it cannot.
pub fn not_root() -> Option<String> {
    (!nix::unistd::geteuid().is_root()).then(|| "not root: this test needs root".to_owned())
}

/// Whether `path` exists and is a directory.
pub fn is_dir(path: &Path) -> bool {
    path.is_dir()
}

/// Returns early from the calling test, saying why, when `$reason` is `Some`.
#[macro_export]
macro_rules! skip_if {
    ($reason:expr) => {
        if let Some(reason) = $reason {
            eprintln!("SKIP: {reason}");
            return;
        }
    };
}
