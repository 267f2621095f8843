//! Issue 18 §2, in Chromium: the import page previews a pasted CSV row by
//! row and imports only the good rows when the admin accepts a partial
//! import; the bulk page previews a filter's devices and applies the batch
//! the admin confirmed. Both post through htmx, so a refresh afterwards
//! shows the page again and never applies anything a second time.

use std::time::{Duration, Instant};

use kleidia_tests::browser::{Chrome, Stack};
use kleidia_tests::ADMIN_PASSWORD;
use serde_json::Value;

/// Wait until the text of `css` starts with `prefix` (an htmx swap replaces
/// an element of the same id, so waiting for the element is not enough).
async fn wait_text(chrome: &Chrome, css: &str, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = chrome.text(css).await.unwrap_or_default();
        if text.starts_with(prefix) {
            return text;
        }
        if Instant::now() > deadline {
            panic!(
                "{css} never read {prefix:?} (last {text:?}); page:\n{}",
                chrome.page_text().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn entries(v: &Value) -> Vec<Value> {
    v["entries"].as_array().cloned().unwrap_or_default()
}

const USERS: &str = "username,display_name,email,role\n\
    dana,Dana Scully,dana@corp.example,user\n\
    erin,Erin Example,erin@corp.example,helpdesk\n\
    frank,Frank,frank@corp.example,superuser";

#[tokio::test]
async fn an_admin_previews_a_users_csv_then_imports_the_good_rows_once() {
    let stack = Stack::start_without_key().await.unwrap();
    let chrome = Chrome::start().await.unwrap();
    let admin = stack.app.admin_api().await;
    chrome
        .login(stack.app.base_url(), "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    // The Users page leads there.
    chrome.goto(&stack.url("/users")).await.unwrap();
    chrome.click("a[href=\"/import\"]").await.unwrap();
    let form = "form[action=\"/import/users\"]";
    chrome.fill(form, "csv", USERS).await.unwrap();
    chrome
        .click(&format!("{form} button[value=preview]"))
        .await
        .unwrap();
    let head = wait_text(&chrome, "#import-report h2", "Preview").await;
    assert_eq!(head, "Preview: 2 rows good, 1 failing");
    let bad = chrome.text("#import-report tr.bad").await.unwrap();
    assert!(
        bad.contains("4") && bad.contains("refused") && bad.contains("role must be"),
        "the bad row names its line and its reason: {bad:?}"
    );
    chrome.screenshot("import-preview").await.unwrap();
    let (_, found) = admin.users("q=dana").await;
    assert_eq!(found["users"].as_array().unwrap().len(), 0, "{found}");

    // Import without accepting a partial import: refused, nothing created,
    // and the pasted text is still there for another try.
    chrome
        .click(&format!("{form} button[value=import]"))
        .await
        .unwrap();
    wait_text(&chrome, "#import-report h2", "Not imported").await;
    assert!(chrome.exists("#import-problem").await);
    let kept = chrome
        .find(&format!("{form} [name=csv]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(kept.trim_end(), USERS);
    let (_, found) = admin.users("q=dana").await;
    assert_eq!(found["users"].as_array().unwrap().len(), 0, "{found}");

    // Accept the partial import: the two good rows become accounts, each
    // with a one-time password shown once.
    chrome
        .click(&format!("{form} [name=accept_partial]"))
        .await
        .unwrap();
    chrome
        .click(&format!("{form} button[value=import]"))
        .await
        .unwrap();
    wait_text(
        &chrome,
        "#import-report h2",
        "Imported: 2 rows good, 1 failing",
    )
    .await;
    let passwords = chrome.text("#one-time-passwords tbody").await.unwrap();
    chrome.screenshot("import-done").await.unwrap();
    let dana_password = passwords
        .lines()
        .find_map(|l| l.strip_prefix("dana "))
        .unwrap_or_else(|| panic!("dana's one-time password is listed: {passwords:?}"))
        .trim()
        .to_string();
    assert!(passwords.contains("erin "), "{passwords:?}");
    assert!(!passwords.contains("frank"), "{passwords:?}");
    let url = chrome.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/import", "the page's address is still /import");

    // A refresh shows the empty page and imports nothing again.
    chrome.client.refresh().await.unwrap();
    chrome.wait_for(form).await.unwrap();
    assert!(!chrome.exists("#import-report").await);
    assert!(!chrome.exists("#one-time-passwords").await);

    // From outside the browser: Dana and Erin, created once each, Frank
    // not at all, one audited import batch.
    for (name, role) in [("dana", "user"), ("erin", "helpdesk")] {
        let (_, found) = admin.users(&format!("q={name}")).await;
        let users = found["users"].as_array().unwrap();
        assert_eq!(users.len(), 1, "{found}");
        assert_eq!(users[0]["role"], role, "{found}");
    }
    let (_, found) = admin.users("q=frank").await;
    assert_eq!(found["users"].as_array().unwrap().len(), 0, "{found}");
    let (_, audit) = admin.audit("action=user.import").await;
    assert_eq!(entries(&audit).len(), 1, "{audit}");
    let dana = stack.app.browser();
    let r = dana.login("dana", &dana_password).await;
    assert_eq!(r.headers()["location"], "/account/password", "{r:?}");
}

#[tokio::test]
async fn an_admin_marks_a_filtered_set_lost_from_the_bulk_page_once() {
    let stack = Stack::start_without_key().await.unwrap();
    let chrome = Chrome::start().await.unwrap();
    let admin = stack.app.admin_api().await;
    for s in [68_001, 68_002] {
        admin.register_device(s, "5.7.1").await;
    }
    admin.register_device(68_003, "5.4.3").await;
    chrome
        .login(stack.app.base_url(), "admin", ADMIN_PASSWORD)
        .await
        .unwrap();

    // From the filtered device list to the bulk page.
    chrome
        .goto(&stack.url("/devices?firmware=5.7.1"))
        .await
        .unwrap();
    chrome
        .click("#device-bulk a[href^=\"/devices/bulk\"]")
        .await
        .unwrap();
    chrome.wait_for("form.filters [name=action]").await.unwrap();
    let action = chrome.find("form.filters [name=action]").await.unwrap();
    action
        .select_by_value("lost")
        .await
        .expect("the action list offers mark-lost");
    chrome
        .click("form.filters button[type=submit]")
        .await
        .unwrap();
    // (The suspend preview the link opened has the same heading: wait for
    // the mark-lost one by its button, which names the action and count.)
    let button = wait_text(&chrome, "#bulk-preview button[type=submit]", "Mark lost").await;
    assert_eq!(button, "Mark lost 2 devices", "the button names the count");
    let head = chrome.text("#bulk-preview h2").await.unwrap();
    assert_eq!(head, "2 devices match; 2 will change");
    let rows = chrome.text("#bulk-preview tbody").await.unwrap();
    assert!(rows.contains("68001") && rows.contains("68002"), "{rows}");
    assert!(!rows.contains("68003"), "{rows}");
    chrome.screenshot("bulk-preview").await.unwrap();

    chrome
        .fill("#bulk-preview form", "reason", "left in a taxi")
        .await
        .unwrap();
    chrome
        .click("#bulk-preview button[type=submit]")
        .await
        .unwrap();
    let head = wait_text(&chrome, "#bulk-report h2", "Batch done").await;
    assert_eq!(head, "Batch done: 2 changed, 0 skipped, 0 failed");
    chrome.screenshot("bulk-done").await.unwrap();
    let url = chrome.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/devices/bulk");

    // A refresh previews again: nothing left to change, nothing applied.
    chrome.client.refresh().await.unwrap();
    let head = wait_text(&chrome, "#bulk-preview h2", "2 devices").await;
    assert_eq!(head, "2 devices match; 0 will change");
    assert!(!chrome.exists("#bulk-report").await);

    // From outside: exactly the two confirmed devices are lost, one batch.
    for (serial, state) in [(68_001, "lost"), (68_002, "lost"), (68_003, "registered")] {
        let d = stack.device(serial).await.unwrap();
        assert_eq!(d["device"]["state"], state, "{serial}: {d}");
    }
    let (_, audit) = admin.audit("action=device.bulk_lost").await;
    let batches = entries(&audit);
    assert_eq!(batches.len(), 1, "{audit}");
    assert!(batches[0].to_string().contains("left in a taxi"), "{audit}");
}
