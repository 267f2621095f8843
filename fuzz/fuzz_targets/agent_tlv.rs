#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kleidia_agent::card::fuzzing::agent_tlv(data));
