#![no_main]
//! cargo-fuzz target `magnet`: the body is `ccfd_fuzz::magnet` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::magnet(data));
