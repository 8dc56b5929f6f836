//! The audit reader behind `moat events`: lines of an audit log.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_tests::fuzz::audit_reader(data));
