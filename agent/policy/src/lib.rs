//! moat's node policy: one file that says what workloads on this node may
//! not do, enforced by the Docker authorization plugin in moatd and by
//! `moat run`.
//!
//! - [`wire`]: the authorization plugin protocol's messages.
//! - [`endpoint`]: which daemon handler a request reaches, routed as
//!   dockerd routes it.
//! - [`gojson`]: request bodies read as the daemon's Go decoder reads them.
//! - [`findings`]: what a request would do (privileges, namespaces, host
//!   paths, devices...).
//! - [`model`], [`load`]: the policy file (`/etc/moat/policy.toml`) and the
//!   built-in [`load::baseline`].
//! - [`eval`]: decisions for plugin requests, for a container's resolved
//!   configuration, and for `moat run` ([`run::RunIntent`]).
//!
//! The crate does no I/O beyond reading policy files.
//!
//! For the plugin server: load with [`load_or_baseline`] (a missing file is
//! the baseline; any other failure is an error, and a running server keeps
//! its policy); answer `AuthZReq` with [`evaluate_wire`] and
//! [`Decision::to_response`], and `AuthZRes` with an allow (the handler has
//! run); at `containers/{id}/start` ([`endpoint::Endpoint::ContainerStart`])
//! also inspect the container and deny if [`evaluate_inspect`] does: the
//! request's own body (API < 1.24) is judged by `evaluate_wire`, the stored
//! configuration by `evaluate_inspect`. Metric labels are bounded by
//! [`endpoint::Endpoint::ALL`].

mod base64;
pub mod caps;
pub mod endpoint;
pub mod eval;
pub mod findings;
#[doc(hidden)]
pub mod fuzzing;
pub mod gojson;
pub mod load;
pub mod model;
pub mod run;
pub mod suggest;
pub mod wire;

pub use eval::{evaluate, evaluate_inspect, evaluate_run, evaluate_wire, Decision, InspectJson};
pub use load::{baseline, load_file, load_or_baseline, PolicyError, DEFAULT_POLICY_PATH};
pub use model::Policy;
pub use run::RunIntent;
pub use wire::{AuthzRequest, AuthzResponse};
