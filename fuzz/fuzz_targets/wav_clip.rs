#![no_main]
//! `cargo +nightly fuzz run wav_clip`: see callbridge_testkit::fuzz::wav_clip.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::wav_clip(data));
