#![no_main]
//! cargo-fuzz target `http1`: the body is `ccfd_fuzz::http1` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::http1(data));
