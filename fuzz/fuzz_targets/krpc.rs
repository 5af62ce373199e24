#![no_main]
//! cargo-fuzz target `krpc`: the body is `ccfd_fuzz::krpc` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::krpc(data));
