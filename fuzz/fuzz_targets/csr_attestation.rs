#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kleidia::fuzzing::csr_attestation(data));
