//! Operations on a YubiKey against the real `kleidia serve`, PostgreSQL and
//! a bootstrapped OpenBao: secrets escrowed before they are applied, one
//! unconfirmed change at a time, the policy, and the agent key of a
//! session. The agent is played by the test with a software RSA key
//! ([`kleidia_tests::Person`]): it decrypts what the server encrypted to it
//! and checks the ticket exactly as the real agent would.

use kleidia_protocol::ticket::{agent_key_fingerprint, params_hash};
use kleidia_tests::pki::random_serial;
use kleidia_tests::TestApp;
use rand::rngs::OsRng;
use reqwest::StatusCode;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::json;

#[tokio::test]
async fn a_pin_change_escrows_first_and_the_new_version_becomes_current_only_after_the_agent_confirms(
) {
    let f = TestApp::builder().own_openbao().start().await;
    let alice = f.person("alice", "user", "Alice Example").await;
    let serial = random_serial();
    alice.register_ok(serial).await;
    assert_eq!(
        f.device_row(serial).await.1,
        None,
        "a new key has factory credentials"
    );

    let (s, op) = alice
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["agent_path"], "/piv/set-pin");
    let params = &op["request"]["params"];
    // The agent decrypts the factory PIN and the new one.
    assert_eq!(alice.decrypt(&params["current_pin"]), "123456");
    let new_pin = alice.decrypt(&params["new_pin"]);
    assert!(
        (6..=8).contains(&new_pin.len()) && new_pin.bytes().all(|b| b.is_ascii_digit()),
        "{new_pin}"
    );

    // The ticket verifies with the published key and binds these parameters,
    // this serial and this agent key.
    let claims = f
        .ticket_verifying_key()
        .await
        .verify(op["request"]["ticket"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.serial, serial);
    assert_eq!(claims.params_hash, params_hash(params).unwrap());
    assert_eq!(claims.id.to_string(), op["operation_id"].as_str().unwrap());
    let fp = agent_key_fingerprint(&alice.agent_key.to_public_key()).unwrap();
    assert_eq!(claims.agent_key_fingerprint, fp);
    assert!(claims.expires_at - claims.issued_at <= 120);

    // The new PIN is durable in OpenBao before anything was applied, but the
    // device's confirmed version has not moved.
    assert_eq!(f.escrow_version(serial).await, 1);
    assert_eq!(f.escrow(serial, 1).await["pin"], new_pin);
    assert_eq!(f.device_row(serial).await.1, None);

    // The page reports the agent's success: now version 1 is what the key holds.
    let id = op["operation_id"].as_str().unwrap();
    let (s, v) = alice.report(serial, id, true).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "succeeded");
    assert_eq!(f.device_row(serial).await.1, Some(1));

    // The device page shows the version history without values.
    let (s, d) = alice.api.device(serial).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["secret_versions"][0]["version"], 1);
    assert_eq!(d["secret_versions"][0]["current"], true);
    assert_eq!(d["secret_versions"][0]["by"], "alice");
    let text = d.to_string();
    assert!(
        !text.contains(&new_pin),
        "the PIN leaked into the device API"
    );

    // The PIN is nowhere in PostgreSQL, nor in the server's log.
    let pool = f.db.pool().await.unwrap();
    for table in [
        "devices",
        "operations",
        "audit_log",
        "user_sessions",
        "settings",
        "certificates",
    ] {
        let dump: Option<String> =
            sqlx::query_scalar(&format!("SELECT string_agg(t::text, '\n') FROM {table} t"))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(
            !dump.unwrap_or_default().contains(&new_pin),
            "the PIN is stored in {table}"
        );
    }
    assert!(!f.log().contains(&new_pin), "the PIN is in the server log");

    // The audit log has the presence step (the card's key recorded, then a
    // fresh challenge and its proof), the authorisation, the ticket and the
    // result.
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE target_id = $1 ORDER BY id")
            .bind(serial.to_string())
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        actions,
        [
            "device.register",
            "presence.challenge",
            "presence.challenge",
            "presence.verified",
            "operation.authorize",
            "ticket.issue",
            "operation.succeeded"
        ]
    );
}

