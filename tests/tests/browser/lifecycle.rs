//! The flow that matters most, clicked through like a person would: enroll
//! a factory key, change its PIN, lose it, wipe it.

use kleidia_tests::browser::{openssl, Chrome, Stack};
use kleidia_tests::card::{open, pin_verifies, ykman, DEFAULT_PIN, DEFAULT_PUK};
use kleidia_tests::ADMIN_PASSWORD;

const SERIAL: u32 = 41000001;
const FIRST_PIN: &str = "471925";
const SECOND_PIN: &str = "80614937";

/// A serial as openssl prints it: upper-case hex, no colons, no leading zeros.
fn hex_serial(s: &str) -> String {
    let h: String = s
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_uppercase();
    let t = h.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.into()
    }
}

#[tokio::test]
async fn a_user_enrolls_a_factory_key_changes_its_pin_and_an_admin_marks_it_lost_and_wipes_it() {
    let stack = Stack::start(SERIAL).await.unwrap();
    let reader = stack.key().reader_name();
    let password = stack
        .create_user("alice", "user", "Alice Example")
        .await
        .unwrap();
    let chrome = Chrome::start().await.unwrap();

    // Sign in: the dashboard finds the agent and registers it.
    chrome
        .login(stack.app.base_url(), "alice", &password)
        .await
        .unwrap();
    chrome.wait_agent_state("running").await.unwrap();
    chrome.screenshot("dashboard-user").await.unwrap();

    // Enroll: type a PIN, click, watch every step get its tick.
    chrome.goto(&stack.url("/enroll")).await.unwrap();
    chrome.wait_agent_state("running").await.unwrap();
    chrome.screenshot("enroll").await.unwrap();
    chrome.start_enrollment(SERIAL, FIRST_PIN).await;
    let (class, text) = chrome.enrollment_outcome().await;
    chrome.screenshot("enroll-done").await.unwrap();
    let done = chrome.steps("#enroll-steps").await;
    stack.check(
        class.contains("ok"),
        &format!("enrollment failed: {text}; steps {done:?}"),
    );
    assert!(
        text.contains(&format!("YubiKey {SERIAL} is enrolled and active")),
        "{text}"
    );
    let ids: Vec<&str> = done.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "detect",
            "register",
            "pin",
            "puk",
            "mgmt",
            "key-9a",
            "cert-9a",
            "import-9a",
            "active"
        ]
    );
    assert!(done.iter().all(|(_, c)| c == "done"), "{done:?}");

    // From outside the browser: the device, the escrow, the card.
    let dev = stack.device(SERIAL).await.unwrap();
    assert_eq!(dev["device"]["state"], "active", "{dev}");
    assert_eq!(dev["device"]["owner_username"], "alice", "{dev}");
    let escrow = stack.escrow(SERIAL).await.unwrap();
    assert_eq!(
        escrow["pin"], FIRST_PIN,
        "the escrowed PIN is the one typed"
    );
    assert_ne!(escrow["puk"], "12345678");
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(!info.contains("default PIN"), "{info}");
    assert!(!info.contains("default PUK"), "{info}");
    assert!(!info.contains("default Management key"), "{info}");
    assert!(
        pin_verifies(SERIAL, FIRST_PIN),
        "the typed PIN verifies on the card"
    );

    // Slot 9a holds the issued certificate, and it chains to Kleidia's root.
    let issued: Vec<&serde_json::Value> = dev["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["slot"] == "9a" && c["status"] == "issued")
        .collect();
    assert_eq!(issued.len(), 1, "{dev}");
    let cert_serial = hex_serial(issued[0]["serial_number"].as_str().unwrap());
    let work = stack.dir.path();
    let pem = ykman(reader, &["piv", "certificates", "export", "9a", "-"]).unwrap();
    std::fs::write(work.join("9a.pem"), &pem).unwrap();
    let printed = openssl(
        work,
        &["x509", "-in", "9a.pem", "-noout", "-serial", "-subject"],
    )
    .unwrap();
    // openssl pads the serial to whole bytes (a leading 0 when the top nibble
    // is 0); compare the numbers, not their spelling.
    let on_card = printed
        .lines()
        .find_map(|l| l.strip_prefix("serial="))
        .map(hex_serial)
        .unwrap_or_default();
    assert_eq!(
        on_card, cert_serial,
        "slot 9a holds {printed}, Kleidia issued {cert_serial}"
    );
    std::fs::write(
        work.join("chain.pem"),
        stack.fetch("/pki/ca_chain").await.unwrap(),
    )
    .unwrap();
    std::fs::write(
        work.join("root.der"),
        stack.fetch("/pki/root/ca").await.unwrap(),
    )
    .unwrap();
    openssl(
        work,
        &[
            "x509", "-inform", "DER", "-in", "root.der", "-out", "root.pem",
        ],
    )
    .unwrap();
    let verified = openssl(
        work,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "9a.pem",
        ],
    )
    .unwrap();
    assert!(verified.contains("9a.pem: OK"), "{verified}");

    // The device page: change the PIN.
    chrome
        .goto(&stack.url(&format!("/devices/{SERIAL}")))
        .await
        .unwrap();
    chrome.wait_agent_state("running").await.unwrap();
    chrome.screenshot("device-active").await.unwrap();
    let form = "form[data-action=\"set-pin\"]";
    chrome.fill(form, "new_pin", SECOND_PIN).await.unwrap();
    chrome
        .fill(form, "new_pin_confirm", SECOND_PIN)
        .await
        .unwrap();
    chrome
        .click(&format!("{form} button[type=submit]"))
        .await
        .unwrap();
    let (class, text) = chrome.action_result().await;
    stack.check(class.contains("ok"), &format!("PIN change failed: {text}"));
    assert!(text.contains("The PIN was changed"), "{text}");
    assert!(
        pin_verifies(SERIAL, SECOND_PIN),
        "the new PIN verifies on the card"
    );
    assert_eq!(stack.escrow(SERIAL).await.unwrap()["pin"], SECOND_PIN);

    // An admin marks it lost on the device page: its certificate is revoked.
    chrome.logout().await.unwrap();
    chrome
        .login(stack.app.base_url(), "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    chrome.goto(&stack.url("/devices")).await.unwrap();
    chrome
        .wait_for(&format!("a[href=\"/devices/{SERIAL}\"]"))
        .await
        .unwrap();
    chrome.screenshot("devices-admin").await.unwrap();
    chrome
        .goto(&stack.url(&format!("/devices/{SERIAL}")))
        .await
        .unwrap();
    let state_form = format!("form[action=\"/devices/{SERIAL}/state\"]");
    chrome
        .find(&format!("{state_form} select[name=state]"))
        .await
        .unwrap()
        .select_by_value("lost")
        .await
        .unwrap();
    chrome
        .fill(&state_form, "reason", "left on a train")
        .await
        .unwrap();
    chrome
        .click(&format!("{state_form} button[type=submit]"))
        .await
        .unwrap();
    chrome.wait_for(".badge.state-lost").await.unwrap();
    let dev = stack.device(SERIAL).await.unwrap();
    assert_eq!(dev["device"]["state"], "lost", "{dev}");
    assert!(
        dev["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "revoked"),
        "{dev}"
    );
    // The CRL is rebuilt in the background after a revocation
    // (docs/openbao.md, "Revocation"): it lists the certificate then.
    let (st, w, cs) = (&stack, work, &cert_serial);
    let listed = kleidia_tests::wait_until(std::time::Duration::from_secs(60), || async move {
        std::fs::write(w.join("crl.der"), st.fetch("/pki/crl").await.unwrap()).unwrap();
        openssl(
            w,
            &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
        )
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .any(|sn| hex_serial(sn) == *cs)
    })
    .await;
    assert!(listed, "certificate {cert_serial} is not in the CRL");

    // The key is plugged into the admin's workstation: the page offers to wipe it.
    chrome.goto(&stack.url("/")).await.unwrap();
    chrome.wait_agent_state("running").await.unwrap();
    let offer = chrome
        .wait_for(&format!("#wipe-offers [data-wipe-offer=\"{SERIAL}\"]"))
        .await
        .unwrap();
    assert!(offer
        .text()
        .await
        .unwrap()
        .contains("is lost and plugged into this computer"));
    chrome.screenshot("wipe-offer").await.unwrap();
    chrome
        .click(&format!("#wipe-offers [data-wipe-offer=\"{SERIAL}\"] a"))
        .await
        .unwrap();
    chrome.wait_for("form[data-action=\"wipe\"]").await.unwrap();
    chrome.wait_agent_state("running").await.unwrap();
    // Beside the wipe, how to reset FIDO2 by hand (issue 18 §6).
    let fido2 = chrome.wait_for("#wipe #fido2-reset").await.unwrap();
    assert!(
        fido2.text().await.unwrap().contains("FIDO2 credentials"),
        "the FIDO2 reset is explained"
    );
    chrome.screenshot("device-lost").await.unwrap();
    chrome.click("#fido2-reset summary").await.unwrap();
    chrome.screenshot("device-fido2-reset").await.unwrap();
    // The previous owner kept an OATH account on the key.
    ykman(
        reader,
        &[
            "oath",
            "accounts",
            "add",
            "-i",
            "GitHub",
            "old-owner",
            "JBSWY3DPEHPK3PXP",
        ],
    )
    .unwrap();
    chrome
        .click("form[data-action=\"wipe\"] button[type=submit]")
        .await
        .unwrap();
    let question = chrome.accept_confirm().await.unwrap();
    assert!(
        question.contains(&format!("Wipe YubiKey {SERIAL}?")),
        "{question}"
    );
    let (class, text) = chrome.action_result().await;
    stack.check(class.contains("ok"), &format!("wipe failed: {text}"));
    assert!(text.contains("OATH accounts were deleted"), "{text}");
    chrome.wait_for(".badge.state-returned").await.unwrap();
    chrome.screenshot("device-returned").await.unwrap();

    // Back in factory state, on the card and in Kleidia.
    let dev = stack.device(SERIAL).await.unwrap();
    assert_eq!(dev["device"]["state"], "returned", "{dev}");
    assert!(dev["device"]["owner_username"].is_null(), "{dev}");
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(info.contains("WARNING: Using default PIN!"), "{info}");
    assert!(
        info.contains("WARNING: Using default Management key!"),
        "{info}"
    );
    // ykman warns of no default PUK: using it shows it is the factory one.
    let mut yk = open(SERIAL);
    yk.verify_pin(DEFAULT_PIN).unwrap();
    yk.change_puk(DEFAULT_PUK, DEFAULT_PUK).unwrap();
    drop(yk);
    let slot = ykman(reader, &["piv", "certificates", "export", "9a", "-"]);
    assert!(slot.is_err(), "slot 9a still holds a certificate: {slot:?}");
    let oath = ykman(reader, &["oath", "accounts", "list"]).unwrap();
    assert_eq!(oath, "", "the previous owner's OATH accounts are gone");

    chrome.close().await;
}
