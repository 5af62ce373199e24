#![no_main]
//! cargo-fuzz target `tracker_http`: the body is `ccfd_fuzz::tracker_http` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::tracker_http(data));
