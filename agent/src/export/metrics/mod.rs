//! The metrics moatd serves on `/metrics`, rendered from the collector's last
//! snapshot.
//!
//! [`MoatCollector`] is a custom `prometheus` collector that turns a
//! [`Snapshot`] (the kernel counters and pids cgroups, already attributed by the
//! collector) and the audit writer's counts into the `moat_*` families of
//! [`moat_api::metrics::FAMILIES`]. The standard `process_*` metrics come from
//! the `prometheus` crate's process collector. [`Metrics::render`] encodes
//! everything in the Prometheus text format 0.0.4 or in OpenMetrics 1.0.0
//! ([`Format`]). Rendering reads; it changes no attribution state.

pub mod authz;
mod format;
mod openmetrics;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

pub use format::Format;
use moat_api::{
    audit::AuditAction,
    metrics::{self as spec, drop_reason, MetricKind, MetricSpec, DROP_REASONS},
};
pub use openmetrics::encode_openmetrics;
use prometheus::{
    core::{Collector, Desc},
    proto::{self, MetricFamily, MetricType},
    Encoder as _, Registry, TextEncoder,
};

use super::{
    audit_log::{AuditStats, DropReason},
    http::HttpStats,
};
use crate::{
    collect::snapshot::{Labels, Series, Snapshot},
    kernel::TracingMode,
};

