//! Issue 14 §6, as an insider tries it. A plain user cannot register a
//! serial to themselves without showing the card (its attestation, through
//! a presence challenge), the serial registered is the one the card's
//! attestation names whatever the body says, and a plain user's answers for
//! someone else's device are exactly those for a serial nobody has: no
//! route tells them which serials exist. Refusals change nothing and are
//! audited.

use base64::Engine as _;
use kleidia_protocol::agent::presence_digest;
use kleidia_tests::pki::{attestation_chain_in_slot, random_serial};
use kleidia_tests::{Person, TestApp};
use kleidia_virtual_yubikey::keys::{alg, PrivateKey};
use rand::rngs::OsRng;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// YubiKey encoding of the PIN and touch policy "never".
const NEVER: u8 = 1;

/// What the software card `serial` answers to a registration challenge `c`
/// for `p`'s agent: a fresh presence key in slot 95, attested under the
/// installation's root, signing the nonce.
fn card_answer(f: &TestApp, p: &Person, serial: u32, c: &Value) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let fp = p.fingerprint();
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let params = &c["request"]["params"];
    let nonce = b64.decode(params["nonce"].as_str().unwrap()).unwrap();
    let op: uuid::Uuid = params["operation_id"].as_str().unwrap().parse().unwrap();
    let sig = key
        .private_operation(&presence_digest(&nonce, &op, &fp), &mut OsRng)
        .unwrap();
    let pem = kleidia_virtual_yubikey::attest::pem("PUBLIC KEY", &key.spki_der().unwrap()).unwrap();
    json!({"signature": b64.encode(sig), "agent_key_fingerprint": fp,
           "public_key_pem": pem,
           "attestation_chain_pem": attestation_chain_in_slot(f.attestation_root(), serial, 0x95, &key, NEVER, NEVER),
           "ticket_id": c["challenge_id"]})
}

async fn claim(p: &Person, serial: u32) -> Value {
    let (s, c) = p
        .api
        .post_json("/api/devices/claim", &json!({"serial": serial}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["agent_path"], "/piv/prove-presence");
    assert_eq!(c["request"]["params"]["establish"], true);
    c
}

async fn devices_with(f: &TestApp, serials: &[u32]) -> i64 {
    let list: Vec<String> = serials.iter().map(u32::to_string).collect();
    f.db.count(&format!("devices WHERE serial IN ({})", list.join(",")))
        .await
}

#[tokio::test]
async fn a_user_cannot_register_a_serial_without_showing_the_card() {
    let f = TestApp::builder().attestation_root().start().await;
    let mallory = f.person("mallory", "user", "Mallory Insider").await;
    let alice = f.person("alice", "user", "Alice").await;
    let victim = random_serial();

    // The plain request of before, for herself and for Alice.
    let (s, v) = mallory.api.register_device(victim, "5.7.1").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("needs the card"),
        "{v}"
    );
    let (s, v) = mallory
        .api
        .register_device_for(victim, "5.7.1", &alice.user_id)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // A challenge for the victim's serial answered by a card she holds
    // (another serial): the attestation names her card, not the victim's.
    let own = random_serial();
    let c = claim(&mallory, victim).await;
    let body = json!({"serial": victim, "challenge_id": c["challenge_id"],
                      "proof": card_answer(&f, &mallory, own, &c)});
    let (s, v) = mallory.api.post_json("/api/devices", &body).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // A made-up proof without any attestation.
    let c = claim(&mallory, victim).await;
    let mut proof = card_answer(&f, &mallory, victim, &c);
    proof["attestation_chain_pem"] = Value::Null;
    proof["public_key_pem"] = Value::Null;
    let body = json!({"serial": victim, "challenge_id": c["challenge_id"], "proof": proof});
    let (s, v) = mallory.api.post_json("/api/devices", &body).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    assert_eq!(
        devices_with(&f, &[victim, own]).await,
        0,
        "a device was registered"
    );
    let refused = f.audit_details("device.register_refused").await;
    assert_eq!(refused.len(), 4, "{refused:?}");
    for d in &refused {
        assert_eq!(d["serial"], victim, "{d}");
    }
    assert_eq!(
        f.db.count("audit_log WHERE action = 'device.register'")
            .await,
        0
    );

    // An admin may still pre-register it for Alice: an audited act of theirs.
    alice.register_ok(victim).await;
    let reg = f.audit_details("device.register").await;
    assert_eq!(reg.len(), 1);
    assert_eq!(reg[0]["owner"], "alice");
    assert_eq!(reg[0]["attested"], false);
}

