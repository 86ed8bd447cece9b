#![no_main]
//! `cargo +nightly fuzz run elevenlabs_events`: see callbridge_testkit::fuzz::elevenlabs_events.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::elevenlabs_events(data));