/// Why a scrape could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The collector could not read the kernel maps: counters silently missing
    /// would read as resets, so the scrape fails.
    #[error("reading the kernel maps failed: {reason}")]
    KernelMaps {
        /// Why, as the collector logged it.
        reason: String,
    },
    /// The `prometheus` crate refused to encode the families.
    #[error("encoding the metrics failed")]
    Encode(#[source] prometheus::Error),
    /// The text encoder produced something that is not UTF-8.
    #[error("the encoded metrics are not UTF-8")]
    NotUtf8(#[source] std::string::FromUtf8Error),
}

fn metric_type(kind: MetricKind) -> MetricType {
    match kind {
        MetricKind::Counter => MetricType::COUNTER,
        MetricKind::Gauge => MetricType::GAUGE,
        MetricKind::Histogram => MetricType::HISTOGRAM,
    }
}

/// The family `spec` with the values of `series`.
fn into_family(series: &Series, spec: &MetricSpec) -> MetricFamily {
    let kind = metric_type(spec.kind);
    let metrics = series
        .0
        .iter()
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
            if kind == MetricType::COUNTER {
                let mut counter = proto::Counter::default();
                counter.set_value(*value);
                metric.set_counter(counter);
            } else {
                let mut gauge = proto::Gauge::default();
                gauge.set_value(*value);
                metric.set_gauge(gauge);
            }
            metric
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(spec.name.to_owned());
    family.set_help(spec.help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// The custom collector of every `moat_*` metric.
pub struct MoatCollector {
    audit: Arc<AuditStats>,
    http: Arc<HttpStats>,
    descs: Vec<Desc>,
    build_labels: Labels,
    /// `moat_tracing_mode`'s labels, when a kernel side is loaded.
    tracing_labels: Option<Labels>,
    /// `moat_ebpf_pins_info`'s label, when a kernel side is loaded.
    pins_labels: Option<Labels>,
    /// The snapshot the scrape in progress renders.
    snapshot: Mutex<Arc<Snapshot>>,
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
    /// A collector of the audit writer's counts `audit`, the HTTP server's
    /// `http` and the snapshots it is given; `kernel_release` labels
    /// `moat_build_info`; `tracing` labels `moat_tracing_mode`, `pins`
    /// (a [`crate::kernel::PinState`]'s name) `moat_ebpf_pins_info`.
    pub fn new(
        audit: Arc<AuditStats>,
        http: Arc<HttpStats>,
        kernel_release: &str,
        tracing: Option<&TracingMode>,
        pins: Option<&str>,
    ) -> prometheus::Result<Self> {
        // The authorization plugin's families have their own collector.
        let descs = spec::FAMILIES
            .iter()
            .filter(|spec| !spec.name.starts_with("moat_authz_"))
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
            audit,
            http,
            descs,
            build_labels: vec![
                Arc::from(env!("CARGO_PKG_VERSION")),
                Arc::from(kernel_release),
            ],
            tracing_labels: tracing.map(|mode| {
                vec![
                    Arc::from(mode.tier.as_str()),
                    Arc::from(mode.mechanism.as_str()),
                ]
            }),
            pins_labels: pins.map(|state| vec![Arc::from(state)]),
            snapshot: Mutex::new(Arc::new(Snapshot::default())),
        })
    }

    fn collect_all(&self) -> Vec<MetricFamily> {
        let snapshot = lock(&self.snapshot).clone();
        let mut dropped = Series::default();
        for reason in DROP_REASONS {
            dropped.add(vec![Arc::from(reason)], 0.0);
        }
        for reason in DropReason::ALL {
            dropped.add(
                vec![Arc::from(reason.as_str())],
                self.audit.dropped(reason) as f64,
            );
        }
        dropped.add(
            vec![Arc::from(drop_reason::QUEUE_FULL)],
            snapshot.audit_queue_dropped as f64,
        );
        // The authorization plugin's events, dropped before the writer.
        dropped.add(
            vec![Arc::from(drop_reason::QUEUE_FULL)],
            self.audit.queue_full() as f64,
        );
        for (labels, value) in &snapshot.kernel_dropped.0 {
            dropped.add(labels.clone(), *value);
        }
        let mut audit = Series::default();
        for action in AuditAction::ALL {
            audit.add(
                vec![Arc::from(action.as_str())],
                self.audit.written(action) as f64,
            );
        }
        let mut overflow = Series::default();
        overflow.add(Vec::new(), snapshot.label_overflow as f64);
        let mut build = Series::default();
        build.add(self.build_labels.clone(), 1.0);
        let mut tracing = Series::default();
        if let Some(labels) = &self.tracing_labels {
            tracing.add(labels.clone(), 1.0);
        }
        let mut pins = Series::default();
        if let Some(labels) = &self.pins_labels {
            pins.add(labels.clone(), 1.0);
        }
        let mut http_open = Series::default();
        http_open.add(Vec::new(), self.http.open() as f64);
        let mut http_rejected = Series::default();
        for (reason, count) in self.http.rejected_all() {
            http_rejected.add(vec![Arc::from(reason)], count as f64);
        }

        vec![
            into_family(&snapshot.denials, &spec::SECCOMP_DENIALS),
            into_family(&snapshot.forks, &spec::FORKS),
            into_family(&snapshot.execs, &spec::EXECS),
            into_family(&snapshot.exits, &spec::EXITS),
            into_family(&snapshot.fork_failures, &spec::FORK_FAILURES),
            into_family(&snapshot.userns, &spec::USERNS_CREATED),
            into_family(&snapshot.pids_current, &spec::PIDS_CURRENT),
            into_family(&snapshot.pids_limit, &spec::PIDS_LIMIT),
            into_family(&snapshot.pids_hits, &spec::PIDS_LIMIT_HITS),
            into_family(&audit, &spec::AUDIT_EVENTS),
            into_family(&dropped, &spec::AUDIT_EVENTS_DROPPED),
            into_family(&snapshot.map_full, &spec::EBPF_MAP_FULL),
            into_family(&overflow, &spec::WORKLOAD_LABEL_OVERFLOW),
            into_family(&http_open, &spec::HTTP_CONNECTIONS_OPEN),
            into_family(&http_rejected, &spec::HTTP_CONNECTIONS_REJECTED),
            into_family(&build, &spec::BUILD_INFO),
            into_family(&tracing, &spec::TRACING_MODE),
            into_family(&pins, &spec::EBPF_PINS_INFO),
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
    /// One scrape at a time: the collector's snapshot slot belongs to one scrape.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Forwards to a shared collector, so [`Metrics`] can hand it the snapshot.
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
    /// The `moat_*` collector over the audit counts `audit` and the HTTP
    /// server's `http` (with the kernel side's `tracing` mode and `pins`
    /// state), and the process collector.
    pub fn new(
        audit: Arc<AuditStats>,
        http: Arc<HttpStats>,
        kernel_release: &str,
        tracing: Option<&TracingMode>,
        pins: Option<&str>,
    ) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let collector = Arc::new(MoatCollector::new(
            audit,
            http,
            kernel_release,
            tracing,
            pins,
        )?);
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

    /// Serves the authorization plugin's counts `stats` from now on.
    pub fn register_authz(&self, stats: Arc<authz::AuthzStats>) -> prometheus::Result<()> {
        self.registry
            .register(Box::new(authz::AuthzCollector::new(stats)?))
    }

    /// Renders `snapshot` (and the audit counts and process metrics as they are
    /// now). Fails when the snapshot says the kernel maps could not be read.
    pub fn render(&self, snapshot: Arc<Snapshot>, format: Format) -> Result<String, RenderError> {
        if let Some(reason) = &snapshot.kernel_error {
            return Err(RenderError::KernelMaps {
                reason: reason.clone(),
            });
        }
        let _one_at_a_time = lock(&self.scrape);
        *lock(&self.collector.snapshot) = snapshot;
        let families = self.registry.gather();
        match format {
            Format::Text => {
                let mut out = Vec::with_capacity(16 * 1024);
                TextEncoder::new()
                    .encode(&families, &mut out)
                    .map_err(RenderError::Encode)?;
                String::from_utf8(out).map_err(RenderError::NotUtf8)
            }
            Format::OpenMetrics => Ok(encode_openmetrics(&families)),
        }
    }
}
