//! Conversions between the wire types of `kleidia_protocol` and the
//! `yubikey` crate's.

use kleidia_protocol::agent::{
    KeyAlgorithm, ManagementKeyAlgorithm, PinPolicy, PivSlot, TouchPolicy,
};
use yubikey::piv::{AlgorithmId, SlotId};
use yubikey::MgmAlgorithmId;

/// A pair of functions converting between two enums variant by variant.
macro_rules! both_ways {
    ($to_wire:ident, $from_wire:ident: $wire:ty, $card:ty { $($w:ident = $c:ident),+ $(,)? }) => {
        pub(super) fn $to_wire(v: $card) -> $wire {
            match v {
                $(<$card>::$c => <$wire>::$w,)+
            }
        }

        pub(super) fn $from_wire(v: $wire) -> $card {
            match v {
                $(<$wire>::$w => <$card>::$c,)+
            }
        }
    };
}

both_ways!(mgm_alg_to_wire, mgm_alg_from_wire: ManagementKeyAlgorithm, MgmAlgorithmId {
    TripleDes = ThreeDes,
    Aes128 = Aes128,
    Aes192 = Aes192,
    Aes256 = Aes256,
});

both_ways!(pin_policy_to_wire, pin_policy_from_wire: PinPolicy, yubikey::PinPolicy {
    Default = Default,
    Never = Never,
    Once = Once,
    Always = Always,
});

both_ways!(touch_policy_to_wire, touch_policy_from_wire: TouchPolicy, yubikey::TouchPolicy {
    Default = Default,
    Never = Never,
    Always = Always,
    Cached = Cached,
});

pub(super) fn slot_id(slot: PivSlot) -> SlotId {
    match slot {
        PivSlot::Authentication => SlotId::Authentication,
        PivSlot::Signature => SlotId::Signature,
        PivSlot::KeyManagement => SlotId::KeyManagement,
        PivSlot::CardAuthentication => SlotId::CardAuthentication,
    }
}

pub(super) fn key_alg_from_wire(a: KeyAlgorithm) -> AlgorithmId {
    match a {
        KeyAlgorithm::Rsa2048 => AlgorithmId::Rsa2048,
        KeyAlgorithm::Rsa3072 => AlgorithmId::Rsa3072,
        KeyAlgorithm::Rsa4096 => AlgorithmId::Rsa4096,
        KeyAlgorithm::EccP256 => AlgorithmId::EccP256,
        KeyAlgorithm::EccP384 => AlgorithmId::EccP384,
    }
}

/// The card reports more algorithms than Kleidia generates (see `SlotKey::algorithm`).
pub(super) fn algorithm_name(a: AlgorithmId) -> &'static str {
    match a {
        AlgorithmId::Rsa1024 => "rsa1024",
        AlgorithmId::Rsa2048 => "rsa2048",
        AlgorithmId::Rsa3072 => "rsa3072",
        AlgorithmId::Rsa4096 => "rsa4096",
        AlgorithmId::EccP256 => "ecc_p256",
        AlgorithmId::EccP384 => "ecc_p384",
        AlgorithmId::Ed25519 => "ed25519",
        AlgorithmId::X25519 => "x25519",
    }
}
