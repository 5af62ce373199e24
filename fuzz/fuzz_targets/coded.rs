#![no_main]
//! cargo-fuzz target `coded`: the body is `ccfd_fuzz::coded` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::coded(data));
