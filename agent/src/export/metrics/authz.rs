//! The authorization plugin's metrics: the counts [`crate::authz`] keeps in
//! [`AuthzStats`], rendered as the `moat_authz_*` families by
//! [`AuthzCollector`] (registered with [`super::Metrics::register_authz`]
//! when the plugin is enabled).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use moat_api::metrics::{
    self as spec, authz_decision, authz_reload, MetricSpec, AUTHZ_DURATION_BUCKETS,
};
use moat_policy::endpoint::Endpoint;
use prometheus::{
    core::{Collector, Desc},
    proto::{self, MetricFamily, MetricType},
};

use super::lock;

/// What the plugin answered an `AuthZReq`, as the `decision` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by the policy.
    Allow,
    /// Denied by the policy.
    Deny,
    /// Allowed in audit mode although the policy denies it.
    WouldDeny,
    /// Could not be judged (denied in enforce mode, allowed in audit mode).
    Error,
}

impl Verdict {
    const ALL: [Verdict; 4] = [
        Verdict::Allow,
        Verdict::Deny,
        Verdict::WouldDeny,
        Verdict::Error,
    ];

    /// The `decision` label value.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Allow => authz_decision::ALLOW,
            Verdict::Deny => authz_decision::DENY,
            Verdict::WouldDeny => authz_decision::WOULD_DENY,
            Verdict::Error => authz_decision::ERROR,
        }
    }
}

/// Which policy is in force, for `moat_authz_policy_info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyInfo {
    /// `enforce` or `audit`.
    pub mode: String,
    /// The policy file, or `baseline`.
    pub source: String,
    /// SHA-256 of the policy's text (hex).
    pub sha256: String,
}

const ENDPOINTS: usize = Endpoint::ALL.len();
const BUCKETS: usize = AUTHZ_DURATION_BUCKETS.len();

/// The plugin's counts, written by the plugin's tasks and read at each scrape.
#[derive(Debug)]
pub struct AuthzStats {
    requests: [[AtomicU64; 4]; ENDPOINTS],
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS + 1],
    duration_count: AtomicU64,
    duration_sum_ns: AtomicU64,
    reloads: [AtomicU64; 2],
    info: Mutex<PolicyInfo>,
}

impl Default for AuthzStats {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_count: AtomicU64::new(0),
            duration_sum_ns: AtomicU64::new(0),
            reloads: std::array::from_fn(|_| AtomicU64::new(0)),
            info: Mutex::new(PolicyInfo::default()),
        }
    }
}

fn endpoint_index(endpoint: Endpoint) -> usize {
    Endpoint::ALL
        .iter()
        .position(|e| *e == endpoint)
        .unwrap_or(ENDPOINTS - 1)
}

impl AuthzStats {
    /// Counts one decided `AuthZReq` and how long it took.
    pub fn record(&self, verdict: Verdict, endpoint: Endpoint, took: Duration) {
        self.requests[endpoint_index(endpoint)][verdict as usize].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let slot = AUTHZ_DURATION_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(BUCKETS);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.duration_sum_ns.fetch_add(nanos, Ordering::Relaxed);
        self.duration_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests decided `verdict` at `endpoint` so far.
    pub fn requests(&self, verdict: Verdict, endpoint: Endpoint) -> u64 {
        self.requests[endpoint_index(endpoint)][verdict as usize].load(Ordering::Relaxed)
    }

    /// Counts a reload on SIGHUP.
    pub fn reloaded(&self, success: bool) {
        self.reloads[usize::from(!success)].fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads so far: `(successes, failures)`.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads[0].load(Ordering::Relaxed),
            self.reloads[1].load(Ordering::Relaxed),
        )
    }

    /// Sets the policy in force.
    pub fn set_policy(&self, info: PolicyInfo) {
        *lock(&self.info) = info;
    }

    /// The policy in force, as last set.
    pub fn policy(&self) -> PolicyInfo {
        lock(&self.info).clone()
    }
}

/// Renders [`AuthzStats`] as the `moat_authz_*` families.
pub struct AuthzCollector {
    stats: Arc<AuthzStats>,
    descs: Vec<Desc>,
}

impl std::fmt::Debug for AuthzCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzCollector").finish_non_exhaustive()
    }
}

const FAMILIES: [&MetricSpec; 4] = [
    &spec::AUTHZ_REQUESTS,
    &spec::AUTHZ_REQUEST_DURATION,
    &spec::AUTHZ_POLICY_RELOADS,
    &spec::AUTHZ_POLICY_INFO,
];

