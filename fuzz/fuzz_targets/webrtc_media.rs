#![no_main]
//! `cargo +nightly fuzz run webrtc_media`: see callbridge_testkit::fuzz::webrtc_media.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::webrtc_media(data));
