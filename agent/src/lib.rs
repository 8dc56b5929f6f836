//! moat's node agent as a library: everything `moatd` does, so that tests and other
//! binaries drive the same code.
//!
//! - [`kernel`]: the embedded eBPF object; loading it, attaching its programs and
//!   reading its maps ([`snapshot`] is what the rest of the agent sees of them).
//! - [`rlimit`]: the best-effort `RLIMIT_MEMLOCK` bump for older kernels.
//! - [`error`]: the library's error type.

pub mod attribution;
pub mod audit;
pub mod btf;
pub mod burst;
pub mod config;
pub mod daemon;
pub mod error;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod mounts;
pub mod names;
pub mod pids;
pub mod rlimit;
pub mod snapshot;

pub use error::{Error, Result};
