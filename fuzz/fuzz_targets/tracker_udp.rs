#![no_main]
//! cargo-fuzz target `tracker_udp`: the body is `ccfd_fuzz::tracker_udp` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::tracker_udp(data));
