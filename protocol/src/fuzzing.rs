//! One-input entry points for the `cargo fuzz` targets in `fuzz/`, and the
//! corpus walk with which each crate's tests replay the committed inputs
//! (`make test` needs neither cargo-fuzz nor nightly). Not an API.

use std::path::{Path, PathBuf};

use crate::ticket::{
    canonical_json, Operation, TicketClaims, TicketError, TicketExpectation, TicketKeyResponse,
    TicketSigningKey, TicketVerifyingKey, TICKET_MAX_LEN,
};

/// Every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`
/// under `fuzz_dir`, sorted, with its bytes.
pub fn inputs(fuzz_dir: &Path, target: &str) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir.join(kind).join(target);
        if !dir.is_dir() {
            continue;
        }
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        paths.sort();
        for path in paths.into_iter().filter(|p| p.is_file()) {
            let bytes = std::fs::read(&path)?;
            out.push((path, bytes));
        }
    }
    Ok(out)
}

/// The key the `ticket` target's seeds are signed with.
pub fn ticket_signing_key() -> TicketSigningKey {
    TicketSigningKey::from_bytes(&[7; 32])
}

/// Target `ticket`: a ticket string as the agent receives it, and the claims
/// JSON a ticket carries (signed here, so that `check` sees every shape).
pub fn ticket(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sk = ticket_signing_key();
    let vk = sk.verifying_key();

    // What reaches the agent: only a ticket signed with the key verifies, and
    // what verifies re-signs to a ticket that verifies to the same claims.
    if let Ok(claims) = vk.verify(text) {
        let again = sk.sign(&claims);
        assert_eq!(vk.verify(&again).as_ref(), Ok(&claims));
        check_everywhere(&claims);
    }

    // Any claims the server could sign: the round trip is exact, and the
    // checks decide without overflowing.
    if let Ok(claims) = serde_json::from_str::<TicketClaims>(text) {
        let t = sk.sign(&claims);
        let back = vk.verify(&t);
        if t.len() <= TICKET_MAX_LEN {
            assert_eq!(back.as_ref(), Ok(&claims));
        } else {
            assert_eq!(back, Err(TicketError::Malformed));
        }
        check_everywhere(&claims);
    }

    // The ticket-key response the agent fetches.
    if let Ok(r) = serde_json::from_str::<TicketKeyResponse>(text) {
        if let Ok(k) = TicketVerifyingKey::from_response(&r) {
            assert_eq!(k.response(), r);
        }
    }
    let _ = TicketVerifyingKey::from_base64(text);

    // The parameter hash: canonical JSON denotes the same value. (Floats
    // excepted: serde_json's default float parsing is not exactly
    // round-trip, and no parameter struct has one.)
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        if !has_float(&v) {
            let c = canonical_json(&v);
            let back: Result<serde_json::Value, _> = serde_json::from_str(&c);
            assert!(
                back.is_ok_and(|b| b == v),
                "canonical JSON changed the value: {c}"
            );
        }
    }
}

fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

fn check_everywhere(claims: &TicketClaims) {
    for now in [
        claims.issued_at,
        claims.expires_at,
        claims.expires_at.wrapping_sub(1),
        0,
        i64::MIN,
        i64::MAX,
    ] {
        let want = TicketExpectation {
            operation: claims.operation,
            serial: claims.serial,
            agent_key_fingerprint: &claims.agent_key_fingerprint,
            params_hash: &claims.params_hash,
            now,
        };
        if claims.check(&want).is_ok() {
            assert!(claims.issued_at <= claims.expires_at && now < claims.expires_at);
        }
        let other = TicketExpectation {
            operation: Operation::Reset,
            serial: claims.serial.wrapping_add(1),
            ..want
        };
        assert!(claims.check(&other).is_err());
    }
}

#[cfg(test)]
mod replay {
    #[test]
    fn the_committed_ticket_corpus_and_regressions_replay_without_a_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let inputs = super::inputs(&dir, "ticket").unwrap_or_default();
        assert!(!inputs.is_empty(), "no corpus under {}", dir.display());
        for (path, bytes) in inputs {
            eprintln!("{}", path.display());
            super::ticket(&bytes);
        }
    }
}
