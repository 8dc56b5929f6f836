//! The kernel side's settings, fixed when the programs load, and their validation.

use std::path::PathBuf;

use moat_common::AUDIT_DISABLED;

use super::tracing::{DenialTier, MechanismChoice};

/// Settings of the kernel side, fixed at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// Audit records per second and per cgroup once the burst is spent; 0 disables
    /// audit records (every one is counted as `rate_limited`).
    pub audit_rate_per_sec: u32,
    /// Records a cgroup may emit at once before the rate applies (at least 1).
    pub audit_burst: u32,
    /// Size of the audit ring buffer in bytes: a power of two, a multiple of the
    /// page size.
    pub ring_buffer_bytes: u32,
    /// Distinct (cgroup, arch, syscall, action, errno) denial keys.
    pub denial_map_entries: u32,
    /// Distinct (cgroup, kind, errno) process-event keys.
    pub process_map_entries: u32,
    /// Cgroups whose rate-limit state is remembered (least recently used evicted).
    pub rate_map_entries: u32,
    /// Capacity of the channel [`Kernel::audit_records`] returns. When it is full
    /// the reader thread waits, the ring buffer fills, and further records are
    /// counted as `buffer_full`: nothing is lost silently.
    pub audit_channel_capacity: usize,
    /// Where the cgroup hierarchies are mounted (as in `[workloads] cgroup_root`):
    /// the v2 root's id and whether pids is on v1 come from there (see
    /// [`CgroupRekey`]).
    pub cgroup_root: PathBuf,
    /// Which seccomp refusals are counted.
    pub denials: DenialTier,
    /// How refusals are counted in tier [`DenialTier::All`]; only `Auto` goes
    /// with [`DenialTier::Fatal`].
    pub mechanism: MechanismChoice,
    /// The bpffs directory where the profile-recording maps are pinned, for
    /// `moat run --record-profile` and `moat profile record` to open
    /// (`MOAT_BPF_DIR`, default `/sys/fs/bpf/moat`).
    pub record_pin_dir: PathBuf,
    /// Pin the programs' links and the maps moatd reads under
    /// `record_pin_dir`, so that they stay attached and counting after the
    /// [`super::Kernel`] is dropped, and adopt those of the same layout at load
    /// (see [`super::pins`]). moatd's `[kernel] keep_pinned` defaults to true;
    /// here the default is false, so that a library user (and the in-process
    /// tests) detach everything on drop.
    pub keep_pinned: bool,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            audit_rate_per_sec: 100,
            audit_burst: 200,
            ring_buffer_bytes: 1 << 20,
            denial_map_entries: 16_384,
            process_map_entries: 16_384,
            rate_map_entries: 4_096,
            audit_channel_capacity: 4_096,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            denials: DenialTier::All,
            mechanism: MechanismChoice::Auto,
            record_pin_dir: record_pin_dir_from_env(),
            keep_pinned: false,
        }
    }
}

/// `MOAT_BPF_DIR` if set (tests and hosts with several agents use their own
/// directory), else `moat_common::RECORD_PIN_DIR`; `moat` reads the same
/// variable.
pub fn record_pin_dir_from_env() -> PathBuf {
    std::env::var_os("MOAT_BPF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(moat_common::RECORD_PIN_DIR))
}

/// The largest audit ring buffer: 256 MiB of kernel memory for audit records
/// is already far more than a node needs.
pub const MAX_RING_BUFFER_BYTES: u32 = 1 << 28;
/// The most entries of a counter map. The maps are preallocated, per CPU for
/// the counters (about `80 + 8 × CPUs` bytes an entry): a million entries is
/// already hundreds of MiB on a large host, and the kernel refuses much more
/// (`E2BIG` at 2^32 - 1).
pub const MAX_MAP_ENTRIES: u32 = 1 << 20;
/// The largest audit channel: tokio's channels refuse (panic on) more than
/// `usize::MAX >> 3`; a million queued records is far beyond any need.
pub const MAX_AUDIT_CHANNEL: usize = 1 << 20;

/// A field of [`KernelConfig`], as named in [`InvalidSetting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelField {
    /// [`KernelConfig::audit_rate_per_sec`].
    AuditRatePerSec,
    /// [`KernelConfig::audit_burst`].
    AuditBurst,
    /// [`KernelConfig::ring_buffer_bytes`].
    RingBufferBytes,
    /// [`KernelConfig::denial_map_entries`].
    DenialMapEntries,
    /// [`KernelConfig::process_map_entries`].
    ProcessMapEntries,
    /// [`KernelConfig::rate_map_entries`].
    RateMapEntries,
    /// [`KernelConfig::audit_channel_capacity`].
    AuditChannelCapacity,
    /// [`KernelConfig::mechanism`].
    Mechanism,
}

impl KernelField {
    /// The field's name in [`KernelConfig`].
    pub fn name(self) -> &'static str {
        match self {
            KernelField::AuditRatePerSec => "audit_rate_per_sec",
            KernelField::AuditBurst => "audit_burst",
            KernelField::RingBufferBytes => "ring_buffer_bytes",
            KernelField::DenialMapEntries => "denial_map_entries",
            KernelField::ProcessMapEntries => "process_map_entries",
            KernelField::RateMapEntries => "rate_map_entries",
            KernelField::AuditChannelCapacity => "audit_channel_capacity",
            KernelField::Mechanism => "mechanism",
        }
    }
}

