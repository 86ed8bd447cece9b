#![no_main]
//! `cargo +nightly fuzz run vonage_stream`: see callbridge_testkit::fuzz::vonage_stream.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::vonage_stream(data));
