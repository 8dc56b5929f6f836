//! Linux capability names and the capability sets a workload starts with.
//!
//! The capability set matters twice: it is what the workload holds, and it
//! decides which seccomp profile rules apply (`includes.caps` /
//! `excludes.caps`), exactly as Docker resolves its profiles.

use std::collections::BTreeSet;
use std::fmt;

/// Every capability the kernel knows, in kernel numbering order
/// (`include/uapi/linux/capability.h`), and the capabilities Docker grants a
/// container unless told otherwise (moby `oci/caps/defaults.go`): one table
/// for the node, owned by the policy crate, which the daemon's requests are
/// judged with too.
pub use moat_policy::caps::{ALL_CAPS, DOCKER_DEFAULT_CAPS};

/// A capability given by name was not recognised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {name:?}{}", suggestion_suffix(.suggestion))]
pub struct UnknownCapability {
    /// The name as the user wrote it.
    pub name: String,
    /// The closest known capability, if one is close.
    pub suggestion: Option<&'static str>,
}

fn suggestion_suffix(s: &Option<&'static str>) -> String {
    s.map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

/// Normalises a capability name: case-insensitive, `CAP_` prefix optional
/// (Docker accepts `--cap-add sys_admin`).
pub fn canonical_name(name: &str) -> Result<&'static str, UnknownCapability> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL_CAPS
        .iter()
        .find(|c| **c == full)
        .copied()
        .ok_or_else(|| UnknownCapability {
            name: name.to_string(),
            suggestion: crate::suggest::closest(&full, ALL_CAPS.iter().copied()),
        })
}

/// The kernel number of a capability (its bit in `CapEff`).
pub fn number(name: &str) -> Option<u32> {
    ALL_CAPS.iter().position(|c| *c == name).map(|p| p as u32)
}

/// A set of capabilities, by canonical name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapSet(BTreeSet<&'static str>);

impl CapSet {
    /// Docker's default capability set.
    pub fn docker_default() -> Self {
        CapSet(DOCKER_DEFAULT_CAPS.iter().copied().collect())
    }

    /// Every capability.
    pub fn all() -> Self {
        CapSet(ALL_CAPS.iter().copied().collect())
    }

    /// The empty set.
    pub fn empty() -> Self {
        CapSet::default()
    }

    /// Applies `--cap-add` and `--cap-drop` the way Docker does: drops
    /// first (`ALL` empties the set), then adds (`ALL` fills it).
    pub fn with_changes<A, D>(mut self, add: A, drop: D) -> Result<Self, UnknownCapability>
    where
        A: IntoIterator,
        A::Item: AsRef<str>,
        D: IntoIterator,
        D::Item: AsRef<str>,
    {
        for d in drop {
            let d = d.as_ref();
            if d.eq_ignore_ascii_case("ALL") {
                self.0.clear();
            } else {
                self.0.remove(canonical_name(d)?);
            }
        }
        for a in add {
            let a = a.as_ref();
            if a.eq_ignore_ascii_case("ALL") {
                self = CapSet::all();
            } else {
                self.0.insert(canonical_name(a)?);
            }
        }
        Ok(self)
    }

    /// Whether the set holds `name` (a canonical `CAP_*` name).
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// The capabilities in the set, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().copied()
    }

    /// The set as a bit mask in the kernel's numbering (as in `CapEff`).
    pub fn mask(&self) -> u64 {
        self.0
            .iter()
            .filter_map(|c| number(c))
            .fold(0u64, |m, n| m | (1u64 << n))
    }
}

impl fmt::Display for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.0.iter().copied().collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_prefix_optional() {
        assert_eq!(canonical_name("sys_admin").unwrap(), "CAP_SYS_ADMIN");
        assert_eq!(canonical_name("CAP_NET_RAW").unwrap(), "CAP_NET_RAW");
    }

    #[test]
    fn unknown_capability_suggests_the_closest() {
        let e = canonical_name("CAP_SYS_ADMN").unwrap_err();
        assert_eq!(e.suggestion, Some("CAP_SYS_ADMIN"));
        assert!(e.to_string().contains("did you mean CAP_SYS_ADMIN?"));
    }

    #[test]
    fn drop_all_then_add() {
        let s = CapSet::docker_default()
            .with_changes(["NET_ADMIN"], ["ALL"])
            .unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec!["CAP_NET_ADMIN"]);
    }

    #[test]
    fn mask_matches_kernel_numbering() {
        let s = CapSet::empty()
            .with_changes(["CAP_CHOWN", "CAP_SYS_ADMIN"], Vec::<&str>::new())
            .unwrap();
        assert_eq!(s.mask(), 1 | (1 << 21));
        assert_eq!(CapSet::all().mask(), (1u64 << 41) - 1);
    }
}