fn label_pairs(names: &[&str], values: &[&str]) -> Vec<proto::LabelPair> {
    names
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect()
}

fn family(spec: &MetricSpec, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(spec.name.to_owned());
    family.set_help(spec.help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn counter(spec: &MetricSpec, values: &[&str], value: u64) -> proto::Metric {
    let mut metric = proto::Metric::default();
    metric.set_label(label_pairs(spec.labels, values));
    let mut counter = proto::Counter::default();
    counter.set_value(value as f64);
    metric.set_counter(counter);
    metric
}

impl AuthzCollector {
    /// A collector of `stats`.
    pub fn new(stats: Arc<AuthzStats>) -> prometheus::Result<Self> {
        let descs = FAMILIES
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
        Ok(Self { stats, descs })
    }

    fn requests(&self) -> MetricFamily {
        let spec = &spec::AUTHZ_REQUESTS;
        let mut metrics = Vec::with_capacity(ENDPOINTS * Verdict::ALL.len());
        for endpoint in Endpoint::ALL {
            for verdict in Verdict::ALL {
                metrics.push(counter(
                    spec,
                    &[verdict.label(), endpoint.label()],
                    self.stats.requests(verdict, endpoint),
                ));
            }
        }
        family(spec, MetricType::COUNTER, metrics)
    }

    fn duration(&self) -> MetricFamily {
        let s = &self.stats;
        let mut histogram = proto::Histogram::default();
        let mut cumulative = 0;
        let buckets = AUTHZ_DURATION_BUCKETS
            .iter()
            .zip(&s.buckets)
            .map(|(le, count)| {
                cumulative += count.load(Ordering::Relaxed);
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(*le);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        histogram.set_bucket(buckets);
        // The count is the sum of the buckets (+Inf included), so that a
        // scrape racing an observation stays consistent: +Inf == _count.
        let count = cumulative + s.buckets[BUCKETS].load(Ordering::Relaxed);
        histogram.set_sample_count(count);
        histogram.set_sample_sum(s.duration_sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        let mut metric = proto::Metric::default();
        metric.set_histogram(histogram);
        family(
            &spec::AUTHZ_REQUEST_DURATION,
            MetricType::HISTOGRAM,
            vec![metric],
        )
    }

    fn reloads(&self) -> MetricFamily {
        let spec = &spec::AUTHZ_POLICY_RELOADS;
        let (ok, failed) = self.stats.reloads();
        let metrics = authz_reload::ALL
            .iter()
            .zip([ok, failed])
            .map(|(result, value)| counter(spec, &[result], value))
            .collect();
        family(spec, MetricType::COUNTER, metrics)
    }

    fn info(&self) -> MetricFamily {
        let spec = &spec::AUTHZ_POLICY_INFO;
        let info = self.stats.policy();
        let mut metric = proto::Metric::default();
        metric.set_label(label_pairs(
            spec.labels,
            &[&info.mode, &info.source, &info.sha256],
        ));
        let mut gauge = proto::Gauge::default();
        gauge.set_value(1.0);
        metric.set_gauge(gauge);
        family(spec, MetricType::GAUGE, vec![metric])
    }
}

impl Collector for AuthzCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![
            self.requests(),
            self.duration(),
            self.reloads(),
            self.info(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_match_the_count() {
        let stats = Arc::new(AuthzStats::default());
        stats.record(
            Verdict::Allow,
            Endpoint::ContainerCreate,
            Duration::from_micros(30),
        );
        stats.record(
            Verdict::Deny,
            Endpoint::ContainerCreate,
            Duration::from_micros(700),
        );
        stats.record(Verdict::Error, Endpoint::Other, Duration::from_secs(9));
        let collector = AuthzCollector::new(stats.clone()).unwrap();
        let h = collector.duration();
        let h = h.get_metric()[0].get_histogram();
        let counts: Vec<u64> = h
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        // 50 µs, 100 µs, 250 µs, 500 µs, 1 ms, ...
        assert_eq!(&counts[..6], &[1, 1, 1, 1, 2, 2]);
        assert_eq!(*counts.last().unwrap(), 2, "9 s is above the last bucket");
        assert_eq!(h.get_sample_count(), 3);
        assert!((h.get_sample_sum() - 9.00073).abs() < 1e-9);
        assert_eq!(stats.requests(Verdict::Deny, Endpoint::ContainerCreate), 1);
        let requests = collector.requests();
        assert_eq!(requests.get_metric().len(), Endpoint::ALL.len() * 4);
    }
}
