//! Seccomp profiles (Docker and OCI formats): parse, resolve, compile, run.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_tests::fuzz::profile(data));
