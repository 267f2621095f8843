//! Certificates for attested keys: Kleidia signs a CSR only with an
//! attestation from a trusted root for that device and key, puts its own
//! names in it, and lists revoked certificates in the CRL.

use std::time::SystemTime;

use kleidia_tests::pki::{attestation_chain, csr_asking_for_foreign_names, random_serial};
use kleidia_tests::{openssl, TestApp};
use kleidia_virtual_yubikey::attest::AttestationRoot;
use kleidia_virtual_yubikey::keys::{alg, PrivateKey};
use rand::rngs::OsRng;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn an_attested_csr_is_signed_with_names_from_kleidia_and_a_revoked_certificate_is_in_the_crl()
{
    let f = TestApp::builder()
        .own_openbao()
        .attestation_root()
        .start()
        .await;
    let carol = f.person("carol", "user", "Carol Example").await;
    let serial = random_serial();
    carol.register_ok(serial).await;

    let (s, op) = carol
        .authorize(serial, json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256", "pin_policy": "once", "touch_policy": "never"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let params = &op["request"]["params"];
    assert_eq!(params["subject"], "CN=Carol Example");
    assert_eq!(carol.decrypt(&params["pin"]), "123456");
    assert_eq!(
        carol.decrypt(&params["management_key"]),
        "010203040506070801020304050607080102030405060708"
    );
    let op_id = op["operation_id"].as_str().unwrap();

    // The "card": a P-256 key, its attestation, and a CSR that asks for evil names.
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let csr = csr_asking_for_foreign_names(&key, dir.path());
    let chain = f.attestation(serial, &key, 2, 1);
    let (s, cert) = carol
        .api
        .sign_csr(
            serial,
            &json!({"operation_id": op_id, "csr_pem": csr, "attestation_chain_pem": chain}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{cert}");
    std::fs::write(
        dir.path().join("cert.pem"),
        cert["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("chain.pem"), f.fetch("/pki/ca_chain").await).unwrap();
    std::fs::write(dir.path().join("root.der"), f.fetch("/pki/root/ca").await).unwrap();
    openssl(
        dir.path(),
        &[
            "x509", "-inform", "DER", "-in", "root.der", "-out", "root.pem",
        ],
    )
    .unwrap();
    let v = openssl(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "cert.pem",
        ],
    )
    .unwrap();
    assert!(v.contains("cert.pem: OK"), "{v}");
    let text = openssl(dir.path(), &["x509", "-in", "cert.pem", "-noout", "-text"]).unwrap();
    assert!(text.contains("Subject: CN = Carol Example\n"), "{text}");
    assert!(!text.contains("evil"), "{text}");
    assert!(text.contains("email:carol@corp.example"), "{text}");
    assert!(text.contains("UPN::carol@corp.example"), "{text}");
    assert!(text.contains("Microsoft Smartcard Login"), "{text}");

    // It is on the device page, and the key generation counts as succeeded.
    let (_, d) = carol.api.device(serial).await;
    assert_eq!(d["certificates"][0]["serial_number"], cert["serial_number"]);
    assert_eq!(d["certificates"][0]["slot"], "9a");
    assert_eq!(d["certificates"][0]["status"], "issued");
    assert_eq!(d["operations"][0]["state"], "succeeded");
    // The device page shows it to the staff too.
    let b = f.admin_browser().await;
    let (s, _, html) = b.get_text(&format!("/devices/{serial}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains(cert["serial_number"].as_str().unwrap()),
        "{html}"
    );
    assert!(html.contains("Carol Example"), "{html}");
    // One certificate per key generation.
    let (s, _) = carol
        .api
        .sign_csr(
            serial,
            &json!({"operation_id": op_id, "csr_pem": csr, "attestation_chain_pem": chain}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // The owner may not revoke; an admin may, and the CRL then lists it.
    let cid = cert["certificate_id"].as_str().unwrap();
    let (s, _) = carol.api.revoke_certificate(cid, "test").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let admin = f.admin_api().await;
    let (s, v) = admin.revoke_certificate(cid, "key compromise").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "revoked");
    let serial_hex = cert["serial_number"]
        .as_str()
        .unwrap()
        .replace(':', "")
        .to_uppercase();
    // The CRL is rebuilt in the background after a revocation
    // (docs/openbao.md, "Revocation"): it lists the certificate then.
    let (f, d, hex) = (&f, dir.path(), &serial_hex);
    let listed = kleidia_tests::wait_until(std::time::Duration::from_secs(60), || async move {
        std::fs::write(d.join("crl.der"), f.fetch("/pki/crl").await).unwrap();
        openssl(
            d,
            &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
        )
        .unwrap()
        .contains(hex)
    })
    .await;
    assert!(listed, "{serial_hex} is not on the CRL");
}

#[tokio::test]
async fn unattested_keys_and_attestations_for_another_device_or_root_are_refused() {
    let f = TestApp::builder()
        .own_openbao()
        .attestation_root()
        .start()
        .await;
    let dave = f.person("dave", "user", "Dave").await;
    let serial = random_serial();
    dave.register_ok(serial).await;
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let csr = csr_asking_for_foreign_names(&key, dir.path());
    let other_key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let foreign_root = AttestationRoot::generate(SystemTime::now(), &mut OsRng).unwrap();

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "another serial",
            f.attestation(serial + 1, &key, 2, 1),
            "not for this device",
        ),
        (
            "another key",
            f.attestation(serial, &other_key, 2, 1),
            "not the key in the CSR",
        ),
        (
            "an untrusted root",
            attestation_chain(&foreign_root, serial, &key, 2, 1),
            "trusted attestation root",
        ),
        (
            "no device certificate",
            f.attestation(serial, &key, 2, 1)[..1].to_vec(),
            "device (f9)",
        ),
        (
            "another PIN policy",
            f.attestation(serial, &key, 1, 1),
            "PIN/touch policy",
        ),
    ];
    for (what, chain, expect) in cases {
        let (_, op) = dave
            .authorize(serial, json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256", "pin_policy": "once", "touch_policy": "never"}))
            .await;
        let (s, v) = dave
            .api
            .sign_csr(serial, &json!({"operation_id": op["operation_id"], "csr_pem": csr, "attestation_chain_pem": chain}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(expect),
            "{what}: {v}"
        );
    }
    // A CSR for another algorithm than the one generated.
    let (_, op) = dave
        .authorize(serial, json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p384", "pin_policy": "once", "touch_policy": "never"}))
        .await;
    let (s, v) = dave
        .api
        .sign_csr(serial, &json!({"operation_id": op["operation_id"], "csr_pem": csr, "attestation_chain_pem": f.attestation(serial, &key, 2, 1)}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Nothing was issued, and every refusal is audited.
    assert_eq!(f.db.count("certificates").await, 0);
    let refused =
        f.db.count("audit_log WHERE action = 'certificate.refused'")
            .await;
    assert_eq!(refused, 6);
}

/// Issue 14 §5: an email address is one name in the certificate, never more.
/// Addresses that could smuggle a second SAN or UPN are refused at the door,
/// and one stored before that check (set here behind Kleidia's back) stops
/// the signing instead of adding a name.
#[tokio::test]
async fn an_email_with_a_comma_never_adds_a_name_to_a_certificate() {
    let f = TestApp::builder()
        .own_openbao()
        .attestation_root()
        .start()
        .await;
    let admin = f.admin_api().await;
    // At the door: creating or editing a user with such an address.
    for bad in [
        "mallory@corp.example,ceo@corp.example",
        "mallory@corp.example;ceo@corp.example",
        "1.3.6.1.4.1.311.20.2.3;UTF8:ceo@corp.example",
    ] {
        let (s, v) = admin
            .create_user(
                &json!({"username": "mallory", "role": "user", "display_name": "Mallory",
                                 "email": bad, "password": "mallory-long-password-1"}),
            )
            .await;
        assert!(s.is_client_error(), "{bad}: {s} {v}");
    }
    let (s, users) = admin.get("/api/users").await;
    assert_eq!(s, StatusCode::OK, "{users}");
    assert!(!users.to_string().contains("mallory"), "{users}");

    let carol = f.person("carol", "user", "Carol Example").await;
    let (s, v) = admin
        .update_user(
            &carol.user_id,
            &json!({"email": "carol@corp.example,ceo@corp.example"}),
        )
        .await;
    assert!(s.is_client_error(), "{s} {v}");

    // A key generated and attested as usual.
    let serial = random_serial();
    carol.register_ok(serial).await;
    let (s, op) = carol
        .authorize(serial, json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256", "pin_policy": "once", "touch_policy": "never"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let op_id = op["operation_id"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let csr = csr_asking_for_foreign_names(&key, dir.path());
    let chain = f.attestation(serial, &key, 2, 1);
    let body = json!({"operation_id": op_id, "csr_pem": csr, "attestation_chain_pem": chain});

    // An address stored before the check: the database says two names.
    let pool = f.db.pool().await.unwrap();
    sqlx::query("UPDATE users SET email = $1 WHERE username = 'carol'")
        .bind("carol@corp.example,ceo@corp.example")
        .execute(&pool)
        .await
        .unwrap();
    let issued_before = f.issued_in_openbao().await;
    let (s, v) = carol.api.sign_csr(serial, &body).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("cannot go into a certificate"),
        "{v}"
    );
    assert_eq!(f.issued_in_openbao().await, issued_before, "nothing signed");
    let device = f.device(serial).await;
    assert_eq!(
        device["certificates"].as_array().unwrap().len(),
        0,
        "{device}"
    );

    // Corrected, the same key gets a certificate with exactly one address.
    sqlx::query("UPDATE users SET email = 'carol@corp.example' WHERE username = 'carol'")
        .execute(&pool)
        .await
        .unwrap();
    let (s, cert) = carol.api.sign_csr(serial, &body).await;
    assert_eq!(s, StatusCode::CREATED, "{cert}");
    std::fs::write(
        dir.path().join("cert.pem"),
        cert["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    let text = openssl(
        dir.path(),
        &[
            "x509",
            "-in",
            "cert.pem",
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    )
    .unwrap();
    assert!(text.contains("email:carol@corp.example"), "{text}");
    assert!(!text.contains("ceo@"), "{text}");
    assert_eq!(text.matches("email:").count(), 1, "{text}");
    assert_eq!(text.matches("othername:").count(), 1, "{text}");
}