/// A [`KernelConfig`] value out of range: the field, its value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} = {value}: {reason}", field.name())]
pub struct InvalidSetting {
    /// The field.
    pub field: KernelField,
    /// Its value, as text.
    pub value: String,
    /// What it must be.
    pub reason: String,
}

impl InvalidSetting {
    fn new(field: KernelField, value: impl ToString, reason: impl Into<String>) -> Self {
        Self {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl KernelConfig {
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> std::result::Result<(), InvalidSetting> {
        let page = page_size();
        let ring = self.ring_buffer_bytes;
        if !ring.is_power_of_two()
            || u64::from(ring) < page
            || !u64::from(ring).is_multiple_of(page)
            || ring > MAX_RING_BUFFER_BYTES
        {
            return Err(InvalidSetting::new(
                KernelField::RingBufferBytes,
                ring,
                format!(
                    "must be a power of two, a multiple of the page size ({page}) and at most \
                     {MAX_RING_BUFFER_BYTES}"
                ),
            ));
        }
        for (field, value) in [
            (KernelField::DenialMapEntries, self.denial_map_entries),
            (KernelField::ProcessMapEntries, self.process_map_entries),
            (KernelField::RateMapEntries, self.rate_map_entries),
        ] {
            if value == 0 || value > MAX_MAP_ENTRIES {
                return Err(InvalidSetting::new(
                    field,
                    value,
                    format!("must be 1 to {MAX_MAP_ENTRIES}"),
                ));
            }
        }
        if self.audit_rate_per_sec > 1_000_000_000 {
            return Err(InvalidSetting::new(
                KernelField::AuditRatePerSec,
                self.audit_rate_per_sec,
                "at most 1000000000",
            ));
        }
        if self.audit_rate_per_sec > 0 && self.audit_burst == 0 {
            return Err(InvalidSetting::new(
                KernelField::AuditBurst,
                0,
                "must be at least 1 when audit records are enabled",
            ));
        }
        if self.audit_channel_capacity == 0 || self.audit_channel_capacity > MAX_AUDIT_CHANNEL {
            return Err(InvalidSetting::new(
                KernelField::AuditChannelCapacity,
                self.audit_channel_capacity,
                format!("must be 1 to {MAX_AUDIT_CHANNEL}"),
            ));
        }
        if self.denials == DenialTier::Fatal && self.mechanism != MechanismChoice::Auto {
            // The fatal tier has one mechanism (signal_generate); a forced one
            // would be silently ignored.
            return Err(InvalidSetting::new(
                KernelField::Mechanism,
                self.mechanism.as_str(),
                "only \"auto\" goes with denials = \"fatal\" (the mechanism chooses how the \"all\" tier counts)",
            ));
        }
        Ok(())
    }

    /// The rate limit as the programs apply it: (interval, tolerance) in ns.
    pub(super) fn rate_params(&self) -> (u64, u64) {
        if self.audit_rate_per_sec == 0 {
            return (AUDIT_DISABLED, 0);
        }
        let interval = (1_000_000_000 / u64::from(self.audit_rate_per_sec)).max(1);
        let tolerance = interval.saturating_mul(u64::from(self.audit_burst.max(1) - 1));
        (interval, tolerance)
    }
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u64::try_from(size).ok())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        KernelConfig::default().validate().unwrap();
        let (interval, tolerance) = KernelConfig::default().rate_params();
        assert_eq!(interval, 10_000_000);
        assert_eq!(tolerance, 199 * 10_000_000);
    }

    #[test]
    fn bad_config_is_refused_with_the_field() {
        let bad = |config: KernelConfig, field: &str| {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field.name(), field);
            assert!(err.to_string().starts_with(field), "{err}");
        };
        bad(
            KernelConfig {
                ring_buffer_bytes: 3 * 4096,
                ..KernelConfig::default()
            },
            "ring_buffer_bytes",
        );
        bad(
            KernelConfig {
                ring_buffer_bytes: 1024,
                ..KernelConfig::default()
            },
            "ring_buffer_bytes",
        );
        bad(
            KernelConfig {
                denial_map_entries: 0,
                ..KernelConfig::default()
            },
            "denial_map_entries",
        );
        bad(
            KernelConfig {
                audit_burst: 0,
                ..KernelConfig::default()
            },
            "audit_burst",
        );
        bad(
            KernelConfig {
                ring_buffer_bytes: MAX_RING_BUFFER_BYTES * 2,
                ..KernelConfig::default()
            },
            "ring_buffer_bytes",
        );
        bad(
            KernelConfig {
                rate_map_entries: MAX_MAP_ENTRIES + 1,
                ..KernelConfig::default()
            },
            "rate_map_entries",
        );
        bad(
            KernelConfig {
                denials: DenialTier::Fatal,
                mechanism: MechanismChoice::Pairing,
                ..KernelConfig::default()
            },
            "mechanism",
        );
        // More than tokio's channels can take (they panic).
        bad(
            KernelConfig {
                audit_channel_capacity: usize::MAX,
                ..KernelConfig::default()
            },
            "audit_channel_capacity",
        );
    }

    #[test]
    fn rate_zero_disables_audit() {
        let config = KernelConfig {
            audit_rate_per_sec: 0,
            audit_burst: 0,
            ..KernelConfig::default()
        };
        config.validate().unwrap();
        assert_eq!(config.rate_params(), (AUDIT_DISABLED, 0));
    }
}
