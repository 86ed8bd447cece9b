#![no_main]
//! `cargo +nightly fuzz run realtime_events`: see callbridge_testkit::fuzz::realtime_events.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::realtime_events(data));
