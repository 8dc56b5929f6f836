//! The Docker authorization request and body decoders: arbitrary bytes as a
//! whole `AuthZReq`, as the body of each endpoint whose body the policy
//! reads, as `docker inspect` output and as a request URI. The invariants
//! (no panic, consistent decisions, unparsable bodies denied) are in
//! `moat_policy::fuzzing::check`; saved inputs are replayed by
//! `agent/policy/tests/fuzz_regressions.rs`.
//!
//! Run (see tests/fuzz/README.md):
//!   cargo +moat-nightly fuzz run authz_request -- -rss_limit_mb=512 -max_len=1048576

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    moat_policy::fuzzing::check(data);
});
