//! The metrics moatd serves on `/metrics`, built at scrape time.
//!
//! [`MoatCollector`] is a custom `prometheus` collector: each scrape it takes a
//! [`KernelSnapshot`] (the kernel maps, summed over CPUs), attributes every cgroup
//! id to a workload label, sums series that share labels, and adds the pids
//! cgroups' last reading, the audit counts and the label overflow. The standard
//! `process_*` metrics come from the `prometheus` crate's process collector.
//! [`Metrics::render`] encodes everything in the Prometheus text format 0.0.4 or
//! in OpenMetrics 1.0.0 ([`Format`]).

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{Arc, Mutex, MutexGuard},
};

use prometheus::{
    core::{Collector, Desc},
    proto::{self, MetricFamily, MetricType},
    Encoder as _, Registry, TextEncoder,
};

mod format;
mod openmetrics;

pub use format::Format;
pub use openmetrics::encode_openmetrics;

use crate::{
    collect::{attribution::Attributor, names::NameCache, pids::PidsCgroup},
    export::audit_log::{AuditAction, AuditStats},
    kernel::{DenialAction, KernelSource, ProcessEventKind},
};

/// The latest reading of the workloads' pids cgroups, shared with the poller.
pub type PidsReading = Arc<Mutex<Vec<PidsCgroup>>>;

/// What a scrape reads, besides the kernel.
#[derive(Clone)]
pub struct Sources {
    /// The kernel maps.
    pub kernel: Arc<dyn KernelSource>,
    /// cgroup id → workload.
    pub attributor: Arc<Mutex<Attributor>>,
    /// The pids cgroups.
    pub pids: PidsReading,
    /// Audit event counts.
    pub audit: Arc<AuditStats>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// Metric names, types, help texts and label names: exactly the table.
struct Spec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const DENIALS: Spec = Spec {
    name: "moat_seccomp_denials_total",
    help: "Syscalls refused by a seccomp filter, by workload, syscall (name for the caller's architecture, number when unknown), action (errno, trap, kill) and errno (empty for trap and kill).",
    kind: MetricType::COUNTER,
    labels: &["workload", "syscall", "action", "errno"],
};
const FORKS: Spec = Spec {
    name: "moat_forks_total",
    help: "New tasks, by workload and kind (process or thread).",
    kind: MetricType::COUNTER,
    labels: &["workload", "kind"],
};
const EXECS: Spec = Spec {
    name: "moat_execs_total",
    help: "Successful execve and execveat calls, by workload.",
    kind: MetricType::COUNTER,
    labels: &["workload"],
};
const EXITS: Spec = Spec {
    name: "moat_exits_total",
    help: "Processes that ended (last thread exited), by workload.",
    kind: MetricType::COUNTER,
    labels: &["workload"],
};
const FORK_FAILURES: Spec = Spec {
    name: "moat_fork_failures_total",
    help: "fork, vfork, clone and clone3 calls that failed, by workload and errno (EAGAIN for a pids limit).",
    kind: MetricType::COUNTER,
    labels: &["workload", "errno"],
};
const USERNS: Spec = Spec {
    name: "moat_userns_created_total",
    help: "User namespaces created (clone, clone3 or unshare with CLONE_NEWUSER), by workload.",
    kind: MetricType::COUNTER,
    labels: &["workload"],
};
const PIDS_CURRENT: Spec = Spec {
    name: "moat_pids_current",
    help: "Tasks (threads included) in the workload's pids cgroup.",
    kind: MetricType::GAUGE,
    labels: &["workload"],
};
const PIDS_LIMIT: Spec = Spec {
    name: "moat_pids_limit",
    help: "pids.max of the workload's pids cgroup; absent when it is max (no limit of its own).",
    kind: MetricType::GAUGE,
    labels: &["workload"],
};
const PIDS_HITS: Spec = Spec {
    name: "moat_pids_limit_hits_total",
    help: "Forks refused by the workload's pids limit (the max count of pids.events).",
    kind: MetricType::COUNTER,
    labels: &["workload"],
};
const AUDIT_EVENTS: Spec = Spec {
    name: "moat_audit_events_total",
    help: "Audit events written to the audit log, by action.",
    kind: MetricType::COUNTER,
    labels: &["action"],
};
const AUDIT_DROPPED: Spec = Spec {
    name: "moat_audit_events_dropped_total",
    help: "Audit events not written, by reason (rate_limited and buffer_full in the kernel, write_failed in moatd).",
    kind: MetricType::COUNTER,
    labels: &["reason"],
};
const MAP_FULL: Spec = Spec {
    name: "moat_ebpf_map_full_total",
    help: "Updates of an eBPF map that failed because it was full, by map.",
    kind: MetricType::COUNTER,
    labels: &["map"],
};
const OVERFLOW: Spec = Spec {
    name: "moat_workload_label_overflow_total",
    help: "Workloads labelled \"other\" because the number of workload labels reached its cap.",
    kind: MetricType::COUNTER,
    labels: &[],
};
const BUILD_INFO: Spec = Spec {
    name: "moat_build_info",
    help: "Always 1; the moatd version and the running kernel's release as labels.",
    kind: MetricType::GAUGE,
    labels: &["version", "kernel"],
};

const SPECS: [&Spec; 14] = [
    &DENIALS,
    &FORKS,
    &EXECS,
    &EXITS,
    &FORK_FAILURES,
    &USERNS,
    &PIDS_CURRENT,
    &PIDS_LIMIT,
    &PIDS_HITS,
    &AUDIT_EVENTS,
    &AUDIT_DROPPED,
    &MAP_FULL,
    &OVERFLOW,
    &BUILD_INFO,
];

/// The reasons of `moat_audit_events_dropped_total` always present, at 0 until
/// something is dropped.
const DROP_REASONS: [&str; 3] = ["rate_limited", "buffer_full", "write_failed"];

type Labels = Vec<Arc<str>>;

/// Sums values per label set, in label order.
#[derive(Default)]
struct Series(BTreeMap<Labels, f64>);

impl Series {
    fn add(&mut self, labels: Labels, value: f64) {
        *self.0.entry(labels).or_insert(0.0) += value;
    }

