#![no_main]
// The body is shared with the stable harness (tests/fuzz_regressions.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| tickwire_fuzz::quiet_pong(data));
