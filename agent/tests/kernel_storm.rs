//! Storm: 1,000,000 denied syscalls from one workload, as fast as it can issue
//! them. The denial count is exact; audit records are limited to the cgroup's
//! budget (burst + rate x duration); every record not delivered is counted.

mod kernel_common;

use std::time::{Duration, Instant};

use kernel_common::{denials_of, named, spawn_in, Filter, TestCgroup};
use moat_agent::{
    kernel::{AuditReader, Kernel},
    kernel::{DenialAction, KernelSnapshot, KernelSource, ProcessEventKind},
};

const STORM: i64 = 1_000_000;

/// Every event that gives rise to an audit record, over all cgroups.
fn audit_eligible(snapshot: &KernelSnapshot) -> u64 {
    let denials: u64 = snapshot.denials.iter().map(|d| d.count).sum();
    let process: u64 = snapshot
        .process_events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                ProcessEventKind::ForkFailed | ProcessEventKind::UsernsCreated
            )
        })
        .map(|e| e.count)
        .sum();
    denials + process
}

fn dropped(snapshot: &KernelSnapshot) -> u64 {
    snapshot.audit_dropped.iter().map(|&(_, n)| n).sum()
}

/// Drains `reader`, counting (all records, records of `cgroup`).
fn drain(reader: &mut AuditReader, cgroup: u64, totals: &mut (u64, u64)) -> u64 {
    let mut n = 0;
    while let Some(record) = reader.try_next() {
        n += 1;
        totals.0 += 1;
        if record.cgroup_id == cgroup {
            totals.1 += 1;
        }
    }
    n
}

#[test]
fn a_storm_of_denials_is_exact_and_audit_is_rate_limited() {
    skip_unless_privileged!();
    let config = kernel_common::config();
    let mut kernel = Kernel::load(config.clone()).expect("loading the kernel side");
    let mut reader = kernel.audit_reader().expect("audit reader");
    let filter = Filter::allow_except(
        r#"{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}"#,
    );
    let cgroup = TestCgroup::v2("storm");
    let started = Instant::now();
    let mut child = spawn_in(&[&cgroup], |shared| {
        filter.install(false);
        let mut denied = 0;
        for _ in 0..STORM {
            if sys!(libc::SYS_getppid) == -13 {
                denied += 1;
            }
        }
        kernel_common::report(shared, 0, denied);
        0
    });
    // Read records while the storm runs, as the agent does.
    let mut totals = (0u64, 0u64);
    let mut status = None;
    while status.is_none() {
        drain(&mut reader, cgroup.id(), &mut totals);
        status = child.try_wait();
        if status.is_none() {
            let _ = reader.wait(Duration::from_millis(20));
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "storm took too long"
        );
    }
    let elapsed = started.elapsed();
    let raw = status.unwrap_or_default();
    assert!(
        libc::WIFEXITED(raw) && libc::WEXITSTATUS(raw) == 0,
        "wait status {raw:#x}"
    );
    assert_eq!(child.value(0), STORM, "denials the workload saw");

    // Reconcile at a quiet moment: nothing counted or dropped between two
    // snapshots, and no record arriving after the drain between them.
    let mut settled = None;
    for _ in 0..50 {
        let before = kernel.snapshot().expect("snapshot");
        drain(&mut reader, cgroup.id(), &mut totals);
        let after = kernel.snapshot().expect("snapshot");
        let late = drain(&mut reader, cgroup.id(), &mut totals);
        if late == 0
            && audit_eligible(&before) == audit_eligible(&after)
            && dropped(&before) == dropped(&after)
        {
            settled = Some(after);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let snapshot = settled.expect("the node never went quiet for a reconciliation");

    assert_eq!(
        denials_of(&snapshot, cgroup.id()),
        kernel_common::only_getppid(DenialAction::Errno, 13, STORM as u64)
    );
    let (delivered_all, delivered) = totals;
    let budget = u64::from(config.audit_burst)
        + (elapsed.as_secs_f64() * f64::from(config.audit_rate_per_sec)).ceil() as u64
        + 1;
    eprintln!(
        "storm: {STORM} denials in {elapsed:.2?} ({:.0}/s); {delivered} audit records for the \
         cgroup (budget {budget}); drops {:?}; map_full {:?}",
        STORM as f64 / elapsed.as_secs_f64(),
        snapshot.audit_dropped,
        snapshot.map_full,
    );
    assert!(
        delivered >= u64::from(config.audit_burst) && delivered <= budget,
        "{delivered} records delivered, budget {budget}"
    );
    let rate_limited = named(&snapshot.audit_dropped, "rate_limited");
    assert!(rate_limited > 0);
    assert_eq!(named(&snapshot.audit_dropped, "buffer_full"), 0);
    // Every audit-eligible event since the load was delivered or counted as dropped.
    let eligible = audit_eligible(&snapshot);
    assert_eq!(
        delivered_all + dropped(&snapshot),
        eligible,
        "delivered + dropped == eligible"
    );
    if eligible == STORM as u64 {
        // Nothing else on the node: the statement holds for the cgroup itself.
        assert_eq!(delivered + dropped(&snapshot), STORM as u64);
    } else {
        eprintln!(
            "note: {} other audit-eligible events on the node",
            eligible - STORM as u64
        );
    }
    assert!(
        snapshot.map_full.iter().all(|&(_, n)| n == 0),
        "{:?}",
        snapshot.map_full
    );
}
