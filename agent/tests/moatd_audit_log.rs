//! The audit writer under a full disk, a crash's partial line, and a path
//! replaced by what is not a regular file (issue 10, items 2 to 4), over a fake
//! kernel source that delivers an exact number of audit records, so every count
//! is exact: the log holds only whole lines, `moat_audit_events_total` equals
//! the lines on disk, and each event not written is counted once by reason.
//!
//! The full-disk test mounts a 64 KiB tmpfs (root); the others are
//! unprivileged. The same attacks on the real moatd with a real workload are in
//! `tests/tests/agent_audit_attacks.rs`.

mod moatd_common;

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use moat_agent::{
    collect::attribution::CgroupLayout,
    config::{AuditTarget, Config},
    daemon::{self, Running},
    export::audit_log::DropReason,
    kernel::{AuditKind, AuditRecord, DenialAction},
};
use moat_api::audit::{AuditAction, AuditEvent};
use moatd_common::{temp_dir, wait_for, FakeKernel};
use tokio::{runtime::Runtime, sync::mpsc};

struct Agent {
    runtime: Runtime,
    running: Option<Running>,
    records: mpsc::Sender<AuditRecord>,
    sent: u64,
}

impl Agent {
    fn start(log: &Path) -> anyhow::Result<Agent> {
        let tmp = temp_dir("audit-v2");
        let mut config = Config::default();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.audit.log = AuditTarget::File(log.to_owned());
        let layout = CgroupLayout {
            v2_mount: tmp.path().to_owned(),
            pids_mount: None::<PathBuf>,
        };
        let runtime = Runtime::new().unwrap();
        let (records, records_rx) = mpsc::channel(10_000);
        let running = {
            let _guard = runtime.enter();
            let listener = daemon::bind(&config).unwrap();
            daemon::start(
                &config,
                &layout,
                listener,
                Arc::new(FakeKernel::default()),
                records_rx,
            )?
        };
        // The fake v2 root is only read at start.
        drop(tmp);
        Ok(Agent {
            runtime,
            running: Some(running),
            records,
            sent: 0,
        })
    }

    /// Delivers `n` seccomp denials, as the ring buffer would.
    fn deny(&mut self, n: u64) {
        for i in 0..n {
            let record = AuditRecord {
                boot_ns: 1_000 + self.sent + i,
                pid: 4242,
                tid: 4242,
                cgroup_id: 1,
                comm: "storm".to_owned(),
                kind: AuditKind::SeccompDenied {
                    arch: 0xC000_003E,
                    syscall_nr: 140,
                    action: DenialAction::Errno,
                    errno: 13,
                },
            };
            self.records.blocking_send(record).unwrap();
        }
        self.sent += n;
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    fn written(&self) -> u64 {
        self.running()
            .audit_stats()
            .written(AuditAction::SeccompDenied)
    }

    fn dropped(&self, reason: DropReason) -> u64 {
        self.running().audit_stats().dropped(reason)
    }

    /// Waits until every record sent was written or dropped.
    fn settle(&self) {
        wait_for(
            Duration::from_secs(10),
            "every event written or dropped",
            || {
                let accounted = self.written()
                    + self.dropped(DropReason::WriteFailed)
                    + self.dropped(DropReason::LogUnavailable);
                (accounted == self.sent).then_some(())
            },
        );
    }

    fn reopen(&self) {
        self.running().reopen_audit_log();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.shutdown());
        }
    }
}

/// The lines of `path`: each parsed, or the raw text of one that is not an
/// audit event.
fn lines(path: &Path) -> Vec<Result<AuditEvent, String>> {
    let data = fs::read(path).unwrap_or_default();
    assert!(
        data.is_empty() || data.ends_with(b"\n"),
        "{} does not end with a newline",
        path.display()
    );
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| AuditEvent::parse_line(l).map_err(|_| String::from_utf8_lossy(l).into_owned()))
        .collect()
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = temp_dir("audit-tmpfs");
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .expect("mounting a tmpfs");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_disk_leaves_whole_lines_and_exact_counts() {
    skip_if!(moatd_common::not_root());
    let fs = Tmpfs::mount("64k");
    let log = fs.path().join("audit.jsonl");
    // Half the file system taken by something else.
    let filler = fs.path().join("filler");
    fs::write(&filler, vec![0u8; 32 * 1024]).unwrap();
    let mut agent = Agent::start(&log).unwrap();

    // A storm far larger than the space left.
    agent.deny(400);
    agent.settle();
    let on_disk = lines(&log);
    let bad: Vec<&String> = on_disk.iter().filter_map(|l| l.as_ref().err()).collect();
    assert!(bad.is_empty(), "lines that do not parse: {bad:?}");
    let written = agent.written();
    let failed = agent.dropped(DropReason::WriteFailed);
    eprintln!(
        "full disk: {written} written ({} bytes), {failed} dropped",
        fs::metadata(&log).unwrap().len()
    );
    assert_eq!(on_disk.len() as u64, written, "lines on disk vs written");
    assert_eq!(written + failed, 400);
    assert!(
        written > 0 && failed > 0,
        "{written} written, {failed} failed"
    );
    assert_eq!(agent.dropped(DropReason::LogUnavailable), 0);

    // Space comes back: the next events are written whole, after the others.
    fs::remove_file(&filler).unwrap();
    agent.deny(40);
    agent.settle();
    let on_disk = lines(&log);
    assert!(on_disk.iter().all(Result::is_ok), "{on_disk:?}");
    assert_eq!(agent.written(), written + 40);
    assert_eq!(on_disk.len() as u64, written + 40);
    assert_eq!(agent.dropped(DropReason::WriteFailed), failed);
}

