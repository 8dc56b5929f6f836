//! Hostile cgroup names (issue 10, item 7), as attacks on the real moatd: a
//! workload in a cgroup of its choosing makes seccomp denials, and moatd must
//! attribute them truthfully and the CLI must print them harmlessly:
//!
//! - a cgroup named like a Docker container (`docker-<64 hex>.scope`, or
//!   `docker/<64 hex>`) outside Docker's parents is not that container;
//! - a cgroup name with terminal escape sequences reaches `moat events` and
//!   `moat stats` escaped, never raw;
//! - a cgroup whose path is longer than `PATH_MAX` is attributed to its
//!   workload, with its path.
//!
//! The workloads are `perl` making raw getpriority calls under a filter that
//! refuses them with EACCES (compiled by `moat profile compile`), placed in
//! their cgroup and filtered between fork and exec.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use moat_api::{audit::AuditEvent, exposition::Exposition};
use moat_tests::moatd::{moat, pids_on_v1, pids_on_v2, v2_root, wait_for, Moatd, TempDir, PIDS_V1};
use nix::{
    fcntl::{openat, OFlag},
    sys::stat::{mkdirat, Mode},
    unistd::{unlinkat, UnlinkatFlags},
};

const NR_GETPRIORITY: u32 = 140;
const CONTAINER: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const OTHER_CONTAINER: &str = "beef0000beef0000beef0000beef0000beef0000beef0000beef0000beef0000";
const GENUINE_CONTAINER: &str = "d00d0000d00d0000d00d0000d00d0000d00d0000d00d0000d00d0000d00d0000";

/// `perl -e WORKER NR N SLEEP`: makes syscall NR N times, SLEEP seconds apart.
const WORKER: &str = r#"
my ($nr, $n, $sleep) = @ARGV;
for (1 .. $n) {
    syscall($nr, 0, 0);
    select(undef, undef, undef, $sleep) if $sleep > 0;
}
"#;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

macro_rules! skip_unless_able {
    () => {
        if !moat_tests::is_root() {
            eprintln!("SKIP: moatd and cgroups need root");
            return;
        }
        if !pids_on_v1() && !pids_on_v2() {
            eprintln!("SKIP: no pids cgroup controller on this machine");
            return;
        }
        if !v2_root().join("cgroup.procs").exists() {
            eprintln!("SKIP: no cgroup v2 hierarchy at {}", v2_root().display());
            return;
        }
        if !Path::new("/usr/bin/perl").exists() || !cfg!(target_arch = "x86_64") {
            eprintln!("SKIP: the workloads are x86_64 perl programs");
            return;
        }
    };
}

