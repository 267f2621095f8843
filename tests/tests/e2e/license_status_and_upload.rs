//! The license in the app: the license page and `/api/license` against the
//! real `kleidia serve` and `kleidia-license serve` (with a token that
//! carries only the `kleidia-license` policy and a shared API token),
//! PostgreSQL and a bootstrapped OpenBao of the test's own. Licenses are
//! signed with the committed TEST vendor key by `kleidia-license issue`.

use kleidia_tests::license::{flip_one_payload_bit, DAY};
use kleidia_tests::{unix_now, TestApp};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_fresh_installation_shows_trial_with_its_installation_id_and_the_trial_limits() {
    let site = TestApp::builder().license_service().start().await;
    let id = site.license_service().installation_id().await;

    let b = site.admin_browser().await;
    let html = b.license_page().await;
    assert!(html.contains(r#"id="license-status">TRIAL<"#), "{html}");
    assert!(html.contains(&id), "the installation id is shown: {html}");
    assert!(!html.contains("license-degraded"), "{html}");
    assert!(html.contains("New YubiKeys can be enrolled."), "{html}");
    assert!(html.contains("No license has been uploaded yet."), "{html}");
    // Admins find the page in the navigation.
    let (_, _, home) = b.get_text("/").await;
    assert!(home.contains(r#"href="/license""#), "{home}");

    let admin = site.admin_api().await;
    let (s, v) = admin.license().await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "TRIAL");
    assert_eq!(v["degraded"], false);
    assert_eq!(v["installation_id"], id.as_str());
    assert_eq!(v["limits"], json!({"max_users": 25, "max_devices": 25}));
    assert_eq!(v["usage"], json!({"users": 1, "devices": 0}));
    assert_eq!(v["new_enrollments"]["allowed"], true);
    assert_eq!(v["history"], json!([]));

    // Staff read the status; the page and uploads are for admins only.
    let help = site.person("helen", "helpdesk", "helen").await;
    let (s, v) = help.api.license().await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "TRIAL");
    let (s, _) = help.api.upload_license("{}").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let user = site.person("ursula", "user", "ursula").await;
    let (s, _) = user.api.license().await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_valid_license_uploaded_through_the_page_shows_valid_with_its_limits_and_is_audited() {
    let site = TestApp::builder().license_service().start().await;
    let file = site
        .issue_license("L-page", unix_now() + 365 * DAY, 12, 40)
        .await;
    let b = site.admin_browser().await;

    let (s, location, body) = b.upload_license(&file).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(location.as_deref(), Some("/license?done=uploaded"));
    let (_, _, html) = b.get_text("/license?done=uploaded").await;
    assert!(html.contains("The license was accepted."), "{html}");
    assert!(html.contains(r#"id="license-status">VALID<"#), "{html}");
    assert!(html.contains("Example Corp"), "{html}");
    assert!(
        html.contains("<td>12</td>") || html.contains(">12<"),
        "{html}"
    );
    assert!(html.contains("40"), "{html}");
    assert!(
        html.contains("<code>L-page</code>"),
        "the history lists it: {html}"
    );
    assert!(
        html.contains(r#"<span class="badge ok">current</span>"#),
        "{html}"
    );

    let admin = site.admin_api().await;
    let (s, v) = admin.license().await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "VALID");
    assert_eq!(v["limits"], json!({"max_users": 12, "max_devices": 40}));
    assert_eq!(v["license"]["license_id"], "L-page");
    assert_eq!(
        v["history"][0]["uploaded_by"], "admin",
        "the service recorded who uploaded it"
    );

    // A renewal through the API replaces it; both stay in the history.
    let renewal = site
        .issue_license("L-api", unix_now() + 730 * DAY, 20, 80)
        .await;
    let (s, v) = admin.upload_license(renewal).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "VALID", "{v}");
    assert_eq!(v["limits"], json!({"max_users": 20, "max_devices": 80}));
    let ids: Vec<&str> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["license_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["L-page", "L-api"]);

    let audit = site.audit_details("license.upload").await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0]["result"], "ok");
    assert_eq!(audit[0]["license_id"], "L-page");
    assert_eq!(audit[0]["status"], "VALID");
    assert_eq!(audit[1]["license_id"], "L-api");
    assert_eq!(site.stored_licenses_version().await, 2);
}

#[tokio::test]
async fn a_bit_flipped_license_is_refused_with_the_services_reason_and_nothing_is_stored() {
    let site = TestApp::builder().license_service().start().await;
    let good = site
        .issue_license("L-flipped", unix_now() + 365 * DAY, 12, 40)
        .await;
    let bad = flip_one_payload_bit(&good);
    let b = site.admin_browser().await;

    let (s, _, html) = b.upload_license(&bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains(r#"id="license-error""#), "{html}");
    assert!(html.contains("the license was refused:"), "{html}");
    assert!(
        html.contains("signature"),
        "the service's reason is shown: {html}"
    );
    assert!(html.contains("Nothing was stored."), "{html}");
    assert!(html.contains(r#"id="license-status">TRIAL<"#), "{html}");

    let admin = site.admin_api().await;
    let (s, v) = admin.upload_license(bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["message"].as_str().unwrap().contains("signature"), "{v}");

    // An empty upload never reaches the service.
    let (s, _, html) = b.upload_license(b"").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("choose the license file"), "{html}");

    // Nothing stored: still TRIAL, no history, no KV version.
    let (_, v) = admin.license().await;
    assert_eq!(v["status"], "TRIAL", "{v}");
    assert_eq!(v["history"], json!([]));
    assert_eq!(site.stored_licenses_version().await, 0);
    let audit = site.audit_details("license.upload").await;
    assert_eq!(
        audit.len(),
        2,
        "both attempts that reached the service are audited: {audit:?}"
    );
    for a in &audit {
        assert_eq!(a["result"], "refused", "{a}");
        assert_eq!(a["error"], "bad_signature", "{a}");
    }
}
