//! Helpers for the privileged kernel-side tests (`kernel_*.rs`): cgroups to filter
//! counts by, forked workload children that report back through shared memory,
//! seccomp filters compiled by moat's own engine, and snapshot filters.
//!
//! Every workload runs in a child forked from the test and placed in its own v2
//! cgroup before it does anything, so that the counts of that cgroup (whose id is
//! the directory's inode number) are exactly the workload's, whatever else runs on
//! the node.

#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;
#[cfg(target_arch = "x86_64")]
pub mod i386;
pub mod sigsys;

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use moat_agent::kernel::{DenialAction, KernelSnapshot, ProcessEventKind};
use moat_runtime::{
    caps::CapSet,
    seccomp::{bpf::Program, compile::Options, compile_for_host, load, parse, Source},
};

/// The v2 hierarchy: `/sys/fs/cgroup/unified` on this hybrid host,
/// `/sys/fs/cgroup` on v2-only hosts, decided by the file system mounted
/// there (a cgroup called `unified` on a v2-only host is not the root).
pub fn v2_root() -> PathBuf {
    moat_tests::moatd::v2_root().to_path_buf()
}

/// Why these tests cannot run here, or `None`: BPF unavailable (see
/// [`common::bpf_unavailable`]), or no v2 hierarchy.
pub fn unavailable() -> Option<String> {
    if let Some(reason) = common::bpf_unavailable() {
        return Some(reason);
    }
    if !v2_root().join("cgroup.procs").exists() {
        return Some("no cgroup v2 hierarchy to attribute counts by".to_owned());
    }
    None
}

/// Returns early from the calling test, saying why, when it cannot run here.
#[macro_export]
macro_rules! skip_unless_privileged {
    () => {
        if let Some(reason) = kernel_common::unavailable() {
            eprintln!("SKIP: {reason}");
            return;
        }
    };
}

static CGROUP_SEQ: AtomicU32 = AtomicU32::new(0);

/// A cgroup directory made for one test, removed (after killing what is left in
/// it) on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    /// A new v2 cgroup `moat-ktest-<pid>-<n>-<tag>`.
    pub fn v2(tag: &str) -> TestCgroup {
        Self::create(&v2_root(), tag)
    }

    /// A new v1 pids cgroup with `pids.max`.
    pub fn v1_pids(tag: &str, max: u32) -> TestCgroup {
        let cgroup = Self::create(Path::new("/sys/fs/cgroup/pids"), tag);
        fs::write(cgroup.path.join("pids.max"), max.to_string()).expect("setting pids.max");
        cgroup
    }

    /// A new v2 cgroup with `pids.max` (pids enabled for the root's children).
    pub fn v2_pids(tag: &str, max: u32) -> TestCgroup {
        let cgroup = Self::v2(tag);
        fs::write(cgroup.path.join("pids.max"), max.to_string()).expect("setting pids.max");
        cgroup
    }

    fn create(root: &Path, tag: &str) -> TestCgroup {
        let n = CGROUP_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("moat-ktest-{}-{n}-{tag}", std::process::id()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TestCgroup { path }
    }

    /// The cgroup id, as `bpf_get_current_cgroup_id` reports it (v2 only).
    pub fn id(&self) -> u64 {
        fs::metadata(&self.path).expect("stat cgroup").ino()
    }

    /// Moves process `pid` (all its threads) into this cgroup.
    pub fn add(&self, pid: libc::pid_t) {
        fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("adding {pid} to {}: {e}", self.path.display()));
    }

    fn procs(&self) -> Vec<libc::pid_t> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = self.procs();
            if procs.is_empty() {
                break;
            }
            for pid in procs {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = fs::remove_dir(&self.path);
    }
}

/// The fork harness of the test-support library: a child stopped until started.
pub use moat_tests::fork::{Slots as Shared, Stopped as Child};

/// Asserts that wait status `status` is a death by SIGSYS (a seccomp kill).
#[track_caller]
pub fn assert_killed_by_sigsys(status: i32) {
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
        "wait status {status:#x}"
    );
}

/// Forks a child, puts it in `cgroups` and starts it.
pub fn spawn_in(cgroups: &[&TestCgroup], body: impl FnOnce(&Shared) -> i32) -> Child {
    let child = Child::fork(body);
    for cgroup in cgroups {
        cgroup.add(child.pid);
    }
    child.start();
    child
}

/// Stores `v` as value `i`.
pub fn report(shared: &Shared, i: usize, v: i64) {
    shared.report(i, v);
}

/// A seccomp filter compiled with moat's engine from a Docker-format profile.
pub struct Filter {
    pub program: Program,
    pub flags: u32,
}

impl Filter {
    /// Compiles `json` for this host (before forking: libseccomp allocates).
    pub fn compile(json: &str) -> Filter {
        let source = Source::Builtin("kernel test");
        let profile = parse::from_str(json, source.clone()).unwrap_or_else(|e| panic!("{e}"));
        let (_, compiled) = compile_for_host(
            &profile,
            source,
            &CapSet::docker_default(),
            Options::default(),
        )
        .unwrap_or_else(|e| panic!("compiling: {e}"));
        Filter {
            program: compiled.program,
            flags: compiled.flags,
        }
    }

