#![no_main]
//! `cargo +nightly fuzz run webrtc_offer`: see callbridge_testkit::fuzz::webrtc_offer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::webrtc_offer(data));
