//! Loading attaches every program; audit records flow through the channel of
//! `audit_records`; dropping the `Kernel` stops the reader thread, detaches the
//! programs and unloads them.

mod kernel_common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use kernel_common::{spawn_in, Filter, TestCgroup};
use moat_agent::{
    kernel::AuditKind,
    kernel::{Kernel, Mechanism},
};

fn loaded_ids() -> HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|info| info.id())
        .collect()
}

#[test]
fn records_flow_and_drop_unloads_everything() {
    skip_unless_privileged!();
    let mut kernel = Kernel::load(kernel_common::config()).expect("loading the kernel side");
    let ids = kernel.program_ids();
    // The scheduler and cgroup programs, and the mechanism's.
    let expected = match kernel.tracing_mode().mechanism {
        Mechanism::Pairing => moat_common::KERNEL_PROGRAMS.len(),
        Mechanism::Fexit => 4 + 1 + moat_common::FEXIT_EVENT_PROGRAMS.len(),
        Mechanism::Signal => 4 + moat_common::FATAL_PROGRAMS.len(),
    };
    assert_eq!(kernel.attached_programs().len(), expected);
    assert_eq!(ids.len(), expected);
    let loaded = loaded_ids();
    assert!(
        ids.iter().all(|id| loaded.contains(id)),
        "{ids:?} not all loaded"
    );
    let mut records = kernel.audit_records().expect("audit records");
    assert!(
        kernel.audit_records().is_err(),
        "the ring buffer is handed out once"
    );

    let filter = Filter::allow_except(
        r#"{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}"#,
    );
    let cgroup = TestCgroup::v2("lifecycle");
    let mut child = spawn_in(&[&cgroup], |_| {
        filter.install(false);
        for _ in 0..3 {
            sys!(libc::SYS_getppid);
        }
        0
    });
    child.wait_success();
    let mut mine = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while mine < 3 {
        assert!(Instant::now() < deadline, "only {mine} records arrived");
        match records.try_recv() {
            Ok(record) if record.cgroup_id == cgroup.id() => {
                assert_eq!(record.pid, child.pid as u32);
                assert!(matches!(
                    record.kind,
                    AuditKind::SeccompDenied {
                        syscall_nr: 110,
                        errno: 1,
                        ..
                    }
                ));
                mine += 1;
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }

    let started = Instant::now();
    drop(kernel);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );
    // The reader thread is gone, so the channel ends once drained.
    while records.blocking_recv().is_some() {}
    // Programs are freed after an RCU grace period.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let loaded = loaded_ids();
        let left: Vec<_> = ids.iter().filter(|id| loaded.contains(id)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "programs {left:?} still loaded after drop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Loads at once into one new pin directory (as two moatd starting together,
/// or tests in one process) all succeed: without the pin directory's lock
/// each found the recording maps unpinned, and all but one failed to pin
/// them with EEXIST.
#[test]
fn concurrent_loads_share_one_new_pin_directory() {
    skip_unless_privileged!();
    const LOADS: usize = 4;
    for round in 0..3 {
        let dir = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/moat-test-concurrent-{}-{round}",
            std::process::id()
        ));
        let barrier = std::sync::Barrier::new(LOADS);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..LOADS)
                .map(|_| {
                    s.spawn(|| {
                        let mut config = kernel_common::config();
                        config.record_pin_dir = dir.clone();
                        barrier.wait();
                        Kernel::load(config).map(drop).map_err(|e| format!("{e:?}"))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let _ = std::fs::remove_dir_all(&dir);
        for result in results {
            result.unwrap_or_else(|e| panic!("round {round}: a concurrent load failed: {e}"));
        }
    }
}
