#![no_main]
//! cargo-fuzz target `utp`: the body is `ccfd_fuzz::utp` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::utp(data));
