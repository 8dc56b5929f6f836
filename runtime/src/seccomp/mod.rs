//! The seccomp profile engine.
//!
//! Built like a compiler: [`parse`] reads Docker/OCI JSON into the
//! [`profile`] model (frontend), [`resolve`] applies Docker's rules for one
//! host and capability set to give a flat list of rules (intermediate
//! form), and [`compile`] turns that into a classic BPF program with
//! libseccomp (backend). [`load`] installs it; [`bpf`] can also run it.

pub mod arch;
pub mod args;
pub mod bpf;
pub mod builtin;
pub mod cache;
pub mod compile;
mod ctx;
pub mod error;
mod fixup;
pub mod input;
pub mod json;
pub mod load;
pub mod mux;
pub mod parse;
mod plan;
pub mod profile;
pub mod resolve;
pub mod summary;
pub mod verify;
pub mod width;
mod width_table;

pub use error::{CompileError, LoadError, ProfileError, Source};

use crate::caps::CapSet;

/// A profile the user can name on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileRef {
    /// The built-in default profile.
    Default,
    /// No filter at all.
    Unconfined,
    /// A profile file.
    File(std::path::PathBuf),
}

impl ProfileRef {
    /// `default`, `unconfined`, or a path.
    pub fn parse(s: &str) -> ProfileRef {
        match s {
            "default" => ProfileRef::Default,
            "unconfined" => ProfileRef::Unconfined,
            p => ProfileRef::File(p.into()),
        }
    }

    /// Loads the profile (`None` for `unconfined`).
    pub fn load(&self) -> Result<Option<(profile::Profile, Source)>, ProfileError> {
        match self {
            ProfileRef::Default => Ok(Some((builtin::default_profile()?, builtin::SOURCE))),
            ProfileRef::Unconfined => Ok(None),
            // Standard input is read only by `moat profile`, which handles
            // `-` itself: a workload's launcher must not consume it.
            ProfileRef::File(p) if p.as_os_str() == "-" => Err(ProfileError::Read {
                source_name: Source::Stdin,
                error: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a profile cannot be read from standard input here; give a file",
                ),
            }),
            ProfileRef::File(p) => Ok(Some((parse::from_file(p)?, Source::File(p.clone())))),
        }
    }
}

/// Resolves and compiles a parsed profile for this host and `caps`.
pub fn compile_for_host(
    profile: &profile::Profile,
    source: Source,
    caps: &CapSet,
    opts: compile::Options,
) -> Result<(resolve::Resolved, compile::Compiled), CompileError> {
    let (resolved, _) = resolve_for_host(profile, source, caps)?;
    let compiled = compile::compile(&resolved, opts)?;
    Ok((resolved, compiled))
}

/// Resolves a parsed profile for this host and `caps`; returns the host
/// too.
pub fn resolve_for_host(
    profile: &profile::Profile,
    source: Source,
    caps: &CapSet,
) -> Result<(resolve::Resolved, arch::Host), CompileError> {
    let host = arch::Host::detect().map_err(|reason| CompileError::Unsupported {
        source_name: source.clone(),
        field: "(host)".into(),
        reason,
    })?;
    let target = resolve::Target {
        host: host.clone(),
        caps: caps.clone(),
    };
    Ok((resolve::resolve(profile, source, &target), host))
}
