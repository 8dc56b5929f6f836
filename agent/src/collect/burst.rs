//! Fork bursts: a workload forking (processes and threads) faster than a threshold.
//!
//! [`BurstDetector::update`] is fed the kernel's per-cgroup fork totals every poll
//! interval; it sums the increase per workload label, divides by the time since the
//! previous reading, and reports a workload once when its rate goes above the
//! threshold. The workload is reported again only after its rate has been at or
//! below the threshold for a whole interval.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

/// One cgroup's fork total, attributed.
#[derive(Debug, Clone, PartialEq)]
pub struct ForkTotal {
    /// The kernel's cgroup key.
    pub cgroup_id: u64,
    /// Its workload label (after the cap).
    pub workload: Arc<str>,
    /// Its path, when known.
    pub path: Option<Arc<str>>,
    /// Forks (processes and threads) since the programs were loaded.
    pub total: u64,
}

/// A burst that just started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    /// The workload label.
    pub workload: Arc<str>,
    /// Forks per second over the last interval.
    pub rate: u64,
    /// The path of the workload's cgroup that forked most.
    pub path: Option<Arc<str>>,
}

/// One workload's forks during an interval.
#[derive(Debug, Default)]
struct Interval {
    /// Forks of all its cgroups.
    forks: u64,
    /// The largest increase of one of its cgroups...
    largest: u64,
    /// ...and that cgroup's path.
    path: Option<Arc<str>>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct BurstDetector {
    threshold: u64,
    last: HashMap<u64, u64>,
    last_at: Option<Instant>,
    bursting: HashSet<Arc<str>>,
}

impl BurstDetector {
    /// Reports workloads above `threshold` forks per second.
    pub fn new(threshold: u64) -> Self {
        Self {
            threshold,
            last: HashMap::new(),
            last_at: None,
            bursting: HashSet::new(),
        }
    }

    /// Takes a reading made at `now`; returns the bursts that started since the
    /// previous one. The first reading only primes the detector.
    pub fn update(&mut self, totals: &[ForkTotal], now: Instant) -> Vec<Burst> {
        let elapsed = self
            .last_at
            .map(|at| now.saturating_duration_since(at).as_secs_f64());
        let mut per_workload: HashMap<Arc<str>, Interval> = HashMap::new();
        let mut next = HashMap::with_capacity(totals.len());
        for entry in totals {
            // A cgroup first seen now: its whole total is new only if the detector
            // is primed (it appeared during the interval).
            let before = self
                .last
                .get(&entry.cgroup_id)
                .copied()
                .unwrap_or(if elapsed.is_some() { 0 } else { entry.total });
            let delta = entry.total.saturating_sub(before);
            let slot = per_workload.entry(entry.workload.clone()).or_default();
            slot.forks += delta;
            if delta >= slot.largest {
                slot.largest = delta;
                slot.path = entry.path.clone();
            }
            next.insert(entry.cgroup_id, entry.total);
        }
        self.last = next;
        self.last_at = Some(now);
        let Some(elapsed) = elapsed.filter(|e| *e > 0.0) else {
            return Vec::new();
        };
        let mut started = Vec::new();
        let mut still = HashSet::new();
        for (workload, Interval { forks, path, .. }) in per_workload {
            let rate = (forks as f64 / elapsed).round() as u64;
            if rate > self.threshold {
                if !self.bursting.contains(&workload) {
                    started.push(Burst {
                        workload: workload.clone(),
                        rate,
                        path,
                    });
                }
                still.insert(workload);
            }
        }
        self.bursting = still;
        started.sort_by(|a, b| a.workload.cmp(&b.workload));
        started
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn total(id: u64, workload: &str, total: u64) -> ForkTotal {
        ForkTotal {
            cgroup_id: id,
            workload: Arc::from(workload),
            path: Some(Arc::from(format!("/moat/{workload}").as_str())),
            total,
        }
    }

    #[test]
    fn reports_once_per_burst() {
        let mut detector = BurstDetector::new(1000);
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        assert!(detector.update(&[total(1, "a", 50_000)], t0).is_empty());
        // 2000/s: a burst starts.
        let bursts = detector.update(&[total(1, "a", 52_000)], t0 + second);
        assert_eq!(bursts.len(), 1);
        assert_eq!(bursts[0].rate, 2000);
        assert_eq!(bursts[0].path.as_deref(), Some("/moat/a"));
        // Still bursting: nothing new.
        assert!(detector
            .update(&[total(1, "a", 54_000)], t0 + 2 * second)
            .is_empty());
        // Calm, then a new burst.
        assert!(detector
            .update(&[total(1, "a", 54_100)], t0 + 3 * second)
            .is_empty());
        assert_eq!(
            detector
                .update(&[total(1, "a", 60_000)], t0 + 4 * second)
                .len(),
            1
        );
    }

    #[test]
    fn sums_cgroups_of_a_workload_and_counts_new_ones() {
        let mut detector = BurstDetector::new(1000);
        let t0 = Instant::now();
        detector.update(&[total(1, "a", 0)], t0);
        let bursts = detector.update(
            &[total(1, "a", 600), total(2, "a", 600)],
            t0 + Duration::from_secs(1),
        );
        assert_eq!(bursts.len(), 1);
        assert_eq!(bursts[0].rate, 1200);
    }
}
