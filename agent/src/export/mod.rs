//! What leaves moatd: the metrics served on `/metrics` ([`metrics`], [`http`]) and
//! the audit log ([`audit_log`]).

pub mod audit_log;
pub mod http;
pub mod metrics;
