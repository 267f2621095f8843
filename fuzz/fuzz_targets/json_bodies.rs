#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kleidia::fuzzing::json_bodies(data));
