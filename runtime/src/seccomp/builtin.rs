//! moat's built-in `default` profile.
//!
//! Written for this project and organised by purpose; on every architecture
//! and capability set it allows and denies exactly what Docker's default
//! profile does (proved by the `default_matches_docker` tests).

use super::error::{ProfileError, Source};
use super::parse;
use super::profile::Profile;

/// The built-in default profile's JSON text.
pub const DEFAULT_JSON: &str = include_str!("../../profiles/default.json");

/// Where the built-in profile comes from, for messages.
pub const SOURCE: Source = Source::Builtin("default");

/// Parses the built-in default profile.
pub fn default_profile() -> Result<Profile, ProfileError> {
    parse::from_str(DEFAULT_JSON, SOURCE)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_builtin_profile_parses() {
        let p = super::default_profile().unwrap();
        assert!(p.syscalls.len() > 10);
    }
}
