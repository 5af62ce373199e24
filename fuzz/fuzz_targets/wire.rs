#![no_main]
//! cargo-fuzz target `wire`: the body is `ccfd_fuzz::wire` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::wire(data));
