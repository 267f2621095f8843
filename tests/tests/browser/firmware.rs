//! Issue 18 §5: the management key follows the firmware. A 5.4.3 key (3DES
//! factory management key, AES possible) enrolled in Chromium under a
//! per-firmware rule ends with the rule's AES-256 key on the card and in
//! escrow; the wizard names the key algorithm and slot as people read them,
//! and a PIN the policy refuses stops it before the key is registered.

use kleidia_tests::browser::{Chrome, Stack};
use kleidia_tests::card::{escrowed_mgm_key, open, pin_verifies, ykman};
use serde_json::json;

const SERIAL: u32 = 41000054;
const PIN: &str = "580317";

/// The "Management key algorithm:" line of `ykman piv info`.
fn card_mgmt_algorithm(reader: &str) -> String {
    let info = ykman(reader, &["piv", "info"]).unwrap();
    info.lines()
        .find_map(|l| l.trim().strip_prefix("Management key algorithm:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no management key algorithm in:\n{info}"))
}

#[tokio::test]
async fn a_5_4_key_enrolls_in_the_browser_with_the_management_key_its_firmware_rule_names() {
    let stack = Stack::start_with_firmware(SERIAL, "5.4.3").await.unwrap();
    let reader = stack.key().reader_name();
    assert_eq!(
        card_mgmt_algorithm(reader),
        "TDES",
        "a factory 5.4.3 key starts on the 3DES default"
    );

    // The admin sets a rule for 5.4.0 up to 5.7.0; a rule the hardware cannot
    // follow is refused and changes nothing.
    let admin = stack.app.admin_api().await;
    let (_, mut policy) = admin.policy().await;
    let before = policy.clone();
    policy["management_key_by_firmware"] =
        json!([{"from": "5.0.0", "until": "5.4.0", "algorithm": "aes256"}]);
    let (status, why) = admin.set_policy(&policy).await;
    assert_eq!(status, 422, "{why}");
    assert!(why.to_string().contains("no AES management key"), "{why}");
    let (_, unchanged) = admin.policy().await;
    assert_eq!(unchanged, before);
    policy["management_key_by_firmware"] =
        json!([{"from": "5.4.0", "until": "5.7.0", "algorithm": "aes256"}]);
    let (status, saved) = admin.set_policy(&policy).await;
    assert!(status.is_success(), "{saved}");

    let password = stack
        .create_user("bruno", "user", "Bruno Example")
        .await
        .unwrap();
    let chrome = Chrome::start().await.unwrap();
    chrome
        .login(stack.app.base_url(), "bruno", &password)
        .await
        .unwrap();
    // A PIN the policy refuses stops the wizard before anything happens
    // (issue 18 §7): the key is not registered and the card is untouched.
    chrome.goto(&stack.url("/enroll")).await.unwrap();
    chrome.wait_agent_state("running").await.unwrap();
    chrome.start_enrollment(SERIAL, "123456").await;
    let (class, text) = chrome.enrollment_outcome().await;
    assert!(!class.contains("ok"), "{class}: {text}");
    assert!(
        text.contains("no repeated or sequential digits"),
        "the refusal names the rule: {text}"
    );
    let (status, _) = admin.device(SERIAL).await;
    assert_eq!(status, 404, "a refused PIN registered the key");
    let (_, audit) = admin.audit("action=device.*").await;
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(0),
        "{audit}"
    );
    assert_eq!(card_mgmt_algorithm(reader), "TDES");
    assert!(
        pin_verifies(SERIAL, "123456"),
        "the card kept its factory PIN"
    );

    chrome.goto(&stack.url("/enroll")).await.unwrap();
    chrome.wait_agent_state("running").await.unwrap();
    chrome.start_enrollment(SERIAL, PIN).await;
    let (class, text) = chrome.enrollment_outcome().await;
    let steps = chrome.steps("#enroll-steps").await;
    stack.check(
        class.contains("ok"),
        &format!("enrollment failed: {text}; steps {steps:?}"),
    );
    let page = chrome.page_text().await;
    chrome.screenshot("enroll-done-5.4.3").await.unwrap();
    assert!(
        page.contains("Generate an ECC P-256 key in slot 9a (authentication) with attestation"),
        "{page}"
    );
    assert!(!page.contains("ecc_p256"), "{page}");

    // From outside the browser: the card and the escrow agree on AES-256,
    // and the escrowed key is the one the card takes.
    assert_eq!(card_mgmt_algorithm(reader), "AES256");
    let escrow = stack.escrow(SERIAL).await.unwrap();
    assert_eq!(escrow["management_key_algorithm"], "aes256", "{escrow}");
    assert_eq!(escrow["pin"], PIN);
    let key = escrow["management_key"].as_str().unwrap();
    assert_eq!(key.len(), 64, "an AES-256 key is 32 bytes");
    let mut yk = open(SERIAL);
    yk.authenticate(&escrowed_mgm_key(&escrow))
        .expect("the escrowed AES-256 key is the card's");
    drop(yk);
    assert!(pin_verifies(SERIAL, PIN));
    assert!(!pin_verifies(SERIAL, "123456"));
}