#[tokio::test]
async fn an_unconfirmed_change_blocks_the_next_and_a_failure_keeps_both_versions() {
    let f = TestApp::builder().own_openbao().start().await;
    let bob = f.person("bob", "user", "Bob").await;
    let serial = random_serial();
    bob.register_ok(serial).await;
    let (_, op1) = bob.authorize(serial, json!({"operation": "set_puk"})).await;
    let id1 = op1["operation_id"].as_str().unwrap().to_string();
    assert_eq!(bob.report(serial, &id1, true).await.0, StatusCode::OK);
    let puk1 = bob.decrypt(&op1["request"]["params"]["new_puk"]);

    // A PIN change is authorised but never confirmed (page closed mid-way).
    let (s, op2) = bob
        .authorize(serial, json!({"operation": "set_pin", "new_pin": "602917"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op2}");
    let id2 = op2["operation_id"].as_str().unwrap().to_string();
    // A second secret change must wait: the server cannot know which PIN the key holds.
    let (s, v) = bob.authorize(serial, json!({"operation": "set_puk"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains(&id2), "{v}");

    // The device page says so and offers to settle it.
    let b = f.admin_browser().await;
    let (_, _, html) = b.get_text(&format!("/devices/{serial}")).await;
    assert!(html.contains(r#"id="pending-change""#), "{html}");
    assert!(
        html.contains(&format!(r#"data-operation="{id2}""#)),
        "{html}"
    );

    // After a reload the page gets the same change again, under a new ticket.
    let (s, again) = bob.resume(serial, &id2).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(
        bob.decrypt(&again["request"]["params"]["new_pin"]),
        "602917"
    );
    assert_ne!(again["request"]["ticket"], op2["request"]["ticket"]);

    // The agent reports a failure: the device keeps version 1, both versions stay readable.
    let (s, v) = bob.report(serial, &id2, false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "failed");
    assert_eq!(v["error"], "wrong_pin");
    assert_eq!(f.device_row(serial).await.1, Some(1));
    assert_eq!(f.escrow(serial, 1).await["puk"], puk1);
    assert_eq!(f.escrow(serial, 2).await["pin"], "602917");
    assert_eq!(
        f.escrow(serial, 2).await["puk"],
        puk1,
        "a PIN change carries the confirmed PUK"
    );
    // Reporting again is refused; the next change is allowed.
    assert_eq!(bob.report(serial, &id2, true).await.0, StatusCode::CONFLICT);
    let (s, v) = bob
        .authorize(serial, json!({"operation": "rotate_management_key"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // The failed attempt (2) sits above the confirmed version, so the
    // confirmed values are re-escrowed first (3, now confirmed), then the
    // new attempt is written (4).
    assert_eq!(f.device_row(serial).await.1, Some(3));
    assert_eq!(f.escrow(serial, 3).await["puk"], puk1);
    assert_eq!(f.escrow_version(serial).await, 4);
}

#[tokio::test]
async fn operations_outside_policy_are_refused_with_the_rule_they_break() {
    let f = TestApp::builder().own_openbao().start().await;
    let gina = f.person("gina", "user", "Gina").await;
    let serial = random_serial();
    gina.register_ok(serial).await;
    let (s, v) = gina
        .authorize(serial, json!({"operation": "set_pin", "new_pin": "123456"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("policy"), "{v}");
    let (s, v) = gina
        .authorize(serial, json!({"operation": "generate_csr", "slot": "9c", "algorithm": "ecc_p256", "pin_policy": "once", "touch_policy": "never"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("slot 9c"), "{v}");
    let (s, v) = gina
        .authorize(serial, json!({"operation": "generate_csr", "slot": "9a", "algorithm": "rsa4096", "pin_policy": "once", "touch_policy": "never"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Unknown fields are refused, and nothing was written for any of these.
    let (s, _) = gina
        .authorize(serial, json!({"operation": "set_pin", "pin": "602917"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(f.escrow_version(serial).await, 0);
    assert_eq!(f.db.count("operations").await, 0);

    // An admin tightens the policy: owners may then unblock, 9c gets "once".
    let admin = f.admin_api().await;
    let (_, mut p) = admin.policy().await;
    p["owners_may_unblock_pin"] = json!(true);
    p["slots"]["9c"]["pin_policies"] = json!(["once", "always"]);
    let (s, v) = admin.set_policy(&p).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = gina
        .authorize(serial, json!({"operation": "unblock_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // An invalid policy is refused and changes nothing.
    p["pin_min_length"] = json!(4);
    let (s, v) = admin.set_policy(&p).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (_, now) = admin.policy().await;
    assert_eq!(now["pin_min_length"], 6);
    let (s, _) = gina.api.set_policy(&p).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn agent_keys_are_checked_and_bound_to_the_callers_own_session() {
    let f = TestApp::builder().own_openbao().start().await;
    let hank = f.person("hank", "user", "Hank").await;
    let ivy = f.person("ivy", "user", "Ivy").await;
    let small = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let small_pem = small
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let sid = hank.session_id();
    let (s, v) = hank.api.register_agent(&sid, &small_pem).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = hank
        .api
        .register_agent(
            &sid,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Ivy cannot put her key on Hank's session.
    let (s, _) = ivy.api.register_agent(&sid, &ivy.agent_key_pem()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Hank's session still has his own key: his secrets decrypt with it.
    let serial = random_serial();
    hank.register_ok(serial).await;
    let (_, op) = hank
        .authorize(serial, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(
        hank.decrypt(&op["request"]["params"]["current_pin"]),
        "123456"
    );
    // After logout the key is gone with the session.
    let (s, _) = hank.api.logout().await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let left =
        f.db.count(&format!("user_sessions WHERE id = '{sid}'::uuid"))
            .await;
    assert_eq!(left, 0);
}
