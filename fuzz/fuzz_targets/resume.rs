#![no_main]
//! cargo-fuzz target `resume`: the body is `ccfd_fuzz::resume` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::resume(data));
