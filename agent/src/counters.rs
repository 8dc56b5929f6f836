//! Process-event counters, as read from the per-CPU `PROCESS_COUNTERS` map.

use moat_common::{process_counter, Counter};

/// One reading of every process-event counter, each summed over all CPUs.
///
/// Counters only grow (until they wrap at 2^64), so the difference of two
/// readings is the number of events between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessCounts {
    values: [Counter; process_counter::COUNT as usize],
}

impl ProcessCounts {
    /// Builds a reading from per-slot totals, in `process_counter` index order.
    pub fn from_totals(values: [Counter; process_counter::COUNT as usize]) -> Self {
        Self { values }
    }

    /// The total of slot `index` (a `moat_common::process_counter` constant), or
    /// `None` past the last slot.
    pub fn get(&self, index: u32) -> Option<Counter> {
        self.values.get(usize::try_from(index).ok()?).copied()
    }

    /// New tasks, processes and threads alike, since the programs were loaded.
    pub fn forks(&self) -> Counter {
        self.values[process_counter::FORK as usize]
    }

    /// Each counter's stable name with its total, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Counter)> + '_ {
        process_counter::NAMES
            .iter()
            .copied()
            .zip(self.values.iter().copied())
    }

    /// Per-slot difference `self - earlier`, correct across a wrap of the counter.
    pub fn since(&self, earlier: &Self) -> Self {
        let mut values = self.values;
        for (value, before) in values.iter_mut().zip(earlier.values) {
            *value = value.wrapping_sub(before);
        }
        Self { values }
    }
}

/// Sums one slot's per-CPU values.
///
/// Wrapping, like the eBPF side's increments, so a wrapped CPU cannot panic the agent.
pub(crate) fn sum_cpus(per_cpu: impl IntoIterator<Item = Counter>) -> Counter {
    per_cpu.into_iter().fold(0, Counter::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_wraps() {
        assert_eq!(sum_cpus([1, 2, 3]), 6);
        assert_eq!(sum_cpus([Counter::MAX, 2]), 1);
        assert_eq!(sum_cpus([]), 0);
    }

    /// A reading with only the fork slot set, whatever the number of slots.
    fn forks_only(forks: Counter) -> ProcessCounts {
        let mut values = [0; process_counter::COUNT as usize];
        values[process_counter::FORK as usize] = forks;
        ProcessCounts::from_totals(values)
    }

    #[test]
    fn difference_survives_wrap() {
        let before = forks_only(Counter::MAX - 1);
        let after = forks_only(3);
        assert_eq!(after.since(&before).forks(), 5);
    }

    #[test]
    fn names_follow_indices() {
        let counts = forks_only(7);
        assert!(counts.iter().any(|entry| entry == ("fork", 7)));
        assert_eq!(counts.iter().count(), process_counter::COUNT as usize);
        assert_eq!(counts.get(process_counter::FORK), Some(7));
        assert_eq!(counts.get(process_counter::COUNT), None);
    }
}
