//! One-input entry points of the `csr_attestation` and `json_bodies` targets
//! in `fuzz/`, also replayed over the committed corpus by this crate's tests.
//! Not an API.

use std::sync::OnceLock;

use kleidia_protocol::agent::{
    Attestation, GenerateCsrParams, GeneratedCsr, ImportCertificateParams, OperationDone,
    PresenceProof, ProvePresenceParams, RotateManagementKeyParams, SetPinParams, SignedRequest,
};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::fleet::agent::RegisterAgent;
use crate::fleet::attestation::{verify_at, AttestationRoots};
use crate::fleet::certificates::{RevokeRequest, SignCsrRequest};
use crate::fleet::csr::{pem_to_der, verify_csr};
use crate::fleet::operations::{OperationRequest, OperationResult};
use crate::fleet::policy::Policy;
use crate::fleet::presence::PresenceSubmission;
use crate::fleet::registry::{checked_reason, AssignOwner, RegisterDevice, Transition};

/// The PEM blocks of `text`, as (label, whole block).
fn pem_blocks(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("-----BEGIN ") {
        let block = &rest[i..];
        let Some(label_end) = block[11..].find("-----") else {
            break;
        };
        let label = &block[11..11 + label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(j) = block.find(&end_marker) else {
            break;
        };
        let len = j + end_marker.len();
        out.push((label, &block[..len]));
        rest = &block[len..];
    }
    out
}

fn yubico() -> Option<&'static AttestationRoots> {
    static ROOTS: OnceLock<Option<AttestationRoots>> = OnceLock::new();
    ROOTS
        .get_or_init(|| AttestationRoots::yubico().ok())
        .as_ref()
}

/// Target `csr_attestation`. Input: text whose first line may be
/// `<expected serial> <unix time>`, then PEM blocks: a `CERTIFICATE REQUEST`
/// goes to the CSR check, the `CERTIFICATE`s form the attestation chain,
/// verified against Yubico's roots and against the input's own blocks taken
/// as a trust configuration.
pub fn csr_attestation(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut first = text.lines().next().unwrap_or_default().split_whitespace();
    let serial = first
        .next()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(0);
    let now = first
        .next()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .unwrap_or_else(|| {
            OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        });

    let blocks = pem_blocks(text);
    let mut spki: Option<Vec<u8>> = None;
    for (label, block) in &blocks {
        if *label == "CERTIFICATE REQUEST" {
            if let Ok(csr) = verify_csr(block) {
                assert!(verify_csr(&csr.pem).is_ok_and(|again| again.spki_der == csr.spki_der));
                spki.get_or_insert(csr.spki_der);
            }
        }
    }
    let chain: Vec<String> = blocks
        .iter()
        .filter(|(label, _)| *label == "CERTIFICATE")
        .map(|(_, b)| (*b).to_string())
        .collect();
    // Without a CSR, the slot certificate's own key, so the later checks run.
    let spki = spki.unwrap_or_else(|| {
        chain
            .first()
            .and_then(|p| pem_to_der(p, "CERTIFICATE"))
            .and_then(|der| {
                X509Certificate::from_der(&der)
                    .ok()
                    .map(|(_, c)| c.public_key().raw.to_vec())
            })
            .unwrap_or_default()
    });
    if let Some(roots) = yubico() {
        if let Ok(a) = verify_at(roots, &chain, serial, &spki, now) {
            assert_eq!(a.serial, serial);
        }
    }
    if let Ok(own) = AttestationRoots::from_pem(text) {
        if let Ok(a) = verify_at(&own, &chain, serial, &spki, now) {
            assert_eq!(a.serial, serial);
        }
    }
}

fn parse<T: DeserializeOwned + std::fmt::Debug>(json: &[u8]) -> Option<T> {
    let v = serde_json::from_slice::<T>(json).ok()?;
    let _ = format!("{v:?}");
    Some(v)
}

/// Target `json_bodies`: the first byte picks a request body type of the
/// server's API (or of the agent's, or an agent answer the server reads); the
/// rest is the JSON, followed by the checks the handler makes first.
pub fn json_bodies(data: &[u8]) {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    match which % 17 {
        0 => {
            if let Some(b) = parse::<SignCsrRequest>(json) {
                let _ = verify_csr(&b.csr_pem);
            }
        }
        1 => {
            if let Some(b) = parse::<RevokeRequest>(json) {
                let _ = checked_reason(&b.reason);
            }
        }
        2 => {
            let _ = parse::<RegisterDevice>(json);
        }
        3 => {
            if let Some(b) = parse::<Transition>(json) {
                if let Ok(r) = checked_reason(&b.reason) {
                    assert!(!r.is_empty() && r.len() <= 500);
                }
            }
        }
        4 => {
            let _ = parse::<AssignOwner>(json);
        }
        5 => {
            if let Some(b) = parse::<RegisterAgent>(json) {
                let _ = kleidia_protocol::ticket::parse_agent_public_key(&b.public_key);
            }
        }
        6 => {
            if let Some(b) = parse::<OperationRequest>(json) {
                let _ = serde_json::to_string(&b);
            }
        }
        7 => {
            let _ = parse::<OperationResult>(json);
        }
        8 => {
            let _ = parse::<PresenceSubmission>(json);
        }
        9 => {
            if let Some(p) = parse::<Policy>(json) {
                if p.validate().is_ok() {
                    let again = serde_json::to_vec(&p)
                        .ok()
                        .and_then(|j| parse::<Policy>(&j));
                    assert_eq!(again.as_ref(), Some(&p));
                }
            }
        }
        10 => {
            let _ = parse::<SignedRequest<SetPinParams>>(json);
        }
        11 => {
            if let Some(r) = parse::<SignedRequest<GenerateCsrParams>>(json) {
                let _ = kleidia_protocol::ticket::params_hash(&r.params);
            }
        }
        12 => {
            let _ = parse::<SignedRequest<ImportCertificateParams>>(json);
        }
        13 => {
            let _ = parse::<SignedRequest<RotateManagementKeyParams>>(json);
        }
        14 => {
            if let Some(r) = parse::<SignedRequest<ProvePresenceParams>>(json) {
                let _ = kleidia_protocol::ticket::params_hash(&r.params);
            }
        }
        15 => {
            let _ = parse::<PresenceProof>(json);
            let _ = parse::<OperationDone>(json);
        }
        _ => {
            let _ = parse::<GeneratedCsr>(json);
            let _ = parse::<Attestation>(json);
        }
    }
}

#[cfg(test)]
mod replay {
    fn replay(target: &str, run: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let inputs = kleidia_protocol::fuzzing::inputs(&dir, target).unwrap_or_default();
        assert!(!inputs.is_empty(), "no corpus under {}", dir.display());
        for (path, bytes) in inputs {
            eprintln!("{}", path.display());
            run(&bytes);
        }
    }

    #[test]
    fn the_committed_csr_attestation_corpus_and_regressions_replay_without_a_panic() {
        replay("csr_attestation", super::csr_attestation);
    }

    #[test]
    fn the_committed_json_bodies_corpus_and_regressions_replay_without_a_panic() {
        replay("json_bodies", super::json_bodies);
    }
}
