//! The contract between `moatd` and the `moat` CLI, in one small crate that both
//! link: what moatd writes and serves, and what the CLI (and the tests) read back.
//!
//! - [`defaults`]: default addresses and paths (listen address, audit log, the
//!   cgroup parents).
//! - [`audit`]: the audit event, one JSON object per line, as moatd writes it and
//!   `moat events` reads it.
//! - [`metrics`]: every metric family moatd serves, with its labels and their
//!   fixed values.
//! - [`exposition`]: the one reader of the Prometheus text exposition format.
//! - [`client`]: a small blocking HTTP/1.1 client for `/metrics`.
//! - [`time`]: RFC 3339 timestamps as the audit log writes them.
//! - [`text`]: the characters that must not reach a terminal raw.
//!
//! It depends on nothing heavier than serde, so the CLI stays free of aya, tokio
//! and hyper.

pub mod audit;
pub mod client;
pub mod defaults;
pub mod exposition;
pub mod metrics;
pub mod text;
pub mod time;
