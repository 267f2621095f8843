#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kleidia_protocol::fuzzing::ticket(data));
