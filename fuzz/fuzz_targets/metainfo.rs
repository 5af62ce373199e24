#![no_main]
//! cargo-fuzz target `metainfo`: the body is `ccfd_fuzz::metainfo` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::metainfo(data));
