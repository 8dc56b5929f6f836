//! The Docker authorization plugin (issue 12) goes here: decoding the daemon's
//! `AuthZPlugin.AuthZReq` / `AuthZRes` requests, evaluating them against the node
//! policy (the `moat-policy` crate), and serving the plugin's unix socket. Its
//! decisions leave moatd the same way the collector's do: as audit events and
//! metrics through [`crate::export`].
//!
//! Nothing is built here yet.
