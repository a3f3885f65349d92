#![no_main]
use libfuzzer_sys::fuzz_target;

// The body lives in the crate (and runs under `cargo test` as well).
fuzz_target!(|data: &[u8]| tickwire::feed::recording::log::fuzz_read(data));
