#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crosstrade_fuzz::bodies::jsonrpc_envelope(data));
