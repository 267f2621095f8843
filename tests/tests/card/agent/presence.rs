//! Proof of presence through the agent and pcscd with the software YubiKey:
//! a factory card makes its attested presence key in slot 95 (PIN and touch
//! policy never) with the factory management key, and signs the server's
//! challenge over the agent's own key fingerprint, without a PIN.

use base64::Engine as _;
use kleidia_protocol::agent::*;
use kleidia_tests::agent::{expect_error, ok_json, AgentWithKey};
use kleidia_tests::card::{lock, pin_retries};
use kleidia_tests::openssl;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

const SERIAL: u32 = 31000021;

fn params(establish: bool, nonce: &[u8; 32], op: uuid::Uuid) -> ProvePresenceParams {
    ProvePresenceParams {
        serial: SERIAL,
        nonce: base64::engine::general_purpose::STANDARD.encode(nonce),
        operation_id: op.to_string(),
        establish,
    }
}

fn verifies(
    key: &VerifyingKey,
    proof: &PresenceProof,
    nonce: &[u8],
    op: uuid::Uuid,
    fp: &str,
) -> bool {
    let der = base64::engine::general_purpose::STANDARD
        .decode(&proof.signature)
        .unwrap();
    let sig = Signature::from_der(&der).unwrap();
    key.verify_prehash(&presence_digest(nonce, &op, fp), &sig)
        .is_ok()
}

#[tokio::test]
async fn a_factory_card_establishes_an_attested_presence_key_and_signs_challenges_over_the_agents_key_without_a_pin(
) {
    let _l = lock().await;
    let env = AgentWithKey::new(SERIAL).await;
    let fp = env.agent.fingerprint.clone();

    // No key in slot 95 yet: nothing to sign with.
    let op = uuid::Uuid::new_v4();
    let r = env
        .agent
        .run("/piv/prove-presence", &params(false, &[1; 32], op))
        .await
        .unwrap();
    expect_error(r, 409, codes::NO_PRESENCE_KEY).await;

    // Establish: the key, its attestation chain to the test root, the signature.
    let nonce = [7u8; 32];
    let proof: PresenceProof = ok_json(
        env.agent
            .run("/piv/prove-presence", &params(true, &nonce, op))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(proof.agent_key_fingerprint, fp);
    let pem = proof.public_key_pem.clone().unwrap();
    let key = VerifyingKey::from_public_key_pem(&pem).unwrap();
    assert!(verifies(&key, &proof, &nonce, op, &fp));
    assert!(!verifies(&key, &proof, &nonce, uuid::Uuid::new_v4(), &fp));
    let chain = proof.attestation_chain_pem.clone().unwrap();
    assert_eq!(chain.len(), 2);
    let dir = env.dir.path();
    std::fs::write(dir.join("att.pem"), &chain[0]).unwrap();
    std::fs::write(dir.join("f9.pem"), &chain[1]).unwrap();
    std::fs::write(
        dir.join("root.pem"),
        env.key.attestation_root_pem().unwrap(),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "f9.pem",
            "att.pem",
        ],
    )
    .unwrap();
    let subject = openssl(dir, &["x509", "-in", "att.pem", "-noout", "-subject"]).unwrap();
    assert!(subject.contains("YubiKey PIV Attestation 95"), "{subject}");
    let att_key = openssl(dir, &["x509", "-in", "att.pem", "-pubkey", "-noout"]).unwrap();
    assert_eq!(att_key.trim(), pem.trim());

    // Later challenges: the same key signs, no PIN is tried.
    let op2 = uuid::Uuid::new_v4();
    let proof2: PresenceProof = ok_json(
        env.agent
            .run("/piv/prove-presence", &params(false, &[9; 32], op2))
            .await
            .unwrap(),
    )
    .await;
    assert!(proof2.public_key_pem.is_none());
    assert!(verifies(&key, &proof2, &[9; 32], op2, &fp));
    assert_eq!(pin_retries(SERIAL), 3, "no PIN try was spent");
    assert_eq!(
        env.agent.decryptions().await.unwrap(),
        0,
        "nothing was decrypted"
    );
}
