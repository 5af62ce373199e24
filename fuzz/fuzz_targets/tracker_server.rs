#![no_main]
//! cargo-fuzz target `tracker_server`: the body is `ccfd_fuzz::tracker_server` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::tracker_server(data));
