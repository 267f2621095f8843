//! Issue 14 §10: offboarding. Disabling a user applies the `offboarding`
//! policy from `/settings` to their YubiKeys, shown on the user page before
//! the admin confirms: `suspend_and_revoke` suspends the device and puts its
//! certificate on the CRL served at `/pki/crl`; `suspend_and_hold` suspends
//! it and leaves the certificate valid (OpenBao has no certificateHold), and
//! a device marked `returned` has its certificates revoked whatever the
//! policy. Each step is audited.

use kleidia_tests::pki::random_serial;
use kleidia_tests::{Person, TestApp};
use kleidia_virtual_yubikey::attest::pem;
use kleidia_virtual_yubikey::keys::{alg, PrivateKey};
use rand::rngs::OsRng;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn start() -> TestApp {
    TestApp::builder()
        .own_openbao()
        .attestation_root()
        .start()
        .await
}

/// A user whose YubiKey has a certificate in slot 9a (signed through
/// `sign-csr` with the key's attestation): the owner, the device serial and
/// the certificate's serial number (colon-separated hex, as Kleidia shows it).
async fn device_with_certificate(f: &TestApp, username: &str) -> (Person, u32, String) {
    let p = f.person(username, "user", "Leaving Person").await;
    let serial = random_serial();
    p.register_ok(serial).await;
    let (s, op) = p
        .authorize(
            serial,
            json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256",
                   "pin_policy": "once", "touch_policy": "never"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let keyfile = format!("{username}.key");
    std::fs::write(
        f.dir().join(&keyfile),
        pem("PRIVATE KEY", &key.to_pkcs8().unwrap()).unwrap(),
    )
    .unwrap();
    let csrfile = format!("{username}.csr");
    kleidia_tests::openssl(
        f.dir(),
        &[
            "req", "-new", "-key", &keyfile, "-out", &csrfile, "-subj", "/CN=card",
        ],
    )
    .unwrap();
    let csr = std::fs::read_to_string(f.dir().join(&csrfile)).unwrap();
    let (s, cert) = p
        .api
        .sign_csr(
            serial,
            &json!({"operation_id": op["operation_id"], "csr_pem": csr,
                    "attestation_chain_pem": f.attestation(serial, &key, 2, 1)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{cert}");
    let number = cert["serial_number"].as_str().unwrap().to_string();
    // The agent imports it: the key is enrolled (active).
    let (s, imp) = p
        .authorize(
            serial,
            json!({"operation": "import_certificate", "certificate_id": cert["certificate_id"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{imp}");
    let (s, v) = p
        .report(serial, imp["operation_id"].as_str().unwrap(), true)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(f.device_row(serial).await.0, "active");
    (p, serial, number)
}

/// The serial numbers on the CRL served at `/pki/crl`, read with openssl,
/// as uppercase hex without colons or leading zeros.
async fn crl_serials(f: &TestApp) -> Vec<String> {
    let der = f.fetch("/pki/crl").await;
    std::fs::write(f.dir().join("crl.der"), der).unwrap();
    let text = kleidia_tests::openssl(
        f.dir(),
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
    )
    .unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(|s| normal(s.trim()))
        .collect()
}

/// Whether the CRL served lists `number` once the rebuild that follows a
/// revocation has run (it runs in the background: docs/openbao.md).
async fn crl_lists(f: &TestApp, number: &str) -> bool {
    kleidia_tests::wait_until(std::time::Duration::from_secs(60), || async move {
        crl_serials(f).await.contains(&normal(number))
    })
    .await
}

fn normal(hex: &str) -> String {
    let h: String = hex
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_uppercase();
    h.trim_start_matches('0').to_string()
}

async fn certificate_status(f: &TestApp, number: &str) -> String {
    let pool = f.db.pool().await.unwrap();
    sqlx::query_scalar("SELECT status FROM certificates WHERE serial_number = $1")
        .bind(number)
        .fetch_one(&pool)
        .await
        .unwrap()
}

async fn set_offboarding(f: &TestApp, value: &str) {
    let admin = f.admin_api().await;
    let (s, mut p) = admin.policy().await;
    assert_eq!(s, StatusCode::OK, "{p}");
    p["offboarding"] = json!(value);
    let (s, v) = admin.set_policy(&p).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

fn last(details: Vec<Value>) -> Value {
    details.last().cloned().expect("an audit row")
}

#[tokio::test]
async fn disabling_a_user_under_the_revoke_policy_suspends_their_key_and_puts_its_certificate_on_the_crl(
) {
    let f = start().await;
    let (leaver, serial, number) = device_with_certificate(&f, "leaver").await;
    assert!(!crl_serials(&f).await.contains(&normal(&number)));

    // The user page says what disabling will do before the admin confirms.
    let admin = f.admin_browser().await;
    let (s, _, html) = admin.get_text(&format!("/users/{}", leaver.user_id)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains(r#"id="offboarding-plan""#), "{html}");
    assert!(html.contains("suspend_and_revoke"), "{html}");
    assert!(
        html.contains(&format!("revoke certificate {number}")),
        "{html}"
    );
    assert!(html.contains(&serial.to_string()), "{html}");

    let (s, v) = f.admin_api().await.disable_user(&leaver.user_id).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    assert_eq!(leaver.api.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(f.device_row(serial).await.0, "suspended");
    assert_eq!(certificate_status(&f, &number).await, "revoked");
    assert!(crl_lists(&f, &number).await, "{number} is not on the CRL");
    let d = last(f.audit_details("user.offboard").await);
    assert_eq!(d["policy"], "suspend_and_revoke");
    assert_eq!(d["devices_suspended"], json!([serial]));
    assert_eq!(d["certificates_revoked"], json!([number]));
    let suspended = last(f.audit_details("device.suspended").await);
    assert!(
        suspended["reason"].as_str().unwrap().contains("leaver"),
        "{suspended}"
    );
}

#[tokio::test]
async fn under_the_hold_policy_the_key_is_suspended_and_the_certificate_held_and_returned_always_revokes(
) {
    let f = start().await;
    set_offboarding(&f, "suspend_and_hold").await;
    let (held, serial, number) = device_with_certificate(&f, "held").await;
    let admin = f.admin_browser().await;
    let (_, _, html) = admin.get_text(&format!("/users/{}", held.user_id)).await;
    assert!(
        html.contains(&format!("hold certificate {number}")),
        "{html}"
    );

    let (s, v) = f.admin_api().await.disable_user(&held.user_id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(f.device_row(serial).await.0, "suspended");
    // Held: still valid in the CA (OpenBao has no certificateHold), listed
    // as held in the audit log.
    assert_eq!(certificate_status(&f, &number).await, "issued");
    assert!(!crl_serials(&f).await.contains(&normal(&number)));
    let d = last(f.audit_details("user.offboard").await);
    assert_eq!(d["policy"], "suspend_and_hold");
    assert_eq!(d["certificates_held"], json!([number]));
    assert_eq!(d["certificates_revoked"], json!([]));

    // The key comes back: returned revokes its certificate whatever the policy.
    let api = f.admin_api().await;
    let (s, v) = api
        .set_device_state(serial, "returned", "handed back at the desk")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(certificate_status(&f, &number).await, "revoked");
    assert!(crl_lists(&f, &number).await, "{number} is not on the CRL");
    let r = last(f.audit_details("device.returned").await);
    assert_eq!(r["certificates_revoked"], 1);
}

#[tokio::test]
async fn under_sessions_only_disabling_leaves_the_key_and_returned_still_revokes() {
    let f = start().await;
    set_offboarding(&f, "sessions_only").await;
    let (kept, serial, number) = device_with_certificate(&f, "kept").await;
    let state_before = f.device_row(serial).await.0;
    let (s, v) = f.admin_api().await.disable_user(&kept.user_id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(kept.api.me().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(f.device_row(serial).await.0, state_before);
    assert_eq!(certificate_status(&f, &number).await, "issued");
    let d = last(f.audit_details("user.offboard").await);
    assert_eq!(d["policy"], "sessions_only");
    assert_eq!(d["devices_suspended"], json!([]));

    let api = f.admin_api().await;
    let (s, v) = api
        .set_device_state(serial, "returned", "wiped and back in the pool")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(certificate_status(&f, &number).await, "revoked");
    assert!(crl_lists(&f, &number).await, "{number} is not on the CRL");
}