    fn into_family(self, spec: &Spec) -> MetricFamily {
        let metrics = self
            .0
            .into_iter()
            .map(|(values, value)| {
                let mut metric = proto::Metric::default();
                metric.set_label(
                    spec.labels
                        .iter()
                        .zip(values)
                        .map(|(name, value)| {
                            let mut pair = proto::LabelPair::default();
                            pair.set_name((*name).to_owned());
                            pair.set_value(value.to_string());
                            pair
                        })
                        .collect(),
                );
                if spec.kind == MetricType::COUNTER {
                    let mut counter = proto::Counter::default();
                    counter.set_value(value);
                    metric.set_counter(counter);
                } else {
                    let mut gauge = proto::Gauge::default();
                    gauge.set_value(value);
                    metric.set_gauge(gauge);
                }
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(spec.name.to_owned());
        family.set_help(spec.help.to_owned());
        family.set_field_type(spec.kind);
        family.set_metric(metrics);
        family
    }
}

/// The custom collector of every `moat_*` metric.
pub struct MoatCollector {
    sources: Sources,
    descs: Vec<Desc>,
    build_labels: Labels,
    /// Syscall and errno label values, kept across scrapes.
    names: Mutex<NameCache>,
    /// Why the last collection could not read the kernel maps, if it could not.
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for MoatCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoatCollector").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MoatCollector {
    /// A collector over `sources`; `kernel_release` labels `moat_build_info`.
    pub fn new(sources: Sources, kernel_release: &str) -> prometheus::Result<Self> {
        let descs = SPECS
            .iter()
            .map(|spec| {
                Desc::new(
                    spec.name.to_owned(),
                    spec.help.to_owned(),
                    spec.labels.iter().map(|l| (*l).to_owned()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self {
            sources,
            descs,
            build_labels: vec![
                Arc::from(env!("CARGO_PKG_VERSION")),
                Arc::from(kernel_release),
            ],
            names: Mutex::new(NameCache::default()),
            last_error: Mutex::new(None),
        })
    }

    fn collect_all(&self) -> Vec<MetricFamily> {
        let snapshot = match self.sources.kernel.snapshot() {
            Ok(snapshot) => {
                *lock(&self.last_error) = None;
                Some(snapshot)
            }
            Err(err) => {
                let mut message = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(cause) = source {
                    let _ = write!(message, ": {cause}");
                    source = cause.source();
                }
                log::warn!("scrape: reading the kernel maps failed: {message}");
                *lock(&self.last_error) = Some(message);
                None
            }
        };

        let mut denials = Series::default();
        let mut forks = Series::default();
        let mut execs = Series::default();
        let mut exits = Series::default();
        let mut fork_failures = Series::default();
        let mut userns = Series::default();
        let mut map_full = Series::default();
        let mut dropped = Series::default();
        for reason in DROP_REASONS {
            dropped.add(vec![Arc::from(reason)], 0.0);
        }
        dropped.add(
            vec![Arc::from("write_failed")],
            self.sources.audit.write_failed() as f64,
        );

        let mut attributor = lock(&self.sources.attributor);
        if let Some(snapshot) = &snapshot {
            let mut names = lock(&self.names);
            let empty: Arc<str> = Arc::from("");
            let [errno, trap, kill] = [DenialAction::Errno, DenialAction::Trap, DenialAction::Kill]
                .map(|action| Arc::<str>::from(action.as_str()));
            for denial in &snapshot.denials {
                let workload = attributor.attribute_id(denial.cgroup_id).workload;
                let (action, errno_label) = match denial.action {
                    DenialAction::Errno => (errno.clone(), names.errno(denial.errno)),
                    DenialAction::Trap => (trap.clone(), empty.clone()),
                    DenialAction::Kill => (kill.clone(), empty.clone()),
                };
                denials.add(
                    vec![
                        workload,
                        names.syscall(denial.arch, denial.syscall_nr),
                        action,
                        errno_label,
                    ],
                    denial.count as f64,
                );
            }
            let process: Arc<str> = Arc::from("process");
            let thread: Arc<str> = Arc::from("thread");
            for event in &snapshot.process_events {
                let workload = attributor.attribute_id(event.cgroup_id).workload;
                let count = event.count as f64;
                match event.kind {
                    ProcessEventKind::ForkProcess => {
                        forks.add(vec![workload, process.clone()], count);
                    }
                    ProcessEventKind::ForkThread => {
                        forks.add(vec![workload, thread.clone()], count);
                    }
                    ProcessEventKind::Exec => execs.add(vec![workload], count),
                    ProcessEventKind::Exit => exits.add(vec![workload], count),
                    ProcessEventKind::ForkFailed => {
                        fork_failures.add(vec![workload, names.errno(event.errno)], count);
                    }
                    ProcessEventKind::UsernsCreated => userns.add(vec![workload], count),
                }
            }
            for (map, count) in &snapshot.map_full {
                map_full.add(vec![Arc::from(*map)], *count as f64);
            }
            for (reason, count) in &snapshot.audit_dropped {
                dropped.add(vec![Arc::from(*reason)], *count as f64);
            }
        }

        let mut pids_current = Series::default();
        let mut pids_limit = Series::default();
        let mut pids_hits = Series::default();
        for cgroup in lock(&self.sources.pids).iter() {
            let workload = attributor.admit(&cgroup.workload);
            pids_current.add(vec![workload.clone()], cgroup.current as f64);
            if let Some(limit) = cgroup.limit {
                pids_limit.add(vec![workload.clone()], limit as f64);
            }
            pids_hits.add(vec![workload], cgroup.limit_hits as f64);
        }
        let overflow = attributor.label_overflow_total();
        drop(attributor);

        let mut audit = Series::default();
        for action in AuditAction::ALL {
            audit.add(
                vec![Arc::from(action.as_str())],
                self.sources.audit.written(action) as f64,
            );
        }
        let mut overflow_series = Series::default();
        overflow_series.add(Vec::new(), overflow as f64);
        let mut build = Series::default();
        build.add(self.build_labels.clone(), 1.0);

        vec![
            denials.into_family(&DENIALS),
            forks.into_family(&FORKS),
            execs.into_family(&EXECS),
            exits.into_family(&EXITS),
            fork_failures.into_family(&FORK_FAILURES),
            userns.into_family(&USERNS),
            pids_current.into_family(&PIDS_CURRENT),
            pids_limit.into_family(&PIDS_LIMIT),
            pids_hits.into_family(&PIDS_HITS),
            audit.into_family(&AUDIT_EVENTS),
            dropped.into_family(&AUDIT_DROPPED),
            map_full.into_family(&MAP_FULL),
            overflow_series.into_family(&OVERFLOW),
            build.into_family(&BUILD_INFO),
        ]
    }
}

impl Collector for MoatCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.collect_all()
    }
}

/// The registry behind `/metrics`.
pub struct Metrics {
    registry: Registry,
    collector: Arc<MoatCollector>,
    /// One scrape at a time: the collector's error slot belongs to one scrape.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Forwards to a shared collector, so [`Metrics`] can read its error slot.
struct Shared(Arc<MoatCollector>);

impl Collector for Shared {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

impl Metrics {
    /// The `moat_*` collector over `sources` and the process collector.
    pub fn new(sources: Sources, kernel_release: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let collector = Arc::new(MoatCollector::new(sources, kernel_release)?);
        registry.register(Box::new(Shared(collector.clone())))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            collector,
            scrape: Mutex::new(()),
        })
    }

    /// Collects everything and encodes it. Fails (the scrape gets a 500) when the
    /// kernel maps could not be read: counters silently missing would read as resets.
    pub fn render(&self, format: Format) -> Result<String, String> {
        let _one_at_a_time = lock(&self.scrape);
        let families = self.registry.gather();
        if let Some(error) = lock(&self.collector.last_error).take() {
            return Err(format!("reading the kernel maps failed: {error}"));
        }
        match format {
            Format::Text => {
                let mut out = Vec::with_capacity(16 * 1024);
                TextEncoder::new()
                    .encode(&families, &mut out)
                    .map_err(|e| e.to_string())?;
                String::from_utf8(out).map_err(|e| e.to_string())
            }
            Format::OpenMetrics => Ok(encode_openmetrics(&families)),
        }
    }
}
