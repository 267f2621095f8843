//! The compiled-in vendor key and the vendor's key files.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

mod built {
    include!(concat!(env!("OUT_DIR"), "/vendor_key.rs"));
}

pub use built::{VENDOR_PUBKEY_IS_TEST, VENDOR_PUBKEY_SOURCE};

/// The verifying key compiled into this binary (see `build.rs`).
pub fn vendor_key() -> Result<VerifyingKey> {
    // build.rs already refused malformed and weak keys; checked again so a
    // broken build can never verify anything.
    let k = VerifyingKey::from_bytes(&built::VENDOR_PUBKEY)
        .context("the compiled-in vendor key is not a valid Ed25519 key")?;
    if k.is_weak() {
        bail!("the compiled-in vendor key is a small-order key");
    }
    Ok(k)
}

/// Hex SHA-256 of the compiled-in key, short enough to compare by eye.
pub fn vendor_key_fingerprint() -> String {
    crate::document::sha256_hex(&built::VENDOR_PUBKEY)[..16].to_string()
}

/// Generate a key pair into `dir` as `vendor.key` (PKCS#8 PEM, mode 0600)
/// and `vendor.pub` (SPKI PEM). Refuses to overwrite either.
pub fn keygen(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let key_path = dir.join("vendor.key");
    let pub_path = dir.join("vendor.pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!(
                "{} already exists; refusing to overwrite a key",
                p.display()
            );
        }
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let key_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encode private key: {e}"))?;
    let pub_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encode public key: {e}"))?;
    write_new(&key_path, key_pem.as_bytes(), 0o600)?;
    write_new(&pub_path, pub_pem.as_bytes(), 0o644)?;
    Ok((key_path, pub_path))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Read a vendor private key (PKCS#8 PEM).
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    SigningKey::from_pkcs8_pem(pem.trim())
        .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 PKCS#8 PEM key: {e}", path.display()))
}

/// Read a vendor public key (SPKI PEM).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    VerifyingKey::from_public_key_pem(pem.trim())
        .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 SPKI PEM key: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_key(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("keys")
            .join(name)
    }

    #[test]
    fn the_test_key_flag_says_whether_the_compiled_in_key_is_the_committed_test_key() {
        let test_pub = load_verifying_key(&repo_key("test-vendor.pub")).unwrap();
        let is_test_key = vendor_key().unwrap() == test_pub;
        assert_eq!(is_test_key, VENDOR_PUBKEY_IS_TEST);
        if std::env::var_os("KLEIDIA_LICENSE_PUBKEY").is_none()
            && std::env::var_os("KLEIDIA_LICENSE_PUBKEY_FILE").is_none()
        {
            assert!(is_test_key, "a default build must trust the test key");
        }
        let test_key = load_signing_key(&repo_key("test-vendor.key")).unwrap();
        assert_eq!(test_key.verifying_key(), test_pub);
    }

    #[test]
    fn keygen_writes_a_matching_pair_with_a_private_key_only_the_owner_can_read() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = keygen(dir.path()).unwrap();
        let sk = load_signing_key(&k).unwrap();
        let vk = load_verifying_key(&p).unwrap();
        assert_eq!(sk.verifying_key(), vk);
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn keygen_refuses_to_overwrite_an_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        let (k, _) = keygen(dir.path()).unwrap();
        let before = std::fs::read(&k).unwrap();
        assert!(keygen(dir.path()).is_err());
        assert_eq!(std::fs::read(&k).unwrap(), before);
    }
}
