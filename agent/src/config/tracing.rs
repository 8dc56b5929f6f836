//! `[tracing]`: which seccomp refusals the kernel side counts and how.

use serde::Deserialize;

use crate::kernel::{DenialTier, MechanismChoice};

/// `[tracing]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    /// `all` (ERRNO, TRAP and KILL) or `fatal` (TRAP and KILL only, no program
    /// on any syscall path).
    #[serde(deserialize_with = "tier")]
    pub denials: DenialTier,
    /// How `all` is counted: `auto`, `fexit` or `pairing`.
    #[serde(deserialize_with = "mechanism")]
    pub mechanism: MechanismChoice,
}

fn tier<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<DenialTier, D::Error> {
    let text = String::deserialize(deserializer)?;
    DenialTier::parse(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{text:?} is not a denial tier: expected \"all\" or \"fatal\""
        ))
    })
}

fn mechanism<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<MechanismChoice, D::Error> {
    let text = String::deserialize(deserializer)?;
    MechanismChoice::parse(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{text:?} is not a tracing mechanism: expected \"auto\", \"fexit\" or \"pairing\""
        ))
    })
}
