//! Which seccomp refusals the kernel side counts (the tier) and how (the
//! mechanism), as asked in the configuration and as chosen at load time.
//!
//! - Tier `all` counts every refusal: ERRNO, TRAP and KILL. Its mechanism is
//!   an fexit program on `__secure_computing` where the kernel accepts tracing
//!   programs (it runs only for threads that have a filter), or the
//!   `sys_enter`/`sys_exit` pairing (which enables the syscall tracepoints for
//!   every thread of the node) where it does not.
//! - Tier `fatal` counts TRAP and KILL only, from `signal_generate` and the
//!   task exit tracepoint: no program runs on any syscall path.
//!
//! See `docs/kernel-side.md` for what each one sees.

use std::fmt;

/// Which refusals are counted (`[tracing] denials`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DenialTier {
    /// ERRNO, TRAP and KILL.
    #[default]
    All,
    /// TRAP and KILL only, at no cost per syscall.
    Fatal,
}

impl DenialTier {
    /// The configuration's and the metric's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialTier::All => "all",
            DenialTier::Fatal => "fatal",
        }
    }

    /// Parses a configuration value.
    pub fn parse(text: &str) -> Option<DenialTier> {
        match text {
            "all" => Some(DenialTier::All),
            "fatal" => Some(DenialTier::Fatal),
            _ => None,
        }
    }
}

/// How tier `all` is counted, as configured (`[tracing] mechanism`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MechanismChoice {
    /// fexit where the kernel allows it, the pairing otherwise.
    #[default]
    Auto,
    /// fexit, or moatd does not start.
    Fexit,
    /// The `sys_enter`/`sys_exit` pairing, even where fexit would load.
    Pairing,
}

impl MechanismChoice {
    /// The configuration's name.
    pub fn as_str(self) -> &'static str {
        match self {
            MechanismChoice::Auto => "auto",
            MechanismChoice::Fexit => "fexit",
            MechanismChoice::Pairing => "pairing",
        }
    }

    /// Parses a configuration value.
    pub fn parse(text: &str) -> Option<MechanismChoice> {
        match text {
            "auto" => Some(MechanismChoice::Auto),
            "fexit" => Some(MechanismChoice::Fexit),
            "pairing" => Some(MechanismChoice::Pairing),
            _ => None,
        }
    }
}

/// The mechanism attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// fexit on `__secure_computing` (tier `all`).
    Fexit,
    /// Raw tracepoints on `sys_enter` and `sys_exit` (tier `all`).
    Pairing,
    /// `signal_generate` and the exit tracepoint (tier `fatal`).
    Signal,
}

impl Mechanism {
    /// The metric's and the log's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Fexit => "fexit",
            Mechanism::Pairing => "pairing",
            Mechanism::Signal => "signal",
        }
    }
}

/// What the loaded kernel side counts and how: the tier, the mechanism chosen
/// and, when `auto` fell back to the pairing, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingMode {
    /// The tier configured.
    pub tier: DenialTier,
    /// The mechanism attached.
    pub mechanism: Mechanism,
    /// Why fexit was not used, when `auto` chose the pairing.
    pub fallback: Option<String>,
}

impl fmt::Display for TracingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seccomp denials: {} ({}",
            self.tier.as_str(),
            match self.tier {
                DenialTier::All => "ERRNO, TRAP and KILL",
                DenialTier::Fatal => "TRAP and KILL only; ERRNO refusals, failed forks and user namespaces are not counted",
            }
        )?;
        write!(f, "), mechanism {}", self.mechanism.as_str())?;
        if let Some(why) = &self.fallback {
            write!(f, " (fexit unavailable: {why})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for tier in [DenialTier::All, DenialTier::Fatal] {
            assert_eq!(DenialTier::parse(tier.as_str()), Some(tier));
        }
        for choice in [
            MechanismChoice::Auto,
            MechanismChoice::Fexit,
            MechanismChoice::Pairing,
        ] {
            assert_eq!(MechanismChoice::parse(choice.as_str()), Some(choice));
        }
        assert_eq!(DenialTier::parse("ALL"), None);
        assert_eq!(MechanismChoice::parse("kprobe"), None);
    }

    #[test]
    fn display_says_what_is_not_counted() {
        let mode = TracingMode {
            tier: DenialTier::Fatal,
            mechanism: Mechanism::Signal,
            fallback: None,
        };
        let text = mode.to_string();
        assert!(
            text.contains("ERRNO refusals") && text.contains("signal"),
            "{text}"
        );
        let mode = TracingMode {
            tier: DenialTier::All,
            mechanism: Mechanism::Pairing,
            fallback: Some("EPERM".into()),
        };
        assert!(mode.to_string().contains("fexit unavailable: EPERM"));
    }
}
