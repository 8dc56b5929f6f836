//! `moat run` with its default flags must contain a hostile workload: it
//! cannot see, signal or trace processes outside itself, kill its
//! supervisor, leave its cgroups, write the kernel's knobs in /proc and
//! /sys, or mount anything the host sees. Each test is written as the
//! attack; each relaxing option (`--pid host`, `--cgroupns host`,
//! `--ipc host`, `--system-paths unconfined`, `--sysfs rw`) has a test that
//! it really relaxes.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moat_tests::binary;
use moat_tests::moatd::{pids_on_v1, v2_root, PIDS_V1};
use moat_tests::runenv::{err, out, RunEnv};

/// The pids of processes whose command line is exactly `cmdline` (words
/// joined by spaces).
fn processes(cmdline: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let words: Vec<String> = c
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            if words.join(" ") == cmdline {
                found.push(pid);
            }
        }
    }
    found
}

/// Kills what an attack left behind (on the old code), so a failing test
/// does not leak processes.
struct Leftovers(String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in processes(&self.0) {
            // SAFETY: killing a leftover process of this test.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// A marker command line unique to this test process.
fn marker_sleep(base: u32) -> (String, String) {
    let secs = (base + std::process::id() % 1000).to_string();
    (format!("sleep {secs}"), secs)
}

fn ns_of_self(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The cgroup.procs files a root process could move itself with: the root
/// of each hierarchy moat puts it in (the v1 pids one on hybrid hosts, and
/// the v2 one, wherever this host mounts it). The workload sees the host's
/// cgroup mounts at the same paths.
fn root_procs_files() -> Vec<String> {
    let mut files = Vec::new();
    if pids_on_v1() {
        files.push(format!("{PIDS_V1}/cgroup.procs"));
    }
    files.push(v2_root().join("cgroup.procs").display().to_string());
    for f in &files {
        assert!(Path::new(f).exists(), "{f} is not on this host");
    }
    files
}

#[test]
fn the_workload_cannot_leave_its_cgroups() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("escape") else {
        return;
    };
    let (marker, secs) = marker_sleep(4000);
    let _cleanup = Leftovers(marker.clone());
    // Move into the root cgroups, then leave a process behind and fork
    // past the limit of 8.
    let mut script = String::new();
    for f in root_procs_files() {
        script.push_str(&format!("echo $$ > {f} && echo escaped:{f}; "));
    }
    script.push_str(&format!(
        "sleep {secs} >/dev/null 2>&1 & for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & done; exit 0"
    ));
    let o = env.run(&[
        "--name",
        "esc",
        "--pids-limit",
        "8",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(!out(&o).contains("escaped"), "{}{}", out(&o), err(&o));
    assert!(
        err(&o).contains("Read-only file system"),
        "the write must fail: {}",
        err(&o)
    );
    // Still limited, and nothing outlives the workload.
    let rec = env.exit_record("esc");
    assert!(rec["pids_limit_hits"].as_u64().unwrap() > 0, "{rec}");
    assert_eq!(processes(&marker), Vec::<i32>::new(), "left behind");
}

#[test]
fn the_workload_cannot_kill_its_supervisor() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("ppid") else {
        return;
    };
    let o = env.run(&[
        "--name",
        "ppid",
        "--",
        "sh",
        "-c",
        "kill -9 $PPID; sleep 0.2; echo survived; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", err(&o));
    assert_eq!(out(&o), "survived\n");
    assert_eq!(env.exit_record("ppid")["exit_code"], 7);

    // Killing everything it can see (guarded: on a workload that shares
    // the host's PID namespace, root's kill -1 would end every process on
    // the machine, so the script refuses to try).
    let host_pid_ns = ns_of_self("pid");
    let o = env.run(&[
        "--name",
        "killall",
        "--env",
        &format!("HOST_PID_NS={host_pid_ns}"),
        "--",
        "sh",
        "-c",
        "[ \"$(readlink /proc/self/ns/pid)\" = \"$HOST_PID_NS\" ] && exit 99; \
         sleep 30 & kill -9 -1; wait; echo survived; exit 8",
    ]);
    assert_eq!(
        o.status.code(),
        Some(8),
        "99 = the workload shares the host's PID namespace; {}",
        err(&o)
    );
    assert_eq!(out(&o), "survived\n");
    let rec = env.exit_record("killall");
    assert_eq!(rec["exit_code"], 8, "{rec}");
}

/// A process of uid `uid` that the test starts on the host.
fn victim(uid: u32, secs: &str) -> Child {
    let mut c = Command::new("sleep");
    c.arg(secs).stdin(Stdio::null());
    c.uid(uid).gid(uid);
    c.spawn().expect("start the victim")
}

#[test]
fn a_non_root_workload_cannot_signal_or_trace_host_processes_of_its_uid() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("victim") else {
        return;
    };
    // A uid no real account uses, unique to this test process.
    let uid = 3_100_000 + std::process::id() % 1000;
    let (marker, secs) = marker_sleep(5000);
    let _cleanup = Leftovers(marker);
    let mut v = victim(uid, &secs);
    let pid = v.id().to_string();
    let hostile = binary("hostile");
    let user = uid.to_string();
    let o = env.run(&[
        "--user",
        &user,
        "--",
        "sh",
        "-c",
        &format!(
            "kill -0 {pid} && echo can-signal; {} ptrace {pid} && echo can-trace; kill -9 -1; exit 0",
            hostile.display()
        ),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(!out(&o).contains("can-signal"), "{}", out(&o));
    assert!(!out(&o).contains("can-trace"), "{}{}", out(&o), err(&o));
    assert!(
        v.try_wait().unwrap().is_none(),
        "kill -9 -1 in the workload killed a host process of its uid"
    );
    let _ = v.kill();
    let _ = v.wait();
}

#[test]
fn proc_shows_only_the_workloads_processes() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("procls") else {
        return;
    };
    let o = env.run(&["--", "ls", "/proc"]);
    assert!(o.status.success(), "{}", err(&o));
    let pids: Vec<String> = out(&o)
        .split_whitespace()
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    // moat's init and ls itself.
    assert_eq!(pids, ["1", "2"], "{}", out(&o));
}

/// Opens `path` for writing without writing anything: whether the kernel
/// (permissions, read-only mounts) lets the workload write it, with no
/// effect on the host either way.
fn open_for_write_script(paths: &[String]) -> String {
    paths
        .iter()
        .map(|p| format!("if (: >> {p}) 2>/dev/null; then echo writable:{p}; fi; "))
        .collect::<String>()
        + "exit 0"
}

/// Kernel knobs a root workload could use to run code as host root
/// (core_pattern, sysrq, a sysfs file), and the cgroup roots.
fn knobs() -> Vec<String> {
    let mut paths: Vec<String> = [
        "/proc/sys/kernel/core_pattern",
        "/proc/sysrq-trigger",
        "/sys/kernel/uevent_helper",
        "/sys/kernel/mm/transparent_hugepage/enabled",
    ]
    .iter()
    .filter(|p| Path::new(p).exists())
    .map(|p| p.to_string())
    .collect();
    paths.extend(root_procs_files());
    paths
}

#[test]
fn kernel_knobs_in_proc_and_sys_are_not_writable() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("knobs") else {
        return;
    };
    let o = env.run(&["--", "sh", "-c", &open_for_write_script(&knobs())]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "", "root in the workload can write these");

    // Also through a working directory inside /proc/sys (moat's own, which
    // the workload resolves again by path in its mount namespace).
    let o = env
        .run_cmd(&[
            "--",
            "sh",
            "-c",
            "if (: >> core_pattern) 2>/dev/null; then echo writable; fi",
        ])
        .current_dir("/proc/sys/kernel")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "", "writable through the working directory");

    // Masked: empty.
    let o = env.run(&[
        "--",
        "sh",
        "-c",
        "for f in /proc/timer_list /proc/keys /proc/kcore; do [ -e $f ] && echo $f $(wc -c < $f); done; echo firmware: $(ls -A /sys/firmware)",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    for line in out(&o).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f[0] == "firmware:" {
            assert_eq!(f.len(), 1, "/sys/firmware is not masked: {line}");
        } else {
            assert_eq!(f[1], "0", "{} is not masked", f[0]);
        }
    }
}

#[test]
fn mounts_made_inside_do_not_reach_the_host() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("mount") else {
        return;
    };
    let target = env.dir.join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.0)
                .stderr(Stdio::null())
                .status();
        }
    }
    let _u = Unmount(&target);
    let t = target.to_str().unwrap();
    let o = env.run(&[
        "--cap-add",
        "SYS_ADMIN",
        "--",
        "sh",
        "-c",
        &format!(
            "mount -t tmpfs moat-leak-test {t} && grep -c moat-leak-test /proc/self/mountinfo"
        ),
    ]);
    assert!(o.status.success(), "the mount inside failed: {}", err(&o));
    assert_eq!(out(&o), "1\n");
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host.contains("moat-leak-test"),
        "the mount reached the host"
    );
}

