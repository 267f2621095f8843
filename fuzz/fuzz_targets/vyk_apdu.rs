#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kleidia_virtual_yubikey::fuzzing::vyk_apdu(data));
