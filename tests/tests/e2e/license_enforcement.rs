//! How the app enforces the license (issue 8): its device and user limits,
//! an expired license, and TRIAL limits while the license service is down,
//! against the real `kleidia serve`, `kleidia-license serve`, PostgreSQL and
//! a bootstrapped OpenBao of the test's own.

use kleidia_tests::license::DAY;
use kleidia_tests::pki::random_serial;
use kleidia_tests::{unix_now, TestApp};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn beyond_the_device_limit_a_new_registration_is_refused_while_a_pin_change_on_an_enrolled_key_is_authorised(
) {
    let site = TestApp::builder().license_service().start().await;
    let file = site
        .issue_license("L-two-keys", unix_now() + 365 * DAY, 10, 2)
        .await;
    let admin = site.admin_api().await;
    let (s, _) = admin.upload_license(file).await;
    assert_eq!(s, StatusCode::OK);

    let alice = site.person("alice", "user", "alice").await;
    let (first, second, third) = (random_serial(), random_serial(), random_serial());
    for serial in [first, second] {
        let (s, v) = alice.register(serial).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = alice.register(third).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("allows 2 YubiKeys"),
        "the message names the limit: {msg}"
    );
    assert_eq!(
        site.db.count("devices").await,
        2,
        "the refused key was not stored"
    );

    // Work on a key already in the fleet goes on.
    let (s, op) = alice
        .authorize(first, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["agent_path"], "/piv/set-pin");

    // The page shows the limit reached and why enrollments are refused.
    let b = site.admin_browser().await;
    let html = b.license_page().await;
    assert!(html.contains("limit reached"), "{html}");
    assert!(html.contains("New enrollments are refused"), "{html}");

    // A retired key frees its place.
    for state in ["revoked", "retired"] {
        let (s, v) = admin.set_device_state(second, state, "broken").await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = alice.register(third).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn an_expired_license_refuses_new_enrollments_but_work_on_enrolled_keys_goes_on() {
    let mut site = TestApp::builder().license_service().start().await;
    let file = site
        .issue_license("L-short", unix_now() + 2 * DAY, 10, 10)
        .await;
    let admin = site.admin_api().await;
    let (s, _) = admin.upload_license(file).await;
    assert_eq!(s, StatusCode::OK);
    let alice = site.person("alice", "user", "alice").await;
    let enrolled = random_serial();
    let (s, v) = alice.register(enrolled).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Three days later (the service's test clock), the license has ended.
    site.restart_license_service(&[(
        "KLEIDIA_LICENSE_TEST_NOW",
        format!("@{}", unix_now() + 3 * DAY),
    )])
    .await;
    let (s, v) = admin.license().await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "EXPIRED", "{v}");
    assert_eq!(v["new_enrollments"]["allowed"], false);

    let (s, v) = alice.register(random_serial()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("EXPIRED"), "{msg}");
    assert!(msg.contains("keep working"), "{msg}");
    assert_eq!(site.db.count("devices").await, 1);

    // Existing keys: a PIN change is authorised, an admin can revoke.
    let (s, op) = alice
        .authorize(enrolled, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let (s, v) = admin.set_device_state(enrolled, "revoked", "left").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Accounts are not license-bound once it has ended: staff can still be added.
    let (s, v) = admin.create_user(&json!({"username": "henry", "role": "helpdesk", "display_name": "Henry", "password": "henry-long-password-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let b = site.admin_browser().await;
    let html = b.license_page().await;
    assert!(html.contains(r#"id="license-status">EXPIRED<"#), "{html}");
    assert!(html.contains("New enrollments are refused"), "{html}");
    assert!(!html.contains("license-clock"), "{html}");

    // Back to the real clock, three days behind what the service has seen:
    // the license stays expired and the page warns about the rollback.
    site.restart_license_service(&[]).await;
    let (_, v) = admin.license().await;
    assert_eq!(v["status"], "EXPIRED", "{v}");
    assert_eq!(v["clock_rollback"], true, "{v}");
    let html = b.license_page().await;
    assert!(html.contains(r#"id="license-clock""#), "{html}");
    let (s, _) = alice.register(random_serial()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn beyond_the_user_limit_no_account_is_created_or_enabled_until_one_is_disabled() {
    let site = TestApp::builder().license_service().start().await;
    let file = site
        .issue_license("L-two-users", unix_now() + 365 * DAY, 2, 10)
        .await;
    let admin = site.admin_api().await;
    let (s, _) = admin.upload_license(file).await;
    assert_eq!(s, StatusCode::OK);
    let new_user = |name: &str| json!({"username": name, "role": "user", "display_name": name, "password": format!("{name}-long-password-1")});
    let (s, alice) = admin.create_user(&new_user("alice")).await;
    assert_eq!(s, StatusCode::CREATED, "{alice}");
    let (s, v) = admin.create_user(&new_user("bob")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("allows 2 users"),
        "{v}"
    );
    assert_eq!(site.db.count("users WHERE username = 'bob'").await, 0);

    // A disabled account does not count.
    let id = alice["user"]["id"].as_str().unwrap();
    let (s, v) = admin.disable_user(id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = admin.create_user(&new_user("bob")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Enabling her again would make three.
    let (s, v) = admin.enable_user(id).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("allows 2 users"),
        "{v}"
    );
    let pool = site.db.pool().await.unwrap();
    let disabled: bool = sqlx::query_scalar("SELECT disabled FROM users WHERE username = 'alice'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(disabled);
    let (_, v) = admin.license().await;
    assert_eq!(v["usage"]["users"], 2, "{v}");
}

#[tokio::test]
async fn with_the_license_service_down_the_app_keeps_the_last_verified_status_and_says_it_is_degraded(
) {
    let mut site = TestApp::builder().license_service().start().await;
    let file = site
        .issue_license("L-one-key", unix_now() + 365 * DAY, 10, 1)
        .await;
    let admin = site.admin_api().await;
    let (s, _) = admin.upload_license(file.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let alice = site.person("alice", "user", "alice").await;
    let enrolled = random_serial();
    assert_eq!(alice.register(enrolled).await.0, StatusCode::CREATED);
    let next = random_serial();
    assert_eq!(
        alice.register(next).await.0,
        StatusCode::CONFLICT,
        "the license allows one key"
    );

    site.stop_license_service();

    let (s, v) = admin.license().await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "VALID", "{v}");
    assert_eq!(v["degraded"], true);
    assert_eq!(v["limits"], json!({"max_users": 10, "max_devices": 1}));
    assert_eq!(v["problem"]["kind"], "unreachable", "{v}");
    let b = site.admin_browser().await;
    let html = b.license_page().await;
    assert!(
        html.contains(
            "Degraded: the license service gave no status, the last verified status applies."
        ),
        "{html}"
    );
    assert!(html.contains(r#"id="license-status">VALID<"#), "{html}");
    assert!(html.contains("The history is not available"), "{html}");

    // The last verified limits, not the trial's 25: the service being down
    // grants nothing.
    let (s, v) = alice.register(next).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(site.db.count("devices").await, 1);
    // And nothing on enrolled keys is blocked.
    let (s, op) = alice
        .authorize(enrolled, json!({"operation": "set_pin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");

    // An upload cannot happen now, says so, and is audited.
    let (s, _, html) = b.upload_license(&file).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{html}");
    assert!(
        html.contains("the license service is unreachable; nothing was uploaded"),
        "{html}"
    );
    let audit = site.audit_details("license.upload").await;
    assert_eq!(audit.last().unwrap()["result"], "error", "{audit:?}");

    // Back up: the license is in force again.
    site.restart_license_service(&[]).await;
    let (_, v) = admin.license().await;
    assert_eq!(v["status"], "VALID", "{v}");
    assert_eq!(v["degraded"], false);
    let (s, _) = alice.register(random_serial()).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a second key against a limit of one"
    );
}