#[test]
fn each_relaxing_option_relaxes() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("relax") else {
        return;
    };
    let ns_script = "for n in pid ipc cgroup mnt; do echo $n $(readlink /proc/self/ns/$n); done";
    let ns = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--", "sh", "-c", ns_script]);
        let o = env.run(&a);
        assert!(o.status.success(), "{a:?}: {}", err(&o));
        out(&o)
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect::<std::collections::HashMap<_, _>>()
    };
    let private = ns(&[]);
    for kind in ["pid", "ipc", "cgroup", "mnt"] {
        assert_ne!(
            private[kind],
            ns_of_self(kind),
            "{kind} is shared by default"
        );
    }
    let host = ns(&["--pid", "host", "--ipc", "host", "--cgroupns", "host"]);
    for kind in ["pid", "ipc", "cgroup"] {
        assert_eq!(host[kind], ns_of_self(kind), "--{kind} host");
    }
    assert_ne!(
        host["mnt"],
        ns_of_self("mnt"),
        "the mount namespace is always new"
    );

    // --pid host: the host's processes are visible.
    let o = env.run(&["--pid", "host", "--", "ls", "/proc"]);
    let n = out(&o)
        .split_whitespace()
        .filter(|w| w.parse::<u32>().is_ok())
        .count();
    assert!(n > 2, "{}", out(&o));

    // --cgroupns host: the cgroup path shows the parent.
    let o = env.run(&[
        "--name",
        "cg",
        "--cgroupns",
        "host",
        "--",
        "cat",
        "/proc/self/cgroup",
    ]);
    assert!(
        out(&o).contains(&format!("/{}/cg", env.parent.0)),
        "{}",
        out(&o)
    );
    let o = env.run(&["--", "cat", "/proc/self/cgroup"]);
    for line in out(&o).lines() {
        assert!(line.ends_with(":/"), "not the namespace's root: {line}");
    }

    // --system-paths unconfined: the knobs in /proc are writable and
    // nothing is masked; /sys stays read-only.
    let o = env.run(&[
        "--system-paths",
        "unconfined",
        "--",
        "sh",
        "-c",
        &format!(
            "{} wc -c < /proc/timer_list",
            open_for_write_script(&knobs()).trim_end_matches("exit 0")
        ),
    ]);
    let text = out(&o);
    assert!(
        text.contains("writable:/proc/sys/kernel/core_pattern"),
        "{text}"
    );
    assert!(!text.contains("writable:/sys/"), "{text}");
    assert_ne!(text.lines().last(), Some("0"), "{text}");

    // --sysfs rw: /sys and the cgroup file systems are writable again.
    let o = env.run(&[
        "--sysfs",
        "rw",
        "--",
        "sh",
        "-c",
        &open_for_write_script(&root_procs_files()),
    ]);
    for f in root_procs_files() {
        assert!(out(&o).contains(&format!("writable:{f}")), "{}", out(&o));
    }
}

