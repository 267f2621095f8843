//! Certificates in another person's name (issue 12 §2): helpdesk registers
//! a spare key to an admin and asks for a certificate at their own desk. The
//! key generation waits for the owner (from their own session) or an admin
//! who is not the requester; nothing is signed before, an approval is good
//! for one key generation, and every request, refusal, decision and use is
//! in the audit log.

use kleidia_tests::pki::{csr_asking_for_foreign_names, random_serial};
use kleidia_tests::{Person, TestApp};
use kleidia_virtual_yubikey::keys::{alg, PrivateKey};
use rand::rngs::OsRng;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn key_generation(slot: &str) -> Value {
    json!({"operation": "generate_csr", "slot": slot, "algorithm": "ecc_p256",
           "pin_policy": if slot == "9c" { "always" } else { "once" }, "touch_policy": "never"})
}

/// Serial numbers of the certificates OpenBao's issuing CA has signed.
async fn issued_in_openbao(f: &TestApp) -> Vec<String> {
    let (s, v) = f
        .root_bao()
        .call("LIST", "pki_int/certs", None)
        .await
        .unwrap();
    if s == StatusCode::NOT_FOUND {
        return Vec::new();
    }
    v["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

async fn certificate_rows(f: &TestApp, serial: u32) -> i64 {
    f.db.count(&format!("certificates WHERE device_serial = {serial}"))
        .await
}

/// The approval request a 409 names, as `who` sees it in the list.
async fn approval(who: &Person, id: &str) -> Value {
    let (s, v) = who.api.certificate_approvals().await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("approval {id} not in {v}"))
}

/// The id of the approval request a refused key generation names.
fn named_approval(refusal: &Value) -> String {
    let msg = refusal["message"].as_str().unwrap();
    let rest = msg
        .split("Approval request ")
        .nth(1)
        .unwrap_or_else(|| panic!("no approval request named in {msg:?}"));
    rest[..36].to_string()
}

/// A P-256 "card" key with its CSR and attestation chain for `serial`.
fn card_key(f: &TestApp, serial: u32, dir: &std::path::Path) -> (String, Vec<String>) {
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let csr = csr_asking_for_foreign_names(&key, dir);
    (csr, f.attestation(serial, &key, 2, 1))
}

#[tokio::test]
async fn helpdesk_gets_a_certificate_in_an_admins_name_only_after_the_admin_approves_and_only_once()
{
    let f = TestApp::builder()
        .own_openbao()
        .attestation_root()
        .start()
        .await;
    let alice = f.person("alice", "admin", "Alice Admin").await;
    let hugo = f.person("hugo", "helpdesk", "Hugo Helpdesk").await;
    let serial = random_serial();
    let (s, v) = hugo
        .api
        .register_device_for(serial, "5.7.1", &alice.user_id)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let issued_before = issued_in_openbao(&f).await;

    // Hugo asks for a key and certificate at his desk: refused, nothing signed.
    let (s, refusal) = hugo.authorize(serial, key_generation("9a")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{refusal}");
    let msg = refusal["message"].as_str().unwrap();
    assert!(msg.contains("Alice Admin"), "{msg}");
    assert!(msg.contains("pending"), "{msg}");
    let request = named_approval(&refusal);
    assert_eq!(certificate_rows(&f, serial).await, 0);
    assert_eq!(
        f.db.count(&format!("operations WHERE device_serial = {serial}"))
            .await,
        0,
        "no key generation was authorised"
    );
    assert_eq!(issued_in_openbao(&f).await, issued_before);
    let refused = f.audit_details("certificate.refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["approval_id"], request.as_str());
    assert_eq!(refused[0]["reason"], "approval_pending");
    let requested = f.audit_details("certificate_approval.request").await;
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert_eq!(requested[0]["owner_id"], alice.user_id.as_str());

    // He sees his request, pending, and cannot approve it himself.
    let mine = approval(&hugo, &request).await;
    assert_eq!(mine["status"], "pending");
    assert_eq!(mine["may_decide"], false);
    assert_eq!(mine["slot"], "9a");
    let (s, v) = hugo.api.approve_certificate(&request).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(approval(&hugo, &request).await["status"], "pending");
    let self_approval = f.audit_details("certificate_approval.refused").await;
    assert_eq!(self_approval.len(), 1, "{self_approval:?}");
    // Asking again names the same request; still nothing signed.
    let (s, again) = hugo.authorize(serial, key_generation("9a")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{again}");
    assert_eq!(named_approval(&again), request);
    assert_eq!(f.audit_details("certificate.refused").await.len(), 2);

    // Alice approves from her own session.
    assert_eq!(approval(&alice, &request).await["may_decide"], true);
    let (s, v) = alice.api.approve_certificate(&request).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "approved");
    assert_eq!(v["decided_by_name"], "alice");
    let approved = f.audit_details("certificate_approval.approve").await;
    assert_eq!(approved[0]["as"], "owner");

    // Now Hugo gets the key generation, in Alice's name, and the certificate.
    let (s, op) = hugo.authorize(serial, key_generation("9a")).await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["request"]["params"]["subject"], "CN=Alice Admin");
    let used = f.audit_details("certificate_approval.use").await;
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["approval_id"], request.as_str());
    assert_eq!(used[0]["operation_id"], op["operation_id"]);
    let dir = tempfile::tempdir().unwrap();
    let (csr, chain) = card_key(&f, serial, dir.path());
    let (s, cert) = hugo
        .api
        .sign_csr(
            serial,
            &json!({"operation_id": op["operation_id"], "csr_pem": csr, "attestation_chain_pem": chain}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{cert}");
    assert_eq!(cert["subject"], "CN=Alice Admin");
    assert_eq!(certificate_rows(&f, serial).await, 1);
    assert_eq!(issued_in_openbao(&f).await.len(), issued_before.len() + 1);
    let issue = f.audit_details("certificate.issue").await;
    assert_eq!(issue[0]["approval_id"], request.as_str());
    let spent = approval(&alice, &request).await;
    assert_eq!(spent["status"], "used");
    assert_eq!(spent["operation_id"], op["operation_id"]);

    // Once: the next key generation is a new request, and approving the
    // used one again changes nothing.
    let (s, next) = hugo.authorize(serial, key_generation("9a")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{next}");
    assert_ne!(named_approval(&next), request);
    let (s, v) = alice.api.approve_certificate(&request).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(certificate_rows(&f, serial).await, 1);
}

#[tokio::test]
async fn a_key_generated_before_the_device_was_given_to_an_admin_gets_no_certificate_in_the_admins_name(
) {
    let f = TestApp::builder()
        .own_openbao()
        .attestation_root()
        .start()
        .await;
    let alice = f.person("alice", "admin", "Alice Admin").await;
    let hugo = f.person("hugo", "helpdesk", "Hugo Helpdesk").await;
    let serial = random_serial();
    // Hugo's own key: his key generation needs nobody's approval …
    hugo.register_ok(serial).await;
    let (s, op) = hugo.authorize(serial, key_generation("9a")).await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["request"]["params"]["subject"], "CN=Hugo Helpdesk");
    // … then he gives the key to Alice and asks for the certificate.
    let (s, v) = hugo.api.assign_owner(serial, Some(&alice.user_id)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let issued_before = issued_in_openbao(&f).await;
    let dir = tempfile::tempdir().unwrap();
    let (csr, chain) = card_key(&f, serial, dir.path());
    let (s, v) = hugo
        .api
        .sign_csr(
            serial,
            &json!({"operation_id": op["operation_id"], "csr_pem": csr, "attestation_chain_pem": chain}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("without an approval"),
        "{v}"
    );
    assert_eq!(certificate_rows(&f, serial).await, 0);
    assert_eq!(issued_in_openbao(&f).await, issued_before);
    let refused = f.audit_details("certificate.refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["operation_id"], op["operation_id"]);
}

#[tokio::test]
async fn a_second_admin_approves_or_rejects_an_admins_request_and_expired_approvals_are_refused() {
    let f = TestApp::builder().attestation_root().start().await;
    let uma = f
        .create_user("uma", "user", "Uma User", "uma-long-password-1")
        .await;
    let adam = f.person("adam", "admin", "Adam Admin").await;
    let bea = f.person("bea", "admin", "Bea Admin").await;
    let hank = f.person("hank", "helpdesk", "Hank Helpdesk").await;
    let serial = random_serial();
    let (s, v) = adam.api.register_device_for(serial, "5.7.1", &uma.id).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // An admin's own request: refused, and he cannot approve it himself.
    let (s, r) = adam.authorize(serial, key_generation("9a")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    let first = named_approval(&r);
    let (s, v) = adam.api.approve_certificate(&first).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(approval(&adam, &first).await["may_decide"], false);
    // Helpdesk, neither owner nor admin, neither sees nor decides it.
    let (s, v) = hank.api.certificate_approvals().await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !v.as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == first.as_str()),
        "{v}"
    );
    let (s, _) = hank.api.approve_certificate(&first).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A second admin approves; Adam's next key generation goes ahead.
    let (s, v) = bea.api.approve_certificate(&first).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        f.audit_details("certificate_approval.approve").await[0]["as"],
        "admin"
    );
    let (s, op) = adam.authorize(serial, key_generation("9a")).await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["request"]["params"]["subject"], "CN=Uma User");

    // The approval was for slot 9a: another slot is another request, which
    // the owner rejects on her page; it stays refused.
    let (s, r) = adam.authorize(serial, key_generation("9c")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    let second = named_approval(&r);
    assert_ne!(second, first);
    let b = f.browser();
    let login = b.login("uma", &uma.password).await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let (s, _, html) = b.get_text("/approvals").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains(&format!("/approvals/{second}/reject")),
        "{html}"
    );
    assert!(html.contains("adam"), "{html}");
    let r = b
        .post_form(
            &format!("/approvals/{second}/reject"),
            &[] as &[(&str, &str)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let rejected = f.audit_details("certificate_approval.reject").await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["as"], "owner");
    assert_eq!(approval(&adam, &second).await["status"], "rejected");
    let (s, v) = bea.api.approve_certificate(&second).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, r) = adam.authorize(serial, key_generation("9c")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    let third = named_approval(&r);
    assert_ne!(third, second);

    // Approved, but not used within its lifetime: expired, refused.
    let (s, v) = bea.api.approve_certificate(&third).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let pool = f.db.pool().await.unwrap();
    sqlx::query(
        "UPDATE certificate_approvals SET expires_at = now() - interval '1 minute' WHERE id = $1::uuid",
    )
    .bind(&third)
    .execute(&pool)
    .await
    .unwrap();
    // The table never lets an approval be extended.
    let extend = sqlx::query(
        "UPDATE certificate_approvals SET expires_at = now() + interval '1 day' WHERE id = $1::uuid",
    )
    .bind(&third)
    .execute(&pool)
    .await;
    assert!(extend.is_err(), "an approval was extended");
    assert_eq!(approval(&adam, &third).await["status"], "expired");
    let ops_before =
        f.db.count(&format!("operations WHERE device_serial = {serial}"))
            .await;
    let (s, r) = adam.authorize(serial, key_generation("9c")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    let fourth = named_approval(&r);
    assert_ne!(fourth, third);
    assert_eq!(
        f.db.count(&format!("operations WHERE device_serial = {serial}"))
            .await,
        ops_before
    );
    // A pending request past its expiry cannot be approved either.
    sqlx::query(
        "UPDATE certificate_approvals SET expires_at = now() - interval '1 minute' WHERE id = $1::uuid",
    )
    .bind(&fourth)
    .execute(&pool)
    .await
    .unwrap();
    let (s, v) = bea.api.approve_certificate(&fourth).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
}

#[tokio::test]
async fn with_approval_off_an_admin_set_helpdesk_certifies_keys_for_others_and_only_admins_change_it(
) {
    let f = TestApp::builder().attestation_root().start().await;
    let carl = f.person("carl", "user", "Carl User").await;
    let hank = f.person("hank", "helpdesk", "Hank Helpdesk").await;
    let serial = random_serial();
    let (s, v) = hank
        .api
        .register_device_for(serial, "5.7.1", &carl.user_id)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let admin = f.admin_api().await;
    let (s, mut p) = admin.policy().await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["certificate_approval"], "owner_or_second_admin");
    p["certificate_approval"] = json!("off");
    // Helpdesk may not turn it off.
    let (s, _) = hank.api.set_policy(&p).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = admin.set_policy(&p).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let changes = f.audit_details("settings.policy").await;
    let last = changes.last().unwrap();
    assert_eq!(last["changed"], json!(["certificate_approval"]));
    assert_eq!(last["new"]["certificate_approval"], "off");
    let (s, op) = hank.authorize(serial, key_generation("9a")).await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["request"]["params"]["subject"], "CN=Carl User");
    assert!(f
        .audit_details("certificate_approval.request")
        .await
        .is_empty());
}
