//! Issue 12 §2, as an insider tries it: a helpdesk user and a plain user
//! register an RSA key of their own as their "agent" through the API (no
//! agent, no card) and ask for a device's secrets. The server answers with a
//! presence challenge only; forged, replayed and misdirected proofs are
//! refused with a 4xx, release nothing, change nothing on the device or in
//! the escrow, and are audited. The card's own signature (played by the
//! harness with the key recorded for the device) still works, so the
//! refusals are for the reasons they name.

use base64::Engine as _;
use kleidia_protocol::agent::presence_digest;
use kleidia_tests::pki::{attestation_chain_in_slot, random_serial};
use kleidia_tests::{is_presence_challenge, sign_presence, Person, TestApp};
use kleidia_virtual_yubikey::attest::AttestationRoot;
use kleidia_virtual_yubikey::keys::{alg, PrivateKey};
use p256::ecdsa::SigningKey;
use rand::rngs::OsRng;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// YubiKey encodings of the PIN and touch policy "never".
const NEVER: u8 = 1;

/// A device of `owner`'s with a confirmed escrow version 1 (a PIN change
/// through the presence step, confirmed), and its presence key recorded.
async fn enrolled_device(f: &TestApp, owner: &Person) -> u32 {
    let serial = random_serial();
    owner.register_ok(serial).await;
    let (s, op) = owner
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let id = op["operation_id"].as_str().unwrap();
    let (s, v) = owner.report(serial, id, true).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(f.device_row(serial).await.1, Some(1));
    serial
}

/// The server's first answer holds no secret at all: only the challenge.
fn holds_no_secret(challenge: &Value) {
    let mut top: Vec<&str> = challenge
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    top.sort_unstable();
    assert_eq!(
        top,
        [
            "agent_path",
            "challenge_id",
            "establish",
            "expires_at",
            "operation",
            "operation_id",
            "presence_required",
            "request",
            "serial"
        ]
    );
    let params = challenge["request"]["params"].as_object().unwrap();
    let mut keys: Vec<&str> = params.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["establish", "nonce", "operation_id", "serial"]);
}

async fn post_proof(
    p: &Person,
    serial: u32,
    operation_id: &str,
    challenge_id: &Value,
    signature: &str,
    fingerprint: &str,
) -> (StatusCode, Value) {
    p.api
        .post_json(
            &format!("/api/yubikey/{serial}/operations/{operation_id}/presence"),
            &json!({"challenge_id": challenge_id,
                    "proof": {"signature": signature, "agent_key_fingerprint": fingerprint,
                              "ticket_id": challenge_id}}),
        )
        .await
}

/// What an insider could change: the device row, the escrow, the operations.
async fn snapshot(f: &TestApp, serial: u32) -> (Value, u64, i64, Option<Vec<u8>>) {
    let pool = f.db.pool().await.unwrap();
    let ops: i64 = sqlx::query_scalar("SELECT count(*) FROM operations WHERE device_serial = $1")
        .bind(i64::from(serial))
        .fetch_one(&pool)
        .await
        .unwrap();
    let key: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT presence_public_key FROM devices WHERE serial = $1")
            .bind(i64::from(serial))
            .fetch_one(&pool)
            .await
            .unwrap();
    let row = f.device_row(serial).await;
    (
        json!([row.0, row.1, row.2]),
        f.escrow_version(serial).await,
        ops,
        key,
    )
}

