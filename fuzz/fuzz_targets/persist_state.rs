#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pith_fuzz::persist_state(data));
