#![no_main]
//! `cargo +nightly fuzz run twilio_stream`: see callbridge_testkit::fuzz::twilio_stream.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::twilio_stream(data));
