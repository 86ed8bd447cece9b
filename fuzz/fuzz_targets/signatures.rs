#![no_main]
//! `cargo +nightly fuzz run signatures`: see callbridge_testkit::fuzz::signatures.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::signatures(data));
