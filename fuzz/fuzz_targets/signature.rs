#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| connectord::fuzz_targets::signature(data));
