#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crosstrade_fuzz::bodies::redirect_uri(data));
