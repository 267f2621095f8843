//! Blocking the license service grants nothing: the app keeps the last
//! status the service verified (stored, so a restart keeps it too) and
//! never upgrades EXPIRED to the trial's limits. A 401 from a wrong token
//! is shown as a configuration error on `/license` and `/readyz`.

use kleidia_tests::client::{Api, Browser};
use kleidia_tests::license::DAY;
use kleidia_tests::pki::random_serial;
use kleidia_tests::{unix_now, TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::Value;

async fn readyz(base: &str) -> (StatusCode, Value) {
    Api::new(base).get("/readyz").await
}

#[tokio::test]
async fn an_expired_installation_stays_expired_when_the_service_is_blocked_misconfigured_or_the_app_restarts(
) {
    let mut site = TestApp::builder().license_service().start().await;
    let file = site
        .issue_license("L-short", unix_now() + 2 * DAY, 10, 10)
        .await;
    let admin = site.admin_api().await;
    assert_eq!(admin.upload_license(file).await.0, StatusCode::OK);
    let alice = site.person("alice", "user", "alice").await;
    assert_eq!(alice.register(random_serial()).await.0, StatusCode::CREATED);
    // Three days later (the service's clock) the license has ended, and the
    // app has verified that.
    site.restart_license_service(&[(
        "KLEIDIA_LICENSE_TEST_NOW",
        format!("@{}", unix_now() + 3 * DAY),
    )])
    .await;
    let (_, v) = admin.license().await;
    assert_eq!(v["status"], "EXPIRED", "{v}");
    assert_eq!(v["degraded"], false, "{v}");
    assert!(v.get("problem").is_none(), "{v}");
    let (s, r) = readyz(site.base_url()).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["checks"]["license"], "ok", "{r}");
    let devices = site.db.count("devices").await;

    // A second app with a wrong token for the service: every answer is a
    // 401. It shows a configuration error, not an outage, and keeps the
    // stored EXPIRED status although it never got one itself.
    let other = site
        .spawn_another(&[("KLEIDIA_LICENSE_API_TOKEN", "not-the-right-token")])
        .await;
    let mut other_admin = Api::new(&other.base_url);
    other_admin.login("admin", ADMIN_PASSWORD).await.unwrap();
    let (s, v) = other_admin.license().await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "EXPIRED", "{v}");
    assert_eq!(v["degraded"], true, "{v}");
    assert_eq!(v["new_enrollments"]["allowed"], false, "{v}");
    assert_eq!(v["problem"]["kind"], "configuration", "{v}");
    let (s, r) = readyz(&other.base_url).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the license never makes the app unready: {r}"
    );
    assert_eq!(r["warnings"], serde_json::json!(["license"]), "{r}");
    let check = r["checks"]["license"].as_str().unwrap();
    assert!(check.starts_with("configuration error"), "{check}");
    assert!(check.contains("license.api_token"), "{check}");
    let other_browser = Browser::new(&other.base_url);
    let r = other_browser.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = other_browser.license_page().await;
    assert!(html.contains(r#"id="license-config-error""#), "{html}");
    assert!(html.contains(r#"id="license-status">EXPIRED<"#), "{html}");
    let (s, v) = other_admin.register_device(random_serial(), "5.7.1").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["message"].as_str().unwrap().contains("EXPIRED"), "{v}");

    // The attacker blocks the service: still EXPIRED, no enrollment.
    site.stop_license_service();
    let (s, v) = admin.license().await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "EXPIRED", "{v}");
    assert_eq!(v["degraded"], true, "{v}");
    assert_eq!(v["limits"], Value::Null, "{v}");
    assert_eq!(v["problem"]["kind"], "unreachable", "{v}");
    let (s, v) = alice.register(random_serial()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, r) = readyz(site.base_url()).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(
        r["checks"]["license"]
            .as_str()
            .unwrap()
            .starts_with("unreachable"),
        "{r}"
    );
    // …and restarts the app: the stored status still applies.
    let restarted = site.spawn_another(&[]).await;
    let mut restarted_admin = Api::new(&restarted.base_url);
    restarted_admin
        .login("admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let (_, v) = restarted_admin.license().await;
    assert_eq!(v["status"], "EXPIRED", "{v}");
    assert_eq!(v["degraded"], true, "{v}");
    let (s, v) = restarted_admin
        .register_device(random_serial(), "5.7.1")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    assert_eq!(site.db.count("devices").await, devices, "nothing enrolled");
}
