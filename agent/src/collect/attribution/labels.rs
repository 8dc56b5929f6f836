//! The cap on distinct workload labels.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::{HOST, OTHER};

/// Caps the number of distinct workload labels.
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    assigned: HashMap<String, Arc<str>>,
    refused: HashSet<String>,
    overflow_total: u64,
    host: Arc<str>,
    other: Arc<str>,
}

/// How many refused names are remembered to count each once; past it every
/// refusal of an unremembered name counts.
const MAX_REMEMBERED_REFUSALS: usize = 100_000;

impl LabelCap {
    /// At most `max` labels besides `host` and `other`.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            assigned: HashMap::new(),
            refused: HashSet::new(),
            overflow_total: 0,
            host: Arc::from(HOST),
            other: Arc::from(OTHER),
        }
    }

    /// The label to use for `raw`: itself if it has or can get a slot, else `other`.
    pub fn admit(&mut self, raw: &str) -> Arc<str> {
        if raw == HOST {
            return self.host.clone();
        }
        if raw == OTHER {
            return self.other.clone();
        }
        if let Some(label) = self.assigned.get(raw) {
            return label.clone();
        }
        if self.assigned.len() < self.max {
            let label: Arc<str> = Arc::from(raw);
            self.assigned.insert(raw.to_owned(), label.clone());
            return label;
        }
        if !self.refused.contains(raw) {
            self.overflow_total += 1;
            if self.refused.len() < MAX_REMEMBERED_REFUSALS {
                self.refused.insert(raw.to_owned());
            }
            log::debug!("workload label cap reached: {raw:?} is labelled {OTHER:?}");
        }
        self.other.clone()
    }

    /// Distinct workloads that were labelled `other`.
    pub fn overflow_total(&self) -> u64 {
        self.overflow_total
    }

    /// Labels given so far, besides `host` and `other`.
    pub fn assigned(&self) -> usize {
        self.assigned.len()
    }
}
