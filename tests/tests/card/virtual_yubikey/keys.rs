//! Keys generated on the software YubiKey sign, decrypt and agree keys as
//! their public keys expect, under their PIN policies.

use kleidia_tests::card::{default_mgm, lock_blocking, open, VirtualYubiKey, DEFAULT_PIN};
use sha2::{Digest, Sha256};
use yubikey::piv::{self, AlgorithmId, SlotId};
use yubikey::{Error, PinPolicy, TouchPolicy};

/// EMSA-PKCS1-v1_5 encoding of a SHA-256 digest for a 2048-bit key.
fn pkcs1_sha256(digest: &[u8]) -> Vec<u8> {
    let prefix = hex::decode("3031300d060960864801650304020105000420").unwrap();
    let mut em = vec![0x00, 0x01];
    em.resize(256 - prefix.len() - digest.len() - 1, 0xFF);
    em.push(0x00);
    em.extend(prefix);
    em.extend_from_slice(digest);
    em
}

#[test]
fn generated_rsa_2048_and_p256_keys_sign_decrypt_and_agree_keys_as_their_public_keys_expect() {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use rsa::pkcs1::DecodeRsaPublicKey;
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut key = VirtualYubiKey::plug(dir.path(), 12345678, "5.7.1", 0).unwrap();
    let mut yk = open(12345678);
    yk.authenticate(&default_mgm(&yk)).unwrap();
    let rsa_spki = piv::generate(
        &mut yk,
        SlotId::Authentication,
        AlgorithmId::Rsa2048,
        PinPolicy::Once,
        TouchPolicy::Never,
    )
    .unwrap();
    let ec_spki = piv::generate(
        &mut yk,
        SlotId::Signature,
        AlgorithmId::EccP256,
        PinPolicy::Always,
        TouchPolicy::Cached,
    )
    .unwrap();
    let digest = Sha256::digest(b"Kleidia signs this");

    assert!(
        matches!(
            piv::sign_data(
                &mut yk,
                &pkcs1_sha256(&digest),
                AlgorithmId::Rsa2048,
                SlotId::Authentication
            ),
            Err(Error::AuthenticationError)
        ),
        "PIN policy: no signature before VERIFY"
    );
    yk.verify_pin(DEFAULT_PIN).unwrap();
    let sig = piv::sign_data(
        &mut yk,
        &pkcs1_sha256(&digest),
        AlgorithmId::Rsa2048,
        SlotId::Authentication,
    )
    .unwrap();
    let rsa_pub =
        rsa::RsaPublicKey::from_pkcs1_der(rsa_spki.subject_public_key.raw_bytes()).unwrap();
    rsa_pub
        .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
        .unwrap();

    let sig = piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, SlotId::Signature).unwrap();
    let vk =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(ec_spki.subject_public_key.raw_bytes()).unwrap();
    vk.verify_prehash(&digest, &p256::ecdsa::Signature::from_der(&sig).unwrap())
        .unwrap();
    assert!(
        piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, SlotId::Signature).is_err(),
        "PIN policy ALWAYS: a second signature needs another VERIFY"
    );

    // RSA decryption: the card returns the padded block, the host unpads it.
    let ciphertext = rsa_pub
        .encrypt(&mut rand::rngs::OsRng, rsa::Pkcs1v15Encrypt, b"session key")
        .unwrap();
    let block = piv::decrypt_data(
        &mut yk,
        &ciphertext,
        AlgorithmId::Rsa2048,
        SlotId::Authentication,
    )
    .unwrap();
    assert_eq!(block.len(), 256);
    assert_eq!(&block[..2], &[0x00, 0x02]);
    assert_eq!(&block[block.len() - 11..], b"session key");

    // ECDH with the P-256 key (PIN always: verify first).
    let peer = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let peer_point = {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        peer.public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    };
    yk.verify_pin(DEFAULT_PIN).unwrap();
    let shared = piv::decrypt_data(
        &mut yk,
        &peer_point,
        AlgorithmId::EccP256,
        SlotId::Signature,
    )
    .unwrap();
    let card_pub =
        p256::PublicKey::from_sec1_bytes(ec_spki.subject_public_key.raw_bytes()).unwrap();
    let expected = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), card_pub.as_affine());
    assert_eq!(&shared[..], &expected.raw_secret_bytes()[..]);

    let meta = piv::metadata(&mut yk, SlotId::Signature).unwrap();
    assert_eq!(meta.policy, Some((PinPolicy::Always, TouchPolicy::Cached)));
    assert_eq!(
        meta.public.unwrap().subject_public_key.raw_bytes(),
        ec_spki.subject_public_key.raw_bytes()
    );
    drop(yk);
    let state = key.state_json().unwrap();
    assert_eq!(state["slots"]["9a"]["algorithm"], 0x07);
    assert_eq!(state["slots"]["9c"]["algorithm"], 0x11);
    key.stop().unwrap();
}
