//! Issue 18 §7, in Chromium: creating a user shows the one-time password
//! once, and refreshing that page does not post the form again.

use kleidia_tests::browser::{Chrome, Stack};
use kleidia_tests::ADMIN_PASSWORD;

#[tokio::test]
async fn refreshing_after_creating_a_user_shows_an_empty_form_and_creates_nobody_twice() {
    let stack = Stack::start_without_key().await.unwrap();
    let chrome = Chrome::start().await.unwrap();
    chrome
        .login(stack.app.base_url(), "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    chrome.goto(&stack.url("/users/new")).await.unwrap();
    let form = "form[action=\"/users\"]";
    chrome.fill(form, "username", "zoe").await.unwrap();
    chrome
        .fill(form, "display_name", "Zoe Example")
        .await
        .unwrap();
    chrome
        .click("form[action=\"/users\"] button[type=submit]")
        .await
        .unwrap();
    let shown = chrome
        .wait_for("#one-time-password")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shown.len() >= 12, "a one-time password is shown: {shown:?}");
    chrome.screenshot("user-created").await.unwrap();
    let url = chrome.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/users/new", "the page's address is the form's");

    chrome.client.refresh().await.unwrap();
    chrome.wait_for(form).await.unwrap();
    assert!(!chrome.exists("#one-time-password").await);
    let value = chrome
        .find("form[action=\"/users\"] [name=username]")
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some(""), "the refreshed form is empty");

    // From outside the browser: one Zoe, created once, and the password
    // shown is hers.
    let admin = stack.app.admin_api().await;
    let (_, users) = admin.users("q=zoe").await;
    let zoes: Vec<_> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["username"] == "zoe")
        .collect();
    assert_eq!(zoes.len(), 1, "{users}");
    let (_, audit) = admin.audit("action=user.create").await;
    let creates: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.to_string().contains("zoe"))
        .collect();
    assert_eq!(creates.len(), 1, "{audit}");
    let zoe = stack.app.browser();
    let r = zoe.login("zoe", &shown).await;
    assert_eq!(r.headers()["location"], "/account/password", "{r:?}");
}

/// The pages of issue 18 §7 as a person sees them: each checked for what
/// the newcomer tripped over, and saved as a screenshot.
#[tokio::test]
async fn the_pages_a_newcomer_tripped_over_read_right_in_chromium() {
    let stack = Stack::start_without_key().await.unwrap();
    let admin = stack.app.admin_api().await;
    let (s, v) = admin.register_device(69_001, "5.7.1").await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
    // Two failed sign-ins, for the lockouts page.
    for _ in 0..2 {
        let r = stack.app.browser().login("ghost", "not-a-password-1").await;
        assert_ne!(r.status(), reqwest::StatusCode::SEE_OTHER);
    }

    let chrome = Chrome::start().await.unwrap();
    chrome
        .login(stack.app.base_url(), "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    chrome.goto(&stack.url("/")).await.unwrap();
    let fleet = chrome.text("h2").await.unwrap();
    assert_eq!(fleet, "The fleet: 1 YubiKey");
    chrome.screenshot("dashboard-admin").await.unwrap();

    chrome.goto(&stack.url("/lockouts")).await.unwrap();
    let rows = chrome.text("table tbody").await.unwrap();
    let row = rows.lines().find(|l| l.contains("ghost"));
    assert!(
        row.is_some_and(|r| r.contains(" UTC")),
        "the account's failures, with the time zone: {rows:?}"
    );
    chrome.screenshot("lockouts").await.unwrap();

    chrome
        .goto(&stack.url("/audit?action=device.register"))
        .await
        .unwrap();
    let details = chrome.text("td.details").await.unwrap();
    assert!(
        !details.trim_start().starts_with('{'),
        "details are lines, not raw JSON: {details:?}"
    );
    assert!(details.contains("firmware 5.7.1"), "{details:?}");
    chrome.screenshot("audit").await.unwrap();
    chrome.logout().await.unwrap();

    // Someone who must still choose a password: the form, no menu.
    let (s, v) = admin
        .create_user(&serde_json::json!({
            "username": "otto", "role": "helpdesk", "display_name": "Otto",
            "password": "chosen-by-admin-1"}))
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
    chrome
        .goto(&format!("{}/login", stack.app.base_url()))
        .await
        .unwrap();
    let login = "form[action=\"/login\"]";
    chrome.fill(login, "username", "otto").await.unwrap();
    chrome
        .fill(login, "password", "chosen-by-admin-1")
        .await
        .unwrap();
    chrome
        .click("form[action=\"/login\"] button[type=submit]")
        .await
        .unwrap();
    chrome
        .wait_for("form[action=\"/account/password\"]")
        .await
        .unwrap();
    for link in ["/devices", "/audit", "/settings", "/my/devices"] {
        assert!(
            !chrome.exists(&format!("nav a[href=\"{link}\"]")).await,
            "{link} offered on the forced page"
        );
    }
    assert!(chrome.exists("form[action=\"/logout\"]").await);
    assert!(
        !chrome.exists("#agent-status").await,
        "no agent bar (\"Agent not running\") before the password is chosen"
    );
    chrome.screenshot("forced-password").await.unwrap();
    let form = "form[action=\"/account/password\"]";
    chrome
        .fill(form, "current", "chosen-by-admin-1")
        .await
        .unwrap();
    chrome
        .fill(form, "new", "otto-chose-his-own")
        .await
        .unwrap();
    chrome
        .fill(form, "confirm", "otto-chose-his-own")
        .await
        .unwrap();
    chrome
        .click("form[action=\"/account/password\"] button[type=submit]")
        .await
        .unwrap();
    chrome
        .wait_for("nav a[href=\"/my/devices\"]")
        .await
        .unwrap();
    assert!(
        chrome.exists("#agent-status").await,
        "the agent bar is back"
    );

    // A helpdesk user refused a page still sees who is signed in.
    chrome.goto(&stack.url("/settings")).await.unwrap();
    let page = chrome.page_text().await;
    assert!(page.contains("Otto") && page.contains("Sign out"), "{page}");
    assert!(!chrome.exists("header a[href=\"/login\"]").await, "{page}");
    chrome.screenshot("forbidden").await.unwrap();
}
