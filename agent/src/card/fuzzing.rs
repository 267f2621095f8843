//! One-input entry point of the `agent_tlv` target in `fuzz/`, also replayed
//! over the committed corpus by this crate's tests. Not an API.
//!
//! The agent's PIV TLV framing is the `yubikey` crate's; what the agent itself
//! makes of the card's answers and of the request's values is here: the
//! certificate object of a slot (`info`), the attestation certificate
//! (`attest`, `generate-csr`), the certificate PEM to import, the CSR subject,
//! the management key hex and the PIN format. The first input byte picks one.

use std::str::FromStr;

use x509_cert::der::{Decode, DecodePem, Encode, EncodePem};
use yubikey::MgmAlgorithmId;

use super::info::cert_info;
use super::secrets::{check_pin_format, parse_mgm};

/// Target `agent_tlv`.
pub fn agent_tlv(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = std::str::from_utf8(rest).ok();
    match which % 6 {
        0 => {
            // A slot's certificate, as `info` reads it.
            if let Ok(c) = yubikey::certificate::Certificate::from_bytes(rest.to_vec()) {
                let info = cert_info(&c.cert);
                assert_eq!(info.subject, c.subject());
            }
        }
        1 => {
            // An attestation certificate from the card, re-encoded as PEM for the server.
            if let Ok(c) = x509_cert::Certificate::from_der(rest) {
                let _ = cert_info(&c);
                if let Ok(pem) = c.to_pem(x509_cert::der::pem::LineEnding::LF) {
                    let back = x509_cert::Certificate::from_pem(&pem).and_then(|b| b.to_der());
                    assert_eq!(back.ok(), c.to_der().ok());
                }
            }
        }
        2 => {
            // The certificate to import, as `import_certificate` parses it.
            if let Some(pem) = text {
                if let Ok(c) = x509_cert::Certificate::from_pem(pem.trim()) {
                    let _ = c.tbs_certificate().subject_public_key_info().to_der();
                    let _ = cert_info(&c);
                }
            }
        }
        3 => {
            // The CSR subject of `generate-csr`.
            if let Some(s) = text {
                if let Ok(n) = x509_cert::name::Name::from_str(s) {
                    let _ = n.to_string();
                    let _ = n.to_der();
                }
            }
        }
        4 => {
            // A decrypted management key.
            for alg in [
                MgmAlgorithmId::ThreeDes,
                MgmAlgorithmId::Aes128,
                MgmAlgorithmId::Aes192,
                MgmAlgorithmId::Aes256,
            ] {
                let _ = parse_mgm(rest, alg);
            }
        }
        _ => {
            // A decrypted PIN or PUK.
            let ok = check_pin_format(rest).is_ok();
            assert_eq!(ok, (6..=8).contains(&rest.len()) && !rest.contains(&0xFF));
        }
    }
}

#[cfg(test)]
mod replay {
    #[test]
    fn the_committed_agent_tlv_corpus_and_regressions_replay_without_a_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let inputs = kleidia_protocol::fuzzing::inputs(&dir, "agent_tlv").unwrap_or_default();
        assert!(!inputs.is_empty(), "no corpus under {}", dir.display());
        for (path, bytes) in inputs {
            eprintln!("{}", path.display());
            super::agent_tlv(&bytes);
        }
    }
}
