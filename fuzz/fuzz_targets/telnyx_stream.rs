#![no_main]
//! `cargo +nightly fuzz run telnyx_stream`: see callbridge_testkit::fuzz::telnyx_stream.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::telnyx_stream(data));