#[test]
fn a_partial_last_line_is_terminated_before_the_next_event() {
    let tmp = temp_dir("audit-partial");
    let log = tmp.path().join("audit.jsonl");
    // What a crash in the middle of a write leaves: a whole line, then part of
    // one.
    fs::write(
        &log,
        "{\"event\":{\"action\":\"seccomp_denied\"}}\n{\"@timestamp\":\"2026-",
    )
    .unwrap();
    let mut agent = Agent::start(&log).unwrap();
    agent.deny(3);
    agent.settle();
    let on_disk = lines(&log);
    assert_eq!(on_disk.len(), 5, "{on_disk:?}");
    assert!(on_disk[0].is_ok());
    assert_eq!(on_disk[1], Err("{\"@timestamp\":\"2026-".to_owned()));
    assert!(on_disk[2..].iter().all(Result::is_ok), "{on_disk:?}");
    assert_eq!(agent.written(), 3);
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

#[test]
fn what_is_not_a_regular_file_of_moatds_is_refused_at_start_without_blocking() {
    let tmp = temp_dir("audit-refuse");
    let fifo = tmp.path().join("fifo.jsonl");
    mkfifo(&fifo);
    let started = std::time::Instant::now();
    let err = Agent::start(&fifo).err().expect("a FIFO refused");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(format!("{err:#}").contains("FIFO"), "{err:#}");

    let target = tmp.path().join("target");
    fs::write(&target, "precious\n").unwrap();
    let link = tmp.path().join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = Agent::start(&link).err().expect("a symlink refused");
    assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");

    let hard = tmp.path().join("hard.jsonl");
    fs::hard_link(&target, &hard).unwrap();
    let err = Agent::start(&hard)
        .err()
        .expect("a hard-linked file refused");
    assert!(format!("{err:#}").contains("hard links"), "{err:#}");

    let dir = tmp.path().join("dir.jsonl");
    fs::create_dir(&dir).unwrap();
    assert!(Agent::start(&dir).is_err());
}

#[test]
fn a_file_of_another_user_is_refused() {
    skip_if!(moatd_common::not_root());
    let tmp = temp_dir("audit-owner");
    let log = tmp.path().join("audit.jsonl");
    fs::write(&log, "").unwrap();
    nix::unistd::chown(&log, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let err = Agent::start(&log).err().expect("a file of nobody refused");
    assert!(format!("{err:#}").contains("uid 65534"), "{err:#}");
}

/// SIGHUP after the path became a FIFO: events go on to the file open until
/// then while it has a name, then are dropped and counted, and the writer
/// never blocks; the path is taken again once it is a regular file.
#[test]
fn a_fifo_at_the_path_after_sighup_never_blocks_and_every_event_is_counted() {
    let tmp = temp_dir("audit-fifo");
    let log = tmp.path().join("audit.jsonl");
    let rotated = tmp.path().join("audit.jsonl.1");
    let mut agent = Agent::start(&log).unwrap();
    agent.deny(10);
    agent.settle();

    fs::rename(&log, &rotated).unwrap();
    mkfifo(&log);
    agent.reopen();
    agent.deny(150);
    agent.settle();
    assert_eq!(agent.written(), 160);
    assert_eq!(lines(&rotated).len(), 160, "the old file holds them all");

    // The old file deleted too: nothing left to write to.
    fs::remove_file(&rotated).unwrap();
    agent.deny(150);
    agent.settle();
    assert_eq!(agent.written(), 160);
    assert_eq!(agent.dropped(DropReason::LogUnavailable), 150);
    assert_eq!(agent.dropped(DropReason::WriteFailed), 0);

    // A regular file at the path again: taken within the retry interval.
    fs::remove_file(&log).unwrap();
    std::thread::sleep(moat_agent::export::audit_log::RETRY + Duration::from_millis(200));
    agent.deny(5);
    agent.settle();
    assert_eq!(agent.written(), 165);
    assert_eq!(lines(&log).len(), 5);

    // And the shutdown is prompt.
    let started = std::time::Instant::now();
    drop(agent);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_deleted_log_is_recreated_rather_than_written_into_the_void() {
    let tmp = temp_dir("audit-deleted");
    let log = tmp.path().join("audit.jsonl");
    let mut agent = Agent::start(&log).unwrap();
    agent.deny(2);
    agent.settle();
    fs::remove_file(&log).unwrap();
    agent.deny(3);
    agent.settle();
    assert_eq!(lines(&log).len(), 3);
    assert_eq!(agent.written(), 5);
}