#[tokio::test]
async fn a_helpdesk_user_with_a_registered_key_but_no_card_gets_no_secret_and_every_forged_proof_is_refused_and_audited(
) {
    let f = TestApp::builder().own_openbao().start().await;
    let vera = f.person("vera", "user", "Vera Victim").await;
    let hugo = f.person("hugo", "helpdesk", "Hugo Helpdesk").await;
    let serial = enrolled_device(&f, &vera).await;
    let before = snapshot(&f, serial).await;
    let hugo_fp = hugo.fingerprint();

    // Every secret-releasing operation answers with a challenge only.
    for op in ["set_puk", "unblock_pin", "rotate_management_key"] {
        let (s, c) = hugo.api.authorize(serial, &json!({"operation": op})).await;
        assert!(is_presence_challenge(s, &c), "{op}: {s} {c}");
        assert_eq!(
            c["establish"], false,
            "the device's presence key is recorded"
        );
        holds_no_secret(&c);
    }

    // 1. Signed with a key of his own (no card): refused.
    let (_, c) = hugo
        .api
        .authorize(serial, &json!({"operation": "set_puk"}))
        .await;
    let op = c["operation_id"].as_str().unwrap().to_string();
    let own = SigningKey::random(&mut OsRng);
    let sig = sign_presence(&own, &c, &hugo_fp);
    let (s, v) = post_proof(&hugo, serial, &op, &c["challenge_id"], &sig, &hugo_fp).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("does not verify"),
        "{v}"
    );
    assert!(v.get("request").is_none(), "{v}");

    // 2. The same challenge again, now even with the card's signature: used up.
    let card = f.cards.key(serial);
    let sig = sign_presence(&card, &c, &hugo_fp);
    let (s, v) = post_proof(&hugo, serial, &op, &c["challenge_id"], &sig, &hugo_fp).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("already used"),
        "{v}"
    );

    // 3. A card signature made for another operation, posted for this one.
    let (_, a) = hugo
        .api
        .authorize(serial, &json!({"operation": "set_puk"}))
        .await;
    let (_, b) = hugo
        .api
        .authorize(serial, &json!({"operation": "set_puk"}))
        .await;
    let sig_for_a = sign_presence(&card, &a, &hugo_fp);
    let b_op = b["operation_id"].as_str().unwrap().to_string();
    let (s, v) = post_proof(
        &hugo,
        serial,
        &b_op,
        &b["challenge_id"],
        &sig_for_a,
        &hugo_fp,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // …or A's challenge posted under B's operation.
    let a_challenge = a["challenge_id"].clone();
    let (s, v) = post_proof(&hugo, serial, &b_op, &a_challenge, &sig_for_a, &hugo_fp).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("another operation"),
        "{v}"
    );

    // 4. A card signature over another agent key (the owner's agent, whose
    // proof an insider relays), claimed as his own or as what it is.
    let (_, c) = hugo
        .api
        .authorize(serial, &json!({"operation": "rotate_management_key"}))
        .await;
    let op = c["operation_id"].as_str().unwrap().to_string();
    let vera_fp = vera.fingerprint();
    let sig = sign_presence(&card, &c, &vera_fp);
    let (s, v) = post_proof(&hugo, serial, &op, &c["challenge_id"], &sig, &hugo_fp).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (_, c) = hugo
        .api
        .authorize(serial, &json!({"operation": "rotate_management_key"}))
        .await;
    let op = c["operation_id"].as_str().unwrap().to_string();
    let sig = sign_presence(&card, &c, &vera_fp);
    let (s, v) = post_proof(&hugo, serial, &op, &c["challenge_id"], &sig, &vera_fp).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("another agent key"),
        "{v}"
    );

    // 5. Someone else's challenge (the owner's), answered from his session.
    let (_, c) = vera
        .api
        .authorize(serial, &json!({"operation": "set_puk"}))
        .await;
    let op = c["operation_id"].as_str().unwrap().to_string();
    let sig = sign_presence(&card, &c, &hugo_fp);
    let (s, v) = post_proof(&hugo, serial, &op, &c["challenge_id"], &sig, &hugo_fp).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("another session"),
        "{v}"
    );

    // Nothing was released or changed: the device row, the escrow, the operations.
    assert_eq!(snapshot(&f, serial).await, before);
    let refused = f.audit_details("presence.refused").await;
    assert_eq!(refused.len(), 7, "{refused:?}");
    assert!(
        refused.iter().all(|d| d["reason"].is_string()),
        "{refused:?}"
    );

    // Least privilege: the current PIN of someone else's key goes to nobody;
    // helpdesk sets a new one with the PUK.
    let (s, v) = hugo
        .api
        .authorize(serial, &json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("unblock_pin"),
        "{v}"
    );
    // With the card at his agent (played by the harness), the unblock gets
    // the PUK and a new PIN, never the current PIN.
    let (s, op) = hugo
        .authorize(serial, json!({"operation": "unblock_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let params = op["request"]["params"].as_object().unwrap();
    assert!(params.contains_key("puk") && params.contains_key("new_pin"));
    assert!(!params.contains_key("current_pin"), "{op}");
    assert_eq!(f.audit_details("presence.verified").await.len(), 2);
}

#[tokio::test]
async fn a_plain_user_cannot_establish_a_presence_key_without_a_genuine_attested_card_nor_prove_one_without_the_card(
) {
    let f = TestApp::builder()
        .own_openbao()
        .attestation_root()
        .start()
        .await;
    let mallory = f.person("mallory", "user", "Mallory Insider").await;
    let fp = mallory.fingerprint();

    // Her own factory key: the challenge asks the card to make its key.
    let serial = random_serial();
    mallory.register_ok(serial).await;
    let before = snapshot(&f, serial).await;
    let (s, c) = mallory
        .api
        .authorize(serial, &json!({"operation": "generate_csr", "slot": "9a"}))
        .await;
    assert!(is_presence_challenge(s, &c), "{s} {c}");
    assert_eq!(c["establish"], true);
    holds_no_secret(&c);

    // A software key "attested" under a root of her own, for her serial,
    // PIN and touch policy never, with a valid signature: refused.
    let soft = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let foreign = AttestationRoot::generate(std::time::SystemTime::now(), &mut OsRng).unwrap();
    let establish = |c: &Value, root: &AttestationRoot, pin: u8| {
        let b64 = base64::engine::general_purpose::STANDARD;
        let params = &c["request"]["params"];
        let nonce = b64.decode(params["nonce"].as_str().unwrap()).unwrap();
        let op: uuid::Uuid = params["operation_id"].as_str().unwrap().parse().unwrap();
        let sig = soft
            .private_operation(&presence_digest(&nonce, &op, &fp), &mut OsRng)
            .unwrap();
        let pem =
            kleidia_virtual_yubikey::attest::pem("PUBLIC KEY", &soft.spki_der().unwrap()).unwrap();
        json!({"challenge_id": c["challenge_id"],
               "proof": {"signature": b64.encode(sig), "agent_key_fingerprint": fp,
                         "public_key_pem": pem,
                         "attestation_chain_pem": attestation_chain_in_slot(root, serial, 0x95, &soft, pin, NEVER),
                         "ticket_id": c["challenge_id"]}})
    };
    let path = |c: &Value| {
        format!(
            "/api/yubikey/{serial}/operations/{}/presence",
            c["operation_id"].as_str().unwrap()
        )
    };
    let (s, v) = mallory
        .api
        .post_json(&path(&c), &establish(&c, &foreign, NEVER))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("attestation"),
        "{v}"
    );

    // A genuine-looking attestation, but of a key with a PIN policy: refused.
    let (_, c) = mallory
        .api
        .authorize(serial, &json!({"operation": "generate_csr", "slot": "9a"}))
        .await;
    let (s, v) = mallory
        .api
        .post_json(&path(&c), &establish(&c, f.attestation_root(), 2))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("never"), "{v}");
    // Nothing recorded, nothing escrowed, no operation.
    assert_eq!(snapshot(&f, serial).await, before);

    // The card's own attested key (here made under the trusted test root,
    // as the software YubiKey does) is recorded, and the secrets follow.
    let (_, c) = mallory
        .api
        .authorize(serial, &json!({"operation": "generate_csr", "slot": "9a"}))
        .await;
    let (s, v) = mallory
        .api
        .post_json(&path(&c), &establish(&c, f.attestation_root(), NEVER))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["agent_path"], "/piv/generate-csr");
    assert_eq!(
        snapshot(&f, serial).await.3.unwrap(),
        soft.spki_der().unwrap()
    );

    // From now on only that key proves presence: her own key is refused,
    // and a new establishment is not offered.
    let (_, c) = mallory
        .api
        .authorize(serial, &json!({"operation": "set_puk"}))
        .await;
    assert_eq!(c["establish"], false, "{c}");
    let own = SigningKey::random(&mut OsRng);
    let sig = sign_presence(&own, &c, &fp);
    let op = c["operation_id"].as_str().unwrap().to_string();
    let (s, v) = post_proof(&mallory, serial, &op, &c["challenge_id"], &sig, &fp).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(f.audit_details("presence.refused").await.len(), 3);
    assert_eq!(f.audit_details("presence.verified").await.len(), 1);
}
