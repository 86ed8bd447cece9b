#![no_main]
//! `cargo +nightly fuzz run webhooks`: see callbridge_testkit::fuzz::webhooks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::webhooks(data));