#[test]
fn ps_shows_the_namespaces() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("psns") else {
        return;
    };
    let mut running: Vec<Child> = [
        ("psns-all", vec!["--userns", "auto"]),
        (
            "psns-host",
            vec!["--pid", "host", "--ipc", "host", "--cgroupns", "host"],
        ),
    ]
    .into_iter()
    .map(|(name, extra)| {
        let mut a = vec!["--name", name];
        a.extend(extra);
        a.extend(["--", "sleep", "30"]);
        env.run_cmd(&a).stdin(Stdio::null()).spawn().unwrap()
    })
    .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let o = env.cmd().args(["ps", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if v.as_array().unwrap().len() == 2 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let of = |name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {v}"))["namespaces"]
            .clone()
    };
    assert_eq!(
        of("psns-all"),
        serde_json::json!(["cgroup", "ipc", "mnt", "pid", "user"])
    );
    assert_eq!(of("psns-host"), serde_json::json!(["mnt"]));
    let table = out(&env.cmd().arg("ps").output().unwrap());
    let row = table.lines().find(|l| l.starts_with("psns-all")).unwrap();
    assert!(row.ends_with("cgroup,ipc,mnt,pid,user"), "{table}");
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.lines().next().unwrap().ends_with("NAMESPACES"),
        "{table}"
    );
    for c in &mut running {
        // SAFETY: signalling our own child (moat), which forwards it.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        assert_eq!(c.wait().unwrap().code(), Some(128 + libc::SIGTERM));
    }
}

#[test]
fn the_hosts_shared_memory_is_out_of_reach() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("ipc") else {
        return;
    };
    // A host process's POSIX shared memory (a file in /dev/shm) and System V
    // segment.
    let shm = format!("/dev/shm/moat-test-{}", std::process::id());
    std::fs::write(&shm, "host secret").unwrap();
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _r = Remove(shm.clone());
    // SAFETY: creating a private segment, removed below.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0, "{}", std::io::Error::last_os_error());
    struct Segment(i32);
    impl Drop for Segment {
        fn drop(&mut self) {
            // SAFETY: removing our own segment.
            unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
    let _s = Segment(id);
    let script = format!(
        "cat {shm} 2>/dev/null && echo; echo overwritten > {shm} 2>/dev/null; ipcs -m | grep -qw {id} && echo segment-visible; exit 0"
    );
    let o = env.run(&["--", "sh", "-c", &script]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "", "the workload reached the host's shared memory");
    assert_eq!(std::fs::read_to_string(&shm).unwrap(), "host secret");
    // --ipc host shares them.
    let o = env.run(&["--ipc", "host", "--", "sh", "-c", &script]);
    assert!(
        out(&o).contains("host secret") && out(&o).contains("segment-visible"),
        "{}",
        out(&o)
    );
}
