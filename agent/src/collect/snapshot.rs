//! The snapshot the collector publishes: every series moatd serves from the
//! kernel counters and the pids cgroups, already attributed to workloads and
//! summed per label set. Immutable once published; the exporters only read it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use moat_api::metrics::{denial_action, fork_kind};
use tokio::sync::{mpsc, oneshot, watch};

use super::{attribution::Attributor, burst::ForkTotal, names::NameCache, pids::PidsCgroup};
use crate::kernel::{DenialAction, KernelSnapshot, ProcessEventKind};

/// Label values, in the family's label order.
pub type Labels = Vec<Arc<str>>;

/// Values summed per label set, in label order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series(pub BTreeMap<Labels, f64>);

impl Series {
    /// Adds `value` to the series `labels`.
    pub fn add(&mut self, labels: Labels, value: f64) {
        *self.0.entry(labels).or_insert(0.0) += value;
    }
}

/// What the collector read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Increases with every snapshot published.
    pub seq: u64,
    /// Why the kernel maps could not be read, when they could not (the kernel
    /// series are then empty: a scrape must fail rather than show resets).
    pub kernel_error: Option<String>,
    /// `moat_seccomp_denials_total`.
    pub denials: Series,
    /// `moat_forks_total`.
    pub forks: Series,
    /// `moat_execs_total`.
    pub execs: Series,
    /// `moat_exits_total`.
    pub exits: Series,
    /// `moat_fork_failures_total`.
    pub fork_failures: Series,
    /// `moat_userns_created_total`.
    pub userns: Series,
    /// `moat_ebpf_map_full_total`.
    pub map_full: Series,
    /// The kernel's part of `moat_audit_events_dropped_total` (`rate_limited`,
    /// `buffer_full`).
    pub kernel_dropped: Series,
    /// `moat_pids_current`.
    pub pids_current: Series,
    /// `moat_pids_limit`.
    pub pids_limit: Series,
    /// `moat_pids_limit_hits_total`.
    pub pids_hits: Series,
    /// `moat_workload_label_overflow_total`.
    pub label_overflow: u64,
    /// Derived audit events (pids_limit_reached, fork_burst) dropped because
    /// the writer's queue stayed full (`reason="queue_full"`).
    pub audit_queue_dropped: u64,
    /// Forks (processes and threads) per cgroup, attributed: what the fork
    /// burst detector reads.
    pub fork_totals: Vec<ForkTotal>,
    /// Seccomp denials of every workload, for the last log line.
    pub denials_total: u64,
    /// Forks of every workload, for the last log line.
    pub forks_total: u64,
}

impl Snapshot {
    /// Attributes and sums a kernel reading (or its failure) and the pids
    /// cgroups' last reading. Labels are admitted in a fixed order (denials,
    /// process events, pids cgroups), so which workloads get a label under the
    /// cap does not depend on timing.
    pub fn build(
        seq: u64,
        reading: Result<&KernelSnapshot, String>,
        attributor: &mut Attributor,
        names: &mut NameCache,
        pids: &[PidsCgroup],
        pids_retired_hits: &BTreeMap<Arc<str>, u64>,
        audit_queue_dropped: u64,
    ) -> Snapshot {
        let mut out = Snapshot {
            seq,
            audit_queue_dropped,
            ..Snapshot::default()
        };
        match reading {
            Ok(reading) => out.add_kernel(reading, attributor, names),
            Err(err) => out.kernel_error = Some(err),
        }
        for cgroup in pids {
            let workload = attributor.admit(&cgroup.workload);
            out.pids_current
                .add(vec![workload.clone()], cgroup.current as f64);
            if let Some(limit) = cgroup.limit {
                out.pids_limit.add(vec![workload.clone()], limit as f64);
            }
            out.pids_hits.add(vec![workload], cgroup.limit_hits as f64);
        }
        // Removed cgroups' final counts: a workload's counter never goes down
        // when its cgroup goes away.
        for (workload, hits) in pids_retired_hits {
            out.pids_hits.add(vec![workload.clone()], *hits as f64);
        }
        out.label_overflow = attributor.label_overflow_total();
        out
    }

