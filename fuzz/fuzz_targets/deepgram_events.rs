#![no_main]
//! `cargo +nightly fuzz run deepgram_events`: see callbridge_testkit::fuzz::deepgram_events.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::deepgram_events(data));
