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
