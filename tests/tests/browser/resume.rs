//! An enrollment interrupted by the agent dying, and resumed from the
//! device page once the agent is back (with a new key).

use std::time::Duration;

use kleidia_tests::browser::{Chrome, Stack};
use kleidia_tests::card::{open, pin_verifies, ykman};

const SERIAL: u32 = 41000002;
const PIN: &str = "395827";

/// `username` (a user called `display`) starts enrolling the factory key `serial`, and the
/// agent is killed once the PIN step is done. Returns the enrollment's
/// outcome (result box class and text).
async fn enrollment_cut_off_after_the_pin(
    serial: u32,
    username: &str,
    display: &str,
) -> (Stack, Chrome, (String, String)) {
    let mut stack = Stack::start(serial).await.unwrap();
    let password = stack.create_user(username, "user", display).await.unwrap();
    let chrome = Chrome::start().await.unwrap();
    chrome
        .open_enrollment(stack.app.base_url(), username, &password)
        .await;
    chrome.start_enrollment(serial, PIN).await;
    chrome
        .wait_for("#enroll-steps li[data-step=\"pin\"].done")
        .await
        .unwrap();
    stack.agent.kill();
    let outcome = chrome.enrollment_outcome().await;
    (stack, chrome, outcome)
}

#[tokio::test]
async fn an_enrollment_cut_off_by_the_agent_dying_is_explained_on_the_device_page_and_resumed_without_losing_a_secret(
) {
    // The PIN is set and escrowed; the agent dies right after.
    let (mut stack, chrome, (class, text)) =
        enrollment_cut_off_after_the_pin(SERIAL, "bob", "Bob Example").await;
    chrome.wait_agent_state("not-running").await.unwrap();
    chrome.screenshot("enroll-interrupted").await.unwrap();
    let cut = chrome.steps("#enroll-steps").await;
    assert!(class.contains("error"), "{class}: {text}");
    assert!(text.contains("Nothing is lost"), "{text}");
    assert!(
        cut.iter().any(|(id, c)| id == "pin" && c == "done"),
        "{cut:?}"
    );
    assert!(cut.iter().any(|(_, c)| c == "failed"), "{cut:?}");
    assert_eq!(stack.escrow(SERIAL).await.unwrap()["pin"], PIN);

    // The device page says where it stopped and offers to resume.
    chrome
        .goto(&stack.url(&format!("/devices/{SERIAL}")))
        .await
        .unwrap();
    chrome.wait_agent_state("not-running").await.unwrap();
    let card = chrome
        .wait_for("#enrollment")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(card.contains("registered but not enrolled yet"), "{card}");
    assert!(card.contains("picks up where it stopped"), "{card}");
    chrome.screenshot("device-interrupted").await.unwrap();
    let dev = stack.device(SERIAL).await.unwrap();
    assert_eq!(dev["device"]["state"], "registered", "{dev}");

    // The agent comes back with a new key: the page registers it again by itself.
    stack.agent.start().await.unwrap();
    chrome.click("#agent-retry").await.unwrap();
    chrome.wait_agent_state("restarted").await.unwrap();
    chrome.screenshot("agent-restarted").await.unwrap();
    chrome
        .click("#enrollment a[href^=\"/enroll\"]")
        .await
        .unwrap();
    chrome.wait_for("#enroll-form").await.unwrap();
    chrome
        .wait_for_within(
            "#agent-status[data-state=\"running\"], #agent-status[data-state=\"restarted\"]",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    chrome.start_enrollment(SERIAL, PIN).await;
    let (class, text) = chrome.enrollment_outcome().await;
    chrome.screenshot("enroll-resumed").await.unwrap();
    let resumed = chrome.steps("#enroll-steps").await;
    stack.check(
        class.contains("ok"),
        &format!("resume failed: {text}; steps {resumed:?}"),
    );
    assert!(
        resumed.iter().any(|(id, c)| id == "pin" && c == "skipped"),
        "the PIN set before the crash is kept: {resumed:?}"
    );
    assert!(
        resumed.iter().all(|(_, c)| c == "done" || c == "skipped"),
        "{resumed:?}"
    );

    // Nothing lost: the device is active and every escrowed secret works on the card.
    let dev = stack.device(SERIAL).await.unwrap();
    assert_eq!(dev["device"]["state"], "active", "{dev}");
    let escrow = stack.escrow(SERIAL).await.unwrap();
    assert_eq!(escrow["pin"], PIN);
    assert!(pin_verifies(SERIAL, PIN));
    let puk = escrow["puk"].as_str().unwrap().to_string();
    let mut yk = open(SERIAL);
    yk.change_puk(puk.as_bytes(), puk.as_bytes())
        .expect("the escrowed PUK is the card's PUK");
    drop(yk);

    chrome.close().await;
}

#[tokio::test]
async fn an_interrupted_enrollment_rolled_back_from_the_device_page_leaves_a_factory_key_registered_to_its_owner(
) {
    const SERIAL: u32 = 41000005;
    let (mut stack, chrome, (class, _)) =
        enrollment_cut_off_after_the_pin(SERIAL, "erin", "Erin Example").await;
    assert!(class.contains("error"));
    stack.agent.start().await.unwrap();

    // Roll back instead of resuming: the owner resets the key from its page.
    chrome
        .goto(&stack.url(&format!("/devices/{SERIAL}")))
        .await
        .unwrap();
    chrome.wait_agent_state("restarted").await.unwrap();
    chrome
        .click("#enrollment form[data-action=\"wipe\"] button[type=submit]")
        .await
        .unwrap();
    let question = chrome.accept_confirm().await.unwrap();
    assert!(question.starts_with("Roll back"), "{question}");
    let (class, text) = chrome.action_result().await;
    stack.check(class.contains("ok"), &format!("roll back failed: {text}"));

    // Factory state on the card; still registered to Erin, nothing escrowed in use.
    let info = ykman(stack.key().reader_name(), &["piv", "info"]).unwrap();
    assert!(info.contains("WARNING: Using default PIN!"), "{info}");
    assert!(
        info.contains("WARNING: Using default Management key!"),
        "{info}"
    );
    assert!(pin_verifies(SERIAL, "123456"));
    let dev = stack.device(SERIAL).await.unwrap();
    assert_eq!(dev["device"]["state"], "registered", "{dev}");
    assert_eq!(dev["device"]["owner_username"], "erin", "{dev}");
    assert!(dev["device"]["secrets_version"].is_null(), "{dev}");
    chrome
        .wait_for("#enrollment a[href^=\"/enroll\"]")
        .await
        .unwrap();

    chrome.close().await;
}
