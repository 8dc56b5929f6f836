//! The exposition reader behind `moat stats`: moatd's HTTP answer and its
//! text exposition.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_tests::fuzz::exposition_reader(data));
