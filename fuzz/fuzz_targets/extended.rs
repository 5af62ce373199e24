#![no_main]
//! cargo-fuzz target `extended`: the body is `ccfd_fuzz::extended` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::extended(data));