#[tokio::test]
async fn the_serial_registered_is_the_one_the_cards_attestation_names() {
    let f = TestApp::builder().attestation_root().start().await;
    let mallory = f.person("mallory", "user", "Mallory Insider").await;
    let (a, b) = (random_serial(), random_serial());

    // Card A shown genuinely, the body naming B: refused, nothing registered.
    let c = claim(&mallory, a).await;
    let body = json!({"serial": b, "challenge_id": c["challenge_id"],
                      "proof": card_answer(&f, &mallory, a, &c)});
    let (s, v) = mallory.api.post_json("/api/devices", &body).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains(&a.to_string()),
        "{v}"
    );
    assert_eq!(devices_with(&f, &[a, b]).await, 0);
    // The challenge was used up by that attempt.
    let (s, v) = mallory
        .api
        .post_json(
            "/api/devices",
            &json!({"challenge_id": c["challenge_id"],
                                            "proof": card_answer(&f, &mallory, a, &c)}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Without a serial in the body, card A registers as A, to her, with the
    // card's presence key recorded.
    let c = claim(&mallory, a).await;
    let proof = card_answer(&f, &mallory, a, &c);
    let (s, v) = mallory
        .api
        .post_json(
            "/api/devices",
            &json!({"challenge_id": c["challenge_id"], "proof": proof}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["serial"], a);
    assert_eq!(devices_with(&f, &[b]).await, 0);
    let (state, _, owner) = f.device_row(a).await;
    assert_eq!(
        (state.as_str(), owner.as_deref()),
        ("registered", Some(mallory.user_id.as_str()))
    );
    let pool = f.db.pool().await.unwrap();
    let key: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT presence_public_key FROM devices WHERE serial = $1")
            .bind(i64::from(a))
            .fetch_one(&pool)
            .await
            .unwrap();
    let pem_b64: String = proof["public_key_pem"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert_eq!(
        key.unwrap(),
        base64::engine::general_purpose::STANDARD
            .decode(pem_b64)
            .unwrap()
    );
    let reg = f.audit_details("device.register").await;
    assert_eq!(reg.len(), 1);
    assert_eq!(reg[0]["attested"], true);
    assert_eq!(f.audit_details("device.register_refused").await.len(), 2);
}

/// `(status, body)` with the serial in it replaced by `S`.
fn masked((s, v): (StatusCode, Value), serial: u32) -> (StatusCode, String) {
    (s, v.to_string().replace(&serial.to_string(), "S"))
}

#[tokio::test]
async fn a_plain_users_answers_for_someone_elses_serial_are_those_for_a_serial_nobody_has() {
    let f = TestApp::spawn().await;
    let alice = f.person("alice", "user", "Alice").await;
    let mallory = f.person("mallory", "user", "Mallory Insider").await;
    let taken = random_serial();
    alice.register_ok(taken).await;
    let (s, op) = alice
        .authorize(taken, json!({"operation": "set_pin", "new_pin": "602917"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let op = op["operation_id"].as_str().unwrap().to_string();
    let free = random_serial();
    let before = f.device_row(taken).await;
    let audited_before = f.db.count("audit_log").await;

    let probes: Vec<(&str, String, Value)> = vec![
        ("GET", "/api/devices/{s}".into(), Value::Null),
        (
            "POST",
            "/api/devices/{s}/state".into(),
            json!({"state": "lost", "reason": "probe"}),
        ),
        (
            "POST",
            "/api/yubikey/{s}/operations".into(),
            json!({"operation": "set_pin"}),
        ),
        (
            "POST",
            "/api/yubikey/{s}/operations".into(),
            json!({"operation": "attest", "slot": "9a"}),
        ),
        (
            "POST",
            "/api/yubikey/{s}/secrets".into(),
            json!({"operation_id": op}),
        ),
        (
            "POST",
            format!("/api/yubikey/{{s}}/operations/{op}/result"),
            json!({"success": true}),
        ),
        (
            "POST",
            format!("/api/yubikey/{{s}}/operations/{op}/presence"),
            json!({"challenge_id": op, "proof": {"signature": "AA==", "agent_key_fingerprint": mallory.fingerprint(), "ticket_id": op}}),
        ),
        (
            "POST",
            "/api/yubikey/{s}/sign-csr".into(),
            json!({"operation_id": op, "csr_pem": "x", "attestation_chain_pem": ["x", "y"]}),
        ),
        ("GET", "/devices/{s}".into(), Value::Null),
    ];
    let b = f.browser();
    assert_eq!(
        b.login("mallory", "mallory-long-password-1-2")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let mut refused_lookups = 0;
    for (method, path, body) in &probes {
        let ask = |serial: u32| {
            let path = path.replace("{s}", &serial.to_string());
            let body = body.clone();
            let (api, b) = (&mallory.api, &b);
            async move {
                match (*method, path.starts_with("/api/")) {
                    ("GET", true) => api.get(&path).await,
                    ("GET", false) => {
                        let (s, _, html) = b.get_text(&path).await;
                        (s, Value::String(html))
                    }
                    _ => api.post_json(&path, &body).await,
                }
            }
        };
        let other = masked(ask(taken).await, taken);
        let none = masked(ask(free).await, free);
        assert_eq!(other, none, "{method} {path}");
        assert!(other.0.is_client_error(), "{method} {path}: {other:?}");
        if other.0 == StatusCode::NOT_FOUND {
            refused_lookups += 1;
        }
    }
    // Alice's device and her pending change are untouched.
    assert_eq!(f.device_row(taken).await, before);
    let pool = f.db.pool().await.unwrap();
    let state: String = sqlx::query_scalar("SELECT state FROM operations WHERE id = $1::uuid")
        .bind(&op)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "pending");
    // Each look at Alice's device was audited (written off the request's
    // path: wait for the rows), and nothing else was written.
    let mut seen = 0;
    for _ in 0..50 {
        seen =
            f.db.count(&format!(
                "audit_log WHERE action = 'device.access_refused' AND target_id = '{taken}'"
            ))
            .await;
        if seen >= refused_lookups {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen >= 1, "no refusal audited");
    let others =
        f.db.count(&format!(
            "audit_log WHERE id > {audited_before} \
             AND action NOT IN ('device.access_refused', 'presence.refused') \
             AND action NOT LIKE 'login.%' AND action NOT LIKE 'session.%'"
        ))
        .await;
    assert_eq!(others, 0, "the probes wrote something else");
}
