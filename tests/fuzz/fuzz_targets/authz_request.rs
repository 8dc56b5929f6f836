//! The Docker authorization request and body decoders: arbitrary bytes as a
//! whole `AuthZReq`, as the body of each endpoint whose body the policy
//! reads, as `docker inspect` output and as a request URI (see
//! `moat_tests::fuzz::authz_request`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_tests::fuzz::authz_request(data));
