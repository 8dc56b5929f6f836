//! moatd's TOML configuration: parse and validate.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_tests::fuzz::moatd_config(data));
