//! Proof of presence: the card signs the server's challenge with the P-256
//! key in the retired slot 95 (PIN and touch policy never), so the server
//! releases a secret only while this card is at this agent.

use x509_cert::der::EncodePem;
use yubikey::piv::{self, AlgorithmId, RetiredSlotId, SlotId};
use yubikey::{PinPolicy, TouchPolicy};

use super::keys::attestation_chain;
use super::open::{open, release};
use super::secrets::authenticate;
use super::{has_metadata, other_err, CardError, ReaderPolicy};

const SLOT: SlotId = SlotId::Retired(RetiredSlotId::R20);

/// The factory default management key (public knowledge, the same bytes for
/// 3DES and AES-192). Only ever used to establish the presence key on a card
/// whose presence key the server has not recorded yet.
const FACTORY_MANAGEMENT_KEY: &[u8] = b"010203040506070801020304050607080102030405060708";

pub struct Presence {
    /// DER ECDSA signature over the digest.
    pub signature: Vec<u8>,
    /// With `establish`: the new key (PEM SPKI) and [slot 95 attestation, f9].
    pub established: Option<(String, Vec<String>)>,
}

/// Sign `digest` with the presence key; with `establish`, generate that key
/// first (factory management key) and attest it.
pub fn prove_presence(
    serial: u32,
    policy: ReaderPolicy,
    digest: &[u8; 32],
    establish: bool,
) -> Result<Presence, CardError> {
    let (_, mut yk) = open(serial, policy)?;
    let established = if establish {
        authenticate(&mut yk, FACTORY_MANAGEMENT_KEY)?;
        let spki = piv::generate(
            &mut yk,
            SLOT,
            AlgorithmId::EccP256,
            PinPolicy::Never,
            TouchPolicy::Never,
        )
        .map_err(other_err)?;
        let pem = spki
            .to_pem(x509_cert::der::pem::LineEnding::LF)
            .map_err(|e| CardError::Card(e.to_string()))?;
        Some((pem, attestation_chain(&mut yk, SLOT)?))
    } else {
        // An empty slot answers GENERAL AUTHENTICATE with a generic error;
        // the metadata says so precisely (firmware 5.3+).
        if has_metadata(&yk) {
            if let Err(yubikey::Error::NotFound) = piv::metadata(&mut yk, SLOT) {
                return Err(CardError::NoPresenceKey);
            }
        }
        None
    };
    let signature = match piv::sign_data(&mut yk, digest, AlgorithmId::EccP256, SLOT) {
        Ok(s) => s.to_vec(),
        Err(yubikey::Error::NotFound | yubikey::Error::KeyError) => {
            return Err(CardError::NoPresenceKey)
        }
        Err(e) => return Err(other_err(e)),
    };
    release(yk);
    Ok(Presence {
        signature,
        established,
    })
}