    /// A profile allowing everything except `rules` (Docker JSON objects), for the
    /// native arch and its 32-bit ones (as Docker's archMap does).
    pub fn allow_except(rules: &str) -> Filter {
        Self::compile(&format!(
            r#"{{"defaultAction": "SCMP_ACT_ALLOW",
                "archMap": [{{"architecture": "SCMP_ARCH_X86_64",
                              "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}}],
                "syscalls": [{rules}]}}"#
        ))
    }

    /// Like [`Filter::allow_except`] for the native arch only: a syscall from any
    /// other arch is killed (libseccomp's bad-arch action).
    pub fn native_only_allow_except(rules: &str) -> Filter {
        Self::compile(&format!(
            r#"{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{rules}]}}"#
        ))
    }

    /// Installs the filter in the calling thread (and with `tsync`, every thread of
    /// the process).
    pub fn install(&self, tsync: bool) {
        load::set_no_new_privs().expect("no_new_privs");
        let flags = if tsync { self.flags | 1 } else { self.flags };
        load::install(&self.program, flags).expect("installing the filter");
    }
}

/// A raw syscall's result: the return value, or minus the errno.
///
/// Deliberately hides the `unsafe`: every test calls syscalls with plain integers
/// or pointers to live locals, and spelling out `unsafe` at each of them would
/// bury what the tests do.
#[macro_export]
macro_rules! sys {
    ($nr:expr $(, $arg:expr)* $(,)?) => {{
        // SAFETY: call sites pass arguments valid for the syscall.
        #[allow(clippy::macro_metavars_in_unsafe)]
        let ret = unsafe { libc::syscall($nr $(, $arg as libc::c_long)*) };
        if ret == -1 {
            -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            ret as i64
        }
    }};
}

/// Denials of one cgroup as (syscall, action, errno, arch) → count, sorted.
pub fn denials_of(
    snapshot: &KernelSnapshot,
    cgroup_id: u64,
) -> Vec<(i32, DenialAction, u16, u32, u64)> {
    let mut v: Vec<_> = snapshot
        .denials
        .iter()
        .filter(|d| d.cgroup_id == cgroup_id && d.count > 0)
        .map(|d| (d.syscall_nr, d.action, d.errno, d.arch, d.count))
        .collect();
    v.sort();
    v
}

/// What [`denials_of`] gives for a cgroup whose only denials are `count` of
/// native (x86_64) `getppid` with `action` and `errno`: the shape of most
/// exact-count assertions.
pub fn only_getppid(
    action: DenialAction,
    errno: u16,
    count: u64,
) -> Vec<(i32, DenialAction, u16, u32, u64)> {
    vec![(libc::SYS_getppid as i32, action, errno, ARCH_X86_64, count)]
}

/// The count of one process event kind (and errno) in one cgroup.
pub fn events_of(
    snapshot: &KernelSnapshot,
    cgroup_id: u64,
    kind: ProcessEventKind,
    errno: Option<u16>,
) -> u64 {
    snapshot
        .process_events
        .iter()
        .filter(|e| e.cgroup_id == cgroup_id && e.kind == kind)
        .filter(|e| errno.is_none_or(|want| e.errno == want))
        .map(|e| e.count)
        .sum()
}

/// A named counter of a (name, count) list.
pub fn named(list: &[(&'static str, u64)], name: &str) -> u64 {
    list.iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, c)| c)
        .unwrap_or_else(|| panic!("no counter named {name}"))
}

/// `AUDIT_ARCH_X86_64`.
pub const ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_I386`.
pub const ARCH_I386: u32 = 0x4000_0003;

/// The environment variable that forces the tracing mechanism of every
/// kernel-side test (`auto`, `fexit` or `pairing`), so that the kernel lab can
/// run the exact-count suites once per mechanism
/// (`scripts/test-kernels.sh --env MOAT_TEST_TRACING_MECHANISM=fexit`).
pub const MECHANISM_ENV: &str = "MOAT_TEST_TRACING_MECHANISM";

/// The kernel side's default settings, with the mechanism [`MECHANISM_ENV`]
/// forces (an unknown value fails the test rather than testing the default).
pub fn config() -> moat_agent::kernel::KernelConfig {
    let mut config = moat_agent::kernel::KernelConfig::default();
    if let Ok(value) = std::env::var(MECHANISM_ENV) {
        config.mechanism = moat_agent::kernel::MechanismChoice::parse(&value)
            .unwrap_or_else(|| panic!("{MECHANISM_ENV}={value}: expected auto, fexit or pairing"));
    }
    config
}

/// The tracepoints of the raw tracepoint links this process holds, read from
/// `/proc/self/fdinfo` (the kernel's own list, not moat's).
pub fn raw_tracepoint_links() -> Vec<String> {
    let mut names = Vec::new();
    for entry in fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .flatten()
    {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:bpf_link" {
            continue;
        }
        let fd = entry.file_name();
        let Ok(info) = fs::read_to_string(Path::new("/proc/self/fdinfo").join(&fd)) else {
            continue;
        };
        if let Some(name) = info.lines().find_map(|line| line.strip_prefix("tp_name:")) {
            names.push(name.trim().to_owned());
        }
    }
    names.sort();
    names
}

/// The kernel's `link_type` of every BPF link this process holds.
pub fn link_types() -> Vec<String> {
    let mut types = Vec::new();
    for entry in fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .flatten()
    {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:bpf_link" {
            continue;
        }
        let Ok(info) = fs::read_to_string(Path::new("/proc/self/fdinfo").join(entry.file_name()))
        else {
            continue;
        };
        if let Some(kind) = info
            .lines()
            .find_map(|line| line.strip_prefix("link_type:"))
        {
            types.push(kind.trim().to_owned());
        }
    }
    types.sort();
    types
}
