//! One-input entry point of the `vyk_apdu` target in `fuzz/`, also replayed
//! over the committed corpus by this crate's tests. Not an API.
//!
//! Input: one flags byte, then frames. A frame is a length byte and that many
//! bytes of raw command APDU; length 0xFF is followed by a two-byte big-endian
//! length (extended APDUs); length 0xFE is a power cycle. Flag bits 0 and 1
//! start the session with the PIN verified and the management key
//! authenticated (the fuzzer cannot answer the challenge), bits 2–3 pick the
//! firmware, so that every command handler is reachable. The OATH applet is
//! reached by a SELECT of its AID among the frames (it needs no login).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::attest::AttestationRoot;
use crate::card::{Card, AID_PIV};
use crate::state::{CardState, OathState, SlotKey};

const FIRMWARES: [&str; 4] = ["4.3.4", "5.4.3", "5.7.1", "5.7.4"];

fn factory_state(firmware: usize) -> Option<CardState> {
    static BASE: OnceLock<Option<(SlotKey, Vec<u8>)>> = OnceLock::new();
    let (f9, cert) = BASE
        .get_or_init(|| {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
            let mut rng = StdRng::seed_from_u64(1);
            let root = AttestationRoot::generate(now, &mut rng).ok()?;
            let (key, cert) = root.issue_device_attestation(now, &mut rng).ok()?;
            let f9 = SlotKey {
                algorithm: key.algorithm(),
                pkcs8: key.to_pkcs8().ok()?,
                pin_policy: 1,
                touch_policy: 1,
                origin: 2,
            };
            Some((f9, cert))
        })
        .clone()?;
    let fw = FIRMWARES[firmware % FIRMWARES.len()].parse().ok()?;
    let mut st = CardState::factory(12345678, fw, f9, cert);
    // The OATH application's salt is random at the factory: fix it, so an
    // input replays the same.
    st.oath = Some(OathState::new(*b"fuzzsalt"));
    Some(st)
}

/// Target `vyk_apdu`: a session of raw APDUs against a factory card.
pub fn vyk_apdu(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let Some(state) = factory_state(usize::from(flags >> 2) & 3) else {
        return;
    };
    let mut card = Card::new(state, StdRng::seed_from_u64(2));
    if flags & 3 != 0 {
        let resp = card.process(&[
            0, 0xA4, 4, 0, 5, AID_PIV[0], AID_PIV[1], AID_PIV[2], AID_PIV[3], AID_PIV[4],
        ]);
        assert!(resp.len() >= 2);
        card.session.pin_verified = flags & 1 != 0;
        card.session.pin_fresh = flags & 1 != 0;
        card.session.mgm_authenticated = flags & 2 != 0;
    }
    while let Some((&len, tail)) = rest.split_first() {
        let (n, tail) = match len {
            0xFE => {
                card.power_cycle();
                rest = tail;
                continue;
            }
            0xFF => match tail {
                [hi, lo, t @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), t),
                _ => return,
            },
            n => (usize::from(n), tail),
        };
        let n = n.min(tail.len());
        let (apdu, tail) = tail.split_at(n);
        rest = tail;
        let resp = card.process(apdu);
        // Every answer ends in a status word, and carries at most what a
        // short or extended response may.
        assert!(resp.len() >= 2, "no status word for {apdu:02x?}");
        assert!(
            resp.len() <= 65536 + 2,
            "oversized response for {apdu:02x?}"
        );
        let _ = card.take_dirty();
    }
}

/// Every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`.
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

#[cfg(test)]
mod replay {
    #[test]
    fn the_committed_vyk_apdu_corpus_and_regressions_replay_without_a_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let inputs = super::inputs(&dir, "vyk_apdu").unwrap_or_default();
        assert!(!inputs.is_empty(), "no corpus under {}", dir.display());
        for (path, bytes) in inputs {
            eprintln!("{}", path.display());
            super::vyk_apdu(&bytes);
        }
    }
}