    fn add_kernel(
        &mut self,
        reading: &KernelSnapshot,
        attributor: &mut Attributor,
        names: &mut NameCache,
    ) {
        let empty: Arc<str> = Arc::from("");
        let [errno, trap, kill] = [
            denial_action::ERRNO,
            denial_action::TRAP,
            denial_action::KILL,
        ]
        .map(Arc::<str>::from);
        for denial in &reading.denials {
            let workload = attributor.attribute_id(denial.cgroup_id).workload;
            let (action, errno_label) = match denial.action {
                DenialAction::Errno => (errno.clone(), names.errno(denial.errno)),
                DenialAction::Trap => (trap.clone(), empty.clone()),
                DenialAction::Kill => (kill.clone(), empty.clone()),
            };
            self.denials.add(
                vec![
                    workload,
                    names.syscall(denial.arch, denial.syscall_nr),
                    action,
                    errno_label,
                ],
                denial.count as f64,
            );
            self.denials_total = self.denials_total.wrapping_add(denial.count);
        }
        let process: Arc<str> = Arc::from(fork_kind::PROCESS);
        let thread: Arc<str> = Arc::from(fork_kind::THREAD);
        let mut forks_per_cgroup: BTreeMap<u64, ForkTotal> = BTreeMap::new();
        for event in &reading.process_events {
            let attribution = attributor.attribute_id(event.cgroup_id);
            if event.kind.is_fork() {
                forks_per_cgroup
                    .entry(event.cgroup_id)
                    .or_insert_with(|| ForkTotal {
                        cgroup_id: event.cgroup_id,
                        workload: attribution.workload.clone(),
                        path: attribution.cgroup_path.clone(),
                        total: 0,
                    })
                    .total += event.count;
            }
            let workload = attribution.workload;
            let count = event.count as f64;
            match event.kind {
                ProcessEventKind::ForkProcess => {
                    self.forks.add(vec![workload, process.clone()], count);
                }
                ProcessEventKind::ForkThread => {
                    self.forks.add(vec![workload, thread.clone()], count);
                }
                ProcessEventKind::Exec => self.execs.add(vec![workload], count),
                ProcessEventKind::Exit => self.exits.add(vec![workload], count),
                ProcessEventKind::ForkFailed => {
                    self.fork_failures
                        .add(vec![workload, names.errno(event.errno)], count);
                }
                ProcessEventKind::UsernsCreated => self.userns.add(vec![workload], count),
            }
            if event.kind.is_fork() {
                self.forks_total = self.forks_total.wrapping_add(event.count);
            }
        }
        self.fork_totals = forks_per_cgroup.into_values().collect();
        for (map, count) in &reading.map_full {
            self.map_full.add(vec![Arc::from(*map)], *count as f64);
        }
        for (reason, count) in &reading.audit_dropped {
            self.kernel_dropped
                .add(vec![Arc::from(*reason)], *count as f64);
        }
    }
}

/// A request for a snapshot taken after it was made.
pub(super) type RefreshRequest = oneshot::Sender<Arc<Snapshot>>;

/// The reading end of the collector: the last snapshot published, and fresh ones
/// on demand. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SnapshotSource {
    latest: watch::Receiver<Arc<Snapshot>>,
    refresh: mpsc::Sender<RefreshRequest>,
}

impl SnapshotSource {
    pub(super) fn new(
        latest: watch::Receiver<Arc<Snapshot>>,
        refresh: mpsc::Sender<RefreshRequest>,
    ) -> Self {
        Self { latest, refresh }
    }

    /// The last snapshot published.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.latest.borrow().clone()
    }

    /// A snapshot the collector takes after this call, so that it includes
    /// everything counted before it; the last one published if the collector
    /// does not answer within `bound` (it is busy, or stopped).
    pub async fn fresh(&self, bound: Duration) -> Arc<Snapshot> {
        let (tx, rx) = oneshot::channel();
        if self.refresh.try_send(tx).is_ok() {
            if let Ok(Ok(snapshot)) = tokio::time::timeout(bound, rx).await {
                return snapshot;
            }
            log::warn!("the collector did not answer within {bound:?}; serving its last snapshot");
        }
        self.latest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(seq: u64) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            seq,
            ..Snapshot::default()
        })
    }

    #[tokio::test]
    async fn a_scrape_gets_a_snapshot_taken_after_it_asked() {
        let (publish, latest) = watch::channel(snapshot(1));
        let (refresh, mut requests) = mpsc::channel::<RefreshRequest>(4);
        let source = SnapshotSource::new(latest, refresh);
        let collector = tokio::spawn(async move {
            let request = requests.recv().await.unwrap();
            let fresh = snapshot(2);
            publish.send_replace(fresh.clone());
            request.send(fresh).unwrap();
        });
        assert_eq!(source.fresh(Duration::from_secs(5)).await.seq, 2);
        collector.await.unwrap();
        assert_eq!(source.latest().seq, 2);
    }

    #[tokio::test]
    async fn a_collector_that_does_not_answer_costs_the_bound_then_the_last_snapshot() {
        let (_publish, latest) = watch::channel(snapshot(7));
        let (refresh, _requests) = mpsc::channel::<RefreshRequest>(4);
        let source = SnapshotSource::new(latest, refresh);
        let started = std::time::Instant::now();
        assert_eq!(source.fresh(Duration::from_millis(50)).await.seq, 7);
        assert!(started.elapsed() >= Duration::from_millis(50));

        // A stopped collector: at once.
        let (_publish, latest) = watch::channel(snapshot(8));
        let (refresh, requests) = mpsc::channel::<RefreshRequest>(4);
        drop(requests);
        let source = SnapshotSource::new(latest, refresh);
        let started = std::time::Instant::now();
        assert_eq!(source.fresh(Duration::from_secs(5)).await.seq, 8);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
