#![no_main]
//! cargo-fuzz target `bencode`: the body is `ccfd_fuzz::bencode` (fuzz/src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ccfd_fuzz::bencode(data));