fn open_dir(at: &OwnedFd, path: &str) -> OwnedFd {
    openat(
        at,
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {path}: {e}"))
}

/// Cgroups made by a test (any depth, any name), removed deepest first after
/// their processes are killed.
struct Cgroups {
    root: OwnedFd,
    made: Vec<Vec<String>>,
    children: Vec<Child>,
}

impl Cgroups {
    fn under(mount: impl AsRef<Path>) -> Cgroups {
        Cgroups {
            root: nix::fcntl::open(
                mount.as_ref(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .unwrap(),
            made: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Makes the cgroup `components` (each level that is missing), returns a
    /// descriptor of it: every open is relative, so any depth works.
    fn make(&mut self, components: &[&str]) -> OwnedFd {
        let mut fd = open_dir(&self.root, ".");
        for (i, name) in components.iter().enumerate() {
            match mkdirat(&fd, *name, Mode::from_bits_truncate(0o755)) {
                Ok(()) => self
                    .made
                    .push(components[..=i].iter().map(|s| (*s).to_owned()).collect()),
                Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => panic!("mkdir {name:?}: {e}"),
            }
            fd = open_dir(&fd, name);
        }
        fd
    }

    /// Runs the worker (`n` denials, `sleep` s apart) in the cgroup `dir`
    /// under a filter refusing getpriority.
    fn run_in(&mut self, dir: &OwnedFd, filter: &[u8], n: u32, sleep: &str) -> &mut Child {
        let procs = openat(
            dir,
            "cgroup.procs",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        // The child's copy of the filter is at the same address.
        let (filter_at, filter_len) = (filter.as_ptr() as usize, (filter.len() / 8) as u16);
        let procs_fd = procs.as_raw_fd();
        let mut command = Command::new("perl");
        command
            .args([
                "-e",
                WORKER,
                &NR_GETPRIORITY.to_string(),
                &n.to_string(),
                sleep,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec: write(2)
        // of a constant ("0": the writing process itself), prctl and seccomp
        // with data prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                let program = libc::sock_fprog {
                    len: filter_len,
                    filter: filter_at as *mut libc::sock_filter,
                };
                if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::syscall(
                        libc::SYS_seccomp,
                        libc::SECCOMP_SET_MODE_FILTER,
                        0,
                        &program as *const libc::sock_fprog,
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("starting the worker");
        drop(procs);
        self.children.push(child);
        self.children.last_mut().unwrap()
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for path in self.made.iter().rev() {
            let (last, parents) = path.split_last().unwrap();
            let mut fd = open_dir(&self.root, ".");
            for name in parents {
                fd = open_dir(&fd, name);
            }
            let _ = unlinkat(&fd, last.as_str(), UnlinkatFlags::RemoveDir);
        }
    }
}

/// The filter for getpriority → EACCES, compiled by `moat profile compile`.
fn filter(dir: &TempDir) -> Vec<u8> {
    let profile = dir.join("deny.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let out = dir.join("deny.bpf");
    let o = moat()
        .args(["profile", "compile"])
        .arg(&profile)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(&out).unwrap()
}

fn metrics(agent: &Moatd) -> Exposition {
    Exposition::parse(&agent.get_metrics().expect("GET /metrics")).unwrap()
}

fn denials_by_workload(m: &Exposition) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for s in m.family("moat_seccomp_denials_total") {
        if s.label("syscall") != Some("getpriority") {
            continue;
        }
        let w = s.label("workload").unwrap_or_default().to_owned();
        match out.iter_mut().find(|(n, _)| *n == w) {
            Some((_, v)) => *v += s.value,
            None => out.push((w, s.value)),
        }
    }
    out
}

fn events(agent: &Moatd) -> Vec<AuditEvent> {
    agent
        .audit_text()
        .lines()
        .filter_map(|l| AuditEvent::parse_line(l.as_bytes()).ok())
        .filter(|e| {
            e.seccomp
                .as_ref()
                .is_some_and(|s| s.syscall == "getpriority")
        })
        .collect()
}

#[test]
fn cgroups_named_like_containers_outside_dockers_parents_are_not_containers() {
    skip_unless_able!();
    let _serial = serial();
    let agent = Moatd::start("attr-spoof");
    let tmp = TempDir::new("attr-spoof");
    let filter = filter(&tmp);
    let evil = format!("moat-t-evil-{}", std::process::id());
    let mut cgroups = Cgroups::under(v2_root());
    // Two spoofs, and the genuine systemd-driver place as a control.
    let scope = format!("docker-{CONTAINER}.scope");
    let spoof_scope = cgroups.make(&[&evil, &scope]);
    let spoof_cgroupfs = cgroups.make(&[&evil, "docker", OTHER_CONTAINER]);
    let genuine_scope = format!("docker-{GENUINE_CONTAINER}.scope");
    let genuine = cgroups.make(&["system.slice", &genuine_scope]);
    for dir in [&spoof_scope, &spoof_cgroupfs, &genuine] {
        let child = cgroups.run_in(dir, &filter, 5, "0");
        assert!(child.wait().unwrap().success());
    }
    let genuine_label = format!("docker:{}", &GENUINE_CONTAINER[..12]);
    wait_for(
        Duration::from_secs(10),
        "the genuine container's denials",
        || {
            denials_by_workload(&metrics(&agent))
                .iter()
                .any(|(w, v)| *w == genuine_label && *v == 5.0)
                .then_some(())
        },
    );
    // All 15 are counted (as whatever they are), after the control's.
    std::thread::sleep(Duration::from_millis(500));
    let by_workload = denials_by_workload(&metrics(&agent));
    eprintln!("spoof: denials by workload {by_workload:?}");
    for spoofed in [&CONTAINER[..12], &OTHER_CONTAINER[..12]] {
        let label = format!("docker:{spoofed}");
        assert!(
            !by_workload.iter().any(|(w, _)| *w == label),
            "a cgroup outside Docker's parents was labelled {label}: {by_workload:?}"
        );
        assert!(
            !events(&agent).iter().any(|e| e.workload.name == label),
            "an audit event was attributed to {label}"
        );
    }
    let scope_label = by_workload.iter().find(|(w, _)| *w == scope);
    assert_eq!(
        scope_label.map(|(_, v)| *v),
        Some(5.0),
        "the spoofed scope is a unit like any other: {by_workload:?}"
    );
}

#[test]
fn escape_sequences_in_a_cgroup_name_never_reach_the_terminal_raw() {
    skip_unless_able!();
    let _serial = serial();
    let agent = Moatd::start("attr-esc");
    let tmp = TempDir::new("attr-esc");
    let filter = filter(&tmp);
    // Set the window title, clear the screen, an 8-bit CSI, and a
    // right-to-left override.
    let name = "esc\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\u{202e}x";
    let mut v2 = Cgroups::under(v2_root());
    let dir = v2.make(&[&agent.parent.0, name]);
    // On a hybrid host, a pids cgroup of the same name, so that `moat stats`
    // lists it (with pids on v2 the v2 cgroup is that cgroup).
    let mut pids = pids_on_v1().then(|| Cgroups::under(PIDS_V1));
    if let Some(pids) = &mut pids {
        pids.make(&[&agent.parent.0, name]);
    }
    let child = v2.run_in(&dir, &filter, 40, "0.1");
    // `moat stats` while it runs: two scrapes a second apart.
    let stats = moat()
        .args(["stats", "--no-stream", "--agent", &agent.url()])
        .output()
        .unwrap();
    assert!(child.wait().unwrap().success());
    wait_for(
        Duration::from_secs(10),
        "the events of the workload",
        || {
            (events(&agent)
                .iter()
                .filter(|e| e.workload.name == name)
                .count()
                == 40)
                .then_some(())
        },
    );

    let events_out = moat()
        .args(["events", "--file"])
        .arg(&agent.audit_log)
        .output()
        .unwrap();
    let json_out = moat()
        .args(["events", "--json", "--file"])
        .arg(&agent.audit_log)
        .output()
        .unwrap();
    for (what, out) in [
        ("moat events", &events_out),
        ("moat events --json", &json_out),
        ("moat stats", &stats),
    ] {
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for (i, line) in text.lines().enumerate() {
            assert!(
                !line.chars().any(moat_api::text::is_unsafe),
                "{what}: line {i} has a raw control or bidi character: {line:?}"
            );
        }
        for bytes in [
            &b"\x1b"[..],
            b"\x07",
            "\u{9b}".as_bytes(),
            "\u{202e}".as_bytes(),
        ] {
            assert!(
                !out.stdout.windows(bytes.len()).any(|w| w == bytes),
                "{what}: {bytes:?} reached the terminal"
            );
        }
    }
    let events_text = String::from_utf8_lossy(&events_out.stdout);
    assert!(
        events_text.contains("esc\\x1b]0;owned\\x07\\x1b[2J\\u{9b}31m\\u{202e}x"),
        "the workload is shown escaped in moat events:\n{events_text}"
    );
    if pids_on_v1() {
        let stats_text = String::from_utf8_lossy(&stats.stdout);
        assert!(
            stats_text.contains("esc\\x1b]0;owned"),
            "the workload is listed, escaped, by moat stats:\n{stats_text}"
        );
    }
    // moatd's own lines carry nothing raw either (so that no other reader of the file meets them).
    let raw = std::fs::read(&agent.audit_log).unwrap();
    let text = String::from_utf8(raw).unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.chars().any(moat_api::text::is_unsafe)),
        "raw control or bidi characters in moatd's audit log"
    );

    // The JSON still decodes to the real name.
    let decoded: Vec<AuditEvent> = String::from_utf8_lossy(&json_out.stdout)
        .lines()
        .filter_map(|l| AuditEvent::parse_line(l.as_bytes()).ok())
        .filter(|e| e.workload.name == name)
        .collect();
    assert_eq!(decoded.len(), 40);
}

#[test]
fn a_cgroup_deeper_than_path_max_is_attributed_to_its_workload() {
    skip_unless_able!();
    let _serial = serial();
    let agent = Moatd::start("attr-deep");
    let tmp = TempDir::new("attr-deep");
    let filter = filter(&tmp);
    let levels: Vec<String> = (0..24)
        .map(|i| format!("{i:02}{}", "d".repeat(198)))
        .collect();
    let mut components: Vec<&str> = vec![&agent.parent.0, "deepwl"];
    components.extend(levels.iter().map(String::as_str));
    let rel = format!("/{}", components.join("/"));
    let path_bytes = v2_root().as_os_str().len() + rel.len();
    assert!(path_bytes > 4096, "{path_bytes} bytes");
    let mut cgroups = Cgroups::under(v2_root());
    let dir = cgroups.make(&components);
    const N: u32 = 7;
    let child = cgroups.run_in(&dir, &filter, N, "0");
    assert!(child.wait().unwrap().success());
    let by_workload = wait_for(
        Duration::from_secs(10),
        "the deep workload's denials",
        || {
            let by_workload = denials_by_workload(&metrics(&agent));
            by_workload
                .iter()
                .any(|(w, v)| w == "deepwl" && *v == f64::from(N))
                .then_some(by_workload)
        },
    );
    eprintln!("deep ({path_bytes} bytes of path): {by_workload:?}");
    let mut last = Vec::new();
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            Duration::from_secs(10),
            "the deep workload's events",
            || {
                last = events(&agent);
                let deep: Vec<AuditEvent> = last
                    .iter()
                    .filter(|e| e.workload.name == "deepwl")
                    .cloned()
                    .collect();
                (deep.len() == N as usize).then_some(deep)
            },
        )
    }));
    let deep = found.unwrap_or_else(|_| {
        panic!(
            "not {N} events of deepwl; the getpriority events: {:?}",
            last.iter()
                .map(|e| (&e.workload.name, &e.cgroup.path))
                .collect::<Vec<_>>()
        )
    });
    for e in &deep {
        assert_eq!(e.cgroup.path.as_deref(), Some(rel.as_str()));
    }
}
