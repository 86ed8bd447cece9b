#![no_main]
//! `cargo +nightly fuzz run callback_replies`: see callbridge_testkit::fuzz::callback_replies.

libfuzzer_sys::fuzz_target!(|data: &[u8]| callbridge_testkit::fuzz::callback_replies(data));
