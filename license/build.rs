//! Compiles the vendor's Ed25519 verifying key into the binary.
//!
//! Source, first match wins:
//! 1. `KLEIDIA_LICENSE_PUBKEY`: the key as SPKI PEM text or 64 hex digits;
//! 2. `KLEIDIA_LICENSE_PUBKEY_FILE`: path to an SPKI PEM file (as written by
//!    `kleidia-license keygen`);
//! 3. the committed TEST key `keys/test-vendor.pub`, whose private half is
//!    public too: such a build accepts licenses anyone can sign.
//!
//! A malformed or weak (small-order) key fails the build.

use std::path::PathBuf;

use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::VerifyingKey;

fn main() {
    if let Err(e) = run() {
        eprintln!("kleidia-license build: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    println!("cargo:rerun-if-env-changed=KLEIDIA_LICENSE_PUBKEY");
    println!("cargo:rerun-if-env-changed=KLEIDIA_LICENSE_PUBKEY_FILE");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let test_path = manifest.join("keys").join("test-vendor.pub");
    println!("cargo:rerun-if-changed={}", test_path.display());

    let test_key = parse_key(&read(&test_path)?, &test_path.display().to_string())?;

    let (key, source) = if let Some(text) = non_empty_env("KLEIDIA_LICENSE_PUBKEY") {
        (
            parse_key(&text, "KLEIDIA_LICENSE_PUBKEY")?,
            "KLEIDIA_LICENSE_PUBKEY".to_string(),
        )
    } else if let Some(file) = non_empty_env("KLEIDIA_LICENSE_PUBKEY_FILE") {
        let path = PathBuf::from(file);
        println!("cargo:rerun-if-changed={}", path.display());
        let shown = path.display().to_string();
        (parse_key(&read(&path)?, &shown)?, shown)
    } else {
        (test_key, "license/keys/test-vendor.pub".to_string())
    };
    let is_test = key == test_key;
    if is_test {
        println!(
            "cargo:warning=kleidia-license is built with the TEST vendor key (license/keys/test-vendor.pub); \
             set KLEIDIA_LICENSE_PUBKEY_FILE for a production build"
        );
    }

    let out =
        PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?).join("vendor_key.rs");
    let bytes: Vec<String> = key.to_bytes().iter().map(|b| format!("{b:#04x}")).collect();
    let code = format!(
        "/// The vendor's Ed25519 verifying key, compiled in by build.rs.\n\
         pub const VENDOR_PUBKEY: [u8; 32] = [{}];\n\
         /// True when the key is the committed TEST key (its private half is public).\n\
         pub const VENDOR_PUBKEY_IS_TEST: bool = {is_test};\n\
         /// Where build.rs took the key from.\n\
         pub const VENDOR_PUBKEY_SOURCE: &str = {source:?};\n",
        bytes.join(", ")
    );
    std::fs::write(&out, code).map_err(|e| format!("write {}: {e}", out.display()))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn read(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn parse_key(text: &str, what: &str) -> Result<VerifyingKey, String> {
    let text = text.trim();
    let key = if text.contains("-----BEGIN") {
        VerifyingKey::from_public_key_pem(text)
            .map_err(|e| format!("{what}: not an Ed25519 SPKI PEM public key: {e}"))?
    } else {
        let raw = decode_hex(text).ok_or_else(|| {
            format!("{what}: expected SPKI PEM or 64 hex digits of an Ed25519 public key")
        })?;
        VerifyingKey::from_bytes(&raw)
            .map_err(|e| format!("{what}: not a valid Ed25519 public key: {e}"))?
    };
    if key.is_weak() {
        return Err(format!(
            "{what}: refusing a small-order (weak) Ed25519 public key"
        ));
    }
    Ok(key)
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}
