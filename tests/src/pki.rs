//! What a YubiKey would send the server, made in software: serials, slot
//! attestations under a test attestation root, and CSRs.

use std::path::Path;
use std::time::SystemTime;

use kleidia_virtual_yubikey::attest::{attest, pem, AttestationRoot, AttestedKey};
use kleidia_virtual_yubikey::keys::PrivateKey;
use kleidia_virtual_yubikey::state::Firmware;
use rand::rngs::OsRng;
use rand::Rng;

/// A serial no other test uses (in all likelihood).
pub fn random_serial() -> u32 {
    OsRng.gen_range(10_000_000..99_999_999)
}

/// A chain [slot 9a attestation, device f9] for `key`, as a YubiKey 5.7.1
/// with `serial` makes it under `root`, with these PIN and touch policies
/// (their YubiKey encodings).
pub fn attestation_chain(
    root: &AttestationRoot,
    serial: u32,
    key: &PrivateKey,
    pin: u8,
    touch: u8,
) -> Vec<String> {
    attestation_chain_in_slot(root, serial, 0x9a, key, pin, touch)
}

/// As [`attestation_chain`], for the key in `slot` (e.g. 0x95, the presence slot).
pub fn attestation_chain_in_slot(
    root: &AttestationRoot,
    serial: u32,
    slot: u8,
    key: &PrivateKey,
    pin: u8,
    touch: u8,
) -> Vec<String> {
    let (f9_key, f9_cert) = root
        .issue_device_attestation(SystemTime::now(), &mut OsRng)
        .unwrap();
    let slot = attest(
        &f9_key,
        &f9_cert,
        &AttestedKey {
            slot,
            key,
            pin_policy: pin,
            touch_policy: touch,
            serial,
            firmware: Firmware(5, 7, 1),
        },
        &mut OsRng,
    )
    .unwrap();
    vec![
        pem("CERTIFICATE", &slot).unwrap(),
        pem("CERTIFICATE", &f9_cert).unwrap(),
    ]
}

/// A CSR signed by `key` that asks for names Kleidia must ignore (another
/// subject, DNS and e-mail names, and to be a CA). Works in `dir`.
pub fn csr_asking_for_foreign_names(key: &PrivateKey, dir: &Path) -> String {
    std::fs::write(
        dir.join("slot.key"),
        pem("PRIVATE KEY", &key.to_pkcs8().unwrap()).unwrap(),
    )
    .unwrap();
    crate::openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "slot.key",
            "-out",
            "slot.csr",
            "-subj",
            "/CN=evil.example/O=Evil",
            "-addext",
            "subjectAltName=DNS:evil.example,email:root@evil.example",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
    )
    .unwrap();
    std::fs::read_to_string(dir.join("slot.csr")).unwrap()
}
