//! The maintenance buttons of the device page on an enrolled key, and a
//! helpdesk PIN unblock with the escrowed PUK.

use kleidia_tests::browser::{openssl, Chrome, Stack};
use kleidia_tests::card::{open, pin_verifies, ykman};

const SERIAL: u32 = 41000004;
const PIN: &str = "529164";
const UNBLOCKED_PIN: &str = "73918264";

/// Submit the device page's `data-action` form and return the result text;
/// the test fails with every log when the page reports an error.
async fn action(stack: &Stack, chrome: &Chrome, name: &str) -> String {
    let form = format!("form[data-action=\"{name}\"]");
    chrome
        .click(&format!("{form} button[type=submit]"))
        .await
        .unwrap();
    let (class, text) = chrome.action_result().await;
    stack.check(class.contains("ok"), &format!("{name} failed: {text}"));
    text
}

async fn open_device_page(stack: &Stack, chrome: &Chrome) {
    chrome
        .goto(&stack.url(&format!("/devices/{SERIAL}")))
        .await
        .unwrap();
    chrome.wait_agent_state("running").await.unwrap();
}

fn slot_9a_serial(stack: &Stack) -> String {
    let pem = ykman(
        stack.key().reader_name(),
        &["piv", "certificates", "export", "9a", "-"],
    )
    .unwrap();
    let work = stack.dir.path();
    std::fs::write(work.join("slot.pem"), pem).unwrap();
    openssl(work, &["x509", "-in", "slot.pem", "-noout", "-serial"])
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn the_owner_renews_and_rotates_from_the_device_page_and_helpdesk_unblocks_a_blocked_pin() {
    let stack = Stack::start(SERIAL).await.unwrap();
    let password = stack
        .create_user("dave", "user", "Dave Example")
        .await
        .unwrap();
    let helpdesk = stack
        .create_user("hanna", "helpdesk", "Hanna Helpdesk")
        .await
        .unwrap();
    let chrome = Chrome::start().await.unwrap();
    chrome
        .open_enrollment(stack.app.base_url(), "dave", &password)
        .await;
    chrome.start_enrollment(SERIAL, PIN).await;
    let (class, text) = chrome.enrollment_outcome().await;
    stack.check(class.contains("ok"), &format!("enrollment: {text}"));
    let first = stack.escrow(SERIAL).await.unwrap();
    let first_cert = slot_9a_serial(&stack);

    // A new PUK, escrowed and on the card.
    open_device_page(&stack, &chrome).await;
    let text = action(&stack, &chrome, "set-puk").await;
    assert!(text.contains("A new PUK was set"), "{text}");
    let escrow = stack.escrow(SERIAL).await.unwrap();
    assert_ne!(escrow["puk"], first["puk"]);
    assert_eq!(escrow["pin"], PIN, "the PIN is carried over");
    let puk = escrow["puk"].as_str().unwrap().to_string();
    open(SERIAL)
        .change_puk(puk.as_bytes(), puk.as_bytes())
        .expect("the escrowed PUK is the card's");

    // A new management key.
    open_device_page(&stack, &chrome).await;
    let text = action(&stack, &chrome, "rotate-management-key").await;
    assert!(text.contains("management key was rotated"), "{text}");
    let escrow = stack.escrow(SERIAL).await.unwrap();
    assert_ne!(escrow["management_key"], first["management_key"]);
    let info = ykman(stack.key().reader_name(), &["piv", "info"]).unwrap();
    assert!(!info.contains("default Management key"), "{info}");

    // A new key and certificate in 9a (issued with the new management key).
    open_device_page(&stack, &chrome).await;
    let text = action(&stack, &chrome, "renew-certificate").await;
    assert!(text.contains("A new key and certificate"), "{text}");
    let renewed = slot_9a_serial(&stack);
    assert_ne!(renewed, first_cert, "slot 9a holds a new certificate");
    let dev = stack.device(SERIAL).await.unwrap();
    let issued: Vec<String> = dev["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["slot"] == "9a" && c["status"] == "issued")
        .map(|c| {
            c["serial_number"]
                .as_str()
                .unwrap()
                .replace(':', "")
                .to_uppercase()
        })
        .collect();
    assert!(
        issued
            .iter()
            .any(|s| renewed.ends_with(s.trim_start_matches('0'))),
        "{renewed} not among {issued:?}"
    );

    // Reading the key shows its counters.
    open_device_page(&stack, &chrome).await;
    let text = action(&stack, &chrome, "piv-info").await;
    assert!(text.contains("PIN tries left: 3"), "{text}");
    let info = chrome.find("#piv-info").await.unwrap();
    assert!(info.is_displayed().await.unwrap());
    assert!(info.text().await.unwrap().contains("\"pin_retries\": 3"));
    chrome.screenshot("device-piv-info").await.unwrap();

    // The owner blocks the PIN with wrong guesses; helpdesk unblocks it
    // with the escrowed PUK and the PIN typed at the keyboard.
    {
        let mut yk = open(SERIAL);
        for _ in 0..3 {
            assert!(yk.verify_pin(b"000000").is_err());
        }
        assert!(yk.verify_pin(PIN.as_bytes()).is_err(), "the PIN is blocked");
    }
    chrome.logout().await.unwrap();
    chrome
        .login(stack.app.base_url(), "hanna", &helpdesk)
        .await
        .unwrap();
    open_device_page(&stack, &chrome).await;
    let form = "form[data-action=\"unblock-pin\"]";
    chrome.fill(form, "new_pin", UNBLOCKED_PIN).await.unwrap();
    chrome
        .fill(form, "new_pin_confirm", UNBLOCKED_PIN)
        .await
        .unwrap();
    chrome.screenshot("device-unblock").await.unwrap();
    let text = action(&stack, &chrome, "unblock-pin").await;
    assert!(text.contains("unblocked with the escrowed PUK"), "{text}");
    assert!(pin_verifies(SERIAL, UNBLOCKED_PIN));
    assert_eq!(stack.escrow(SERIAL).await.unwrap()["pin"], UNBLOCKED_PIN);

    chrome.close().await;
}
