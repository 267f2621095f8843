//! Helpdesk enrolls a spare key registered to an admin at their own desk
//! (issue 12 §2): the enrollment stops before a key is generated, the admin
//! approves on the Approvals page, and the enrollment run again finishes
//! with the admin's certificate on the card.

use kleidia_tests::browser::{openssl, Chrome, Stack};
use kleidia_tests::card::ykman;
use reqwest::StatusCode;

const SERIAL: u32 = 41000006;
const PIN: &str = "604913";

#[tokio::test]
async fn helpdesk_enrolling_a_key_for_an_admin_waits_for_the_admins_approval_on_the_approvals_page()
{
    let stack = Stack::start(SERIAL).await.unwrap();
    let base = stack.app.base_url().to_string();
    let alma = stack
        .app
        .create_user("alma", "admin", "Alma Admin", "alma-first-password-1")
        .await;
    let henk_password = stack
        .create_user("henk", "helpdesk", "Henk Helpdesk")
        .await
        .unwrap();
    let mut henk = stack.app.api();
    henk.login("henk", &henk_password).await.unwrap();
    let (s, v) = henk.register_device_for(SERIAL, "5.7.1", &alma.id).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Henk enrolls it at his desk: it stops before the key, nothing signed.
    let chrome = Chrome::start().await.unwrap();
    chrome.open_enrollment(&base, "henk", &henk_password).await;
    chrome.start_enrollment(SERIAL, PIN).await;
    let (class, text) = chrome.enrollment_outcome().await;
    chrome.screenshot("enroll-needs-approval").await.unwrap();
    stack.check(class.contains("error"), &format!("enrollment: {text}"));
    assert!(text.contains("Approval request"), "{text}");
    assert!(text.contains("Alma Admin"), "{text}");
    let device = stack.device(SERIAL).await.unwrap();
    assert_eq!(device["certificates"].as_array().unwrap().len(), 0);
    assert_eq!(device["device"]["state"], "registered");
    let (_, list) = henk.certificate_approvals().await;
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["status"], "pending");

    // Henk's own page lists it without the buttons.
    chrome.goto(&format!("{base}/approvals")).await.unwrap();
    chrome
        .wait_for(&format!("tr[data-approval=\"{id}\"]"))
        .await
        .unwrap();
    assert!(
        !chrome
            .exists(&format!("form[action=\"/approvals/{id}/approve\"]"))
            .await
    );

    // Alma approves on her page; the table is swapped in place.
    chrome.logout().await.unwrap();
    chrome.login(&base, "alma", &alma.password).await.unwrap();
    chrome.goto(&format!("{base}/approvals")).await.unwrap();
    chrome
        .click(&format!(
            "form[action=\"/approvals/{id}/approve\"] button[type=submit]"
        ))
        .await
        .unwrap();
    let badge = chrome
        .wait_for(&format!("tr[data-approval=\"{id}\"] .badge.ok"))
        .await
        .unwrap();
    assert_eq!(badge.text().await.unwrap(), "approved");
    chrome.screenshot("approvals").await.unwrap();

    // Henk runs the enrollment again: the key in slot 9a, Alma's certificate.
    chrome.logout().await.unwrap();
    chrome.open_enrollment(&base, "henk", &henk_password).await;
    chrome.start_enrollment(SERIAL, PIN).await;
    let (class, text) = chrome.enrollment_outcome().await;
    let done = chrome.steps("#enroll-steps").await;
    stack.check(
        class.contains("ok"),
        &format!("enrollment: {text}; steps {done:?}"),
    );
    let device = stack.device(SERIAL).await.unwrap();
    assert_eq!(device["device"]["state"], "active");
    assert_eq!(device["certificates"][0]["subject"], "CN=Alma Admin");
    let (_, list) = henk.certificate_approvals().await;
    assert_eq!(list[0]["status"], "used");
    let pem = ykman(
        stack.key().reader_name(),
        &["piv", "certificates", "export", "9a", "-"],
    )
    .unwrap();
    let work = stack.dir.path();
    std::fs::write(work.join("slot.pem"), pem).unwrap();
    let subject = openssl(work, &["x509", "-in", "slot.pem", "-noout", "-subject"]).unwrap();
    assert!(subject.contains("Alma Admin"), "{subject}");
}
