//! What the page says about the agent when it is missing or trusts another
//! site. No YubiKey is needed, so this test leaves the readers alone.

use kleidia_tests::browser::{AgentProc, Chrome, Stack};

#[tokio::test]
async fn the_page_says_when_the_agent_is_not_running_and_when_it_trusts_another_kleidia() {
    let mut stack = Stack::start_without_key().await.unwrap();
    let password = stack
        .create_user("carol", "user", "Carol Example")
        .await
        .unwrap();
    let chrome = Chrome::start().await.unwrap();
    chrome.goto(&stack.url("/login")).await.unwrap();
    chrome.wait_for("form[action=\"/login\"]").await.unwrap();
    chrome.screenshot("login").await.unwrap();
    chrome
        .login(stack.app.base_url(), "carol", &password)
        .await
        .unwrap();
    chrome.wait_agent_state("running").await.unwrap();
    assert!(!chrome
        .find("[data-agent-help=\"not-running\"]")
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());

    // Not running: the install help shows.
    stack.agent.stop();
    chrome.client.refresh().await.unwrap();
    chrome.wait_agent_state("not-running").await.unwrap();
    let help = chrome
        .find("[data-agent-help=\"not-running\"]")
        .await
        .unwrap();
    assert!(help.is_displayed().await.unwrap());
    assert!(help.text().await.unwrap().contains("installing the agent"));
    assert!(
        chrome
            .exists("[data-agent-help=\"not-running\"] a[href=\"/agent\"]")
            .await
    );
    chrome.screenshot("agent-not-running").await.unwrap();

    // An agent configured for another Kleidia answers, but refuses this origin.
    let mut other = AgentProc::new(
        &stack.dir.path().join("other"),
        stack.agent.port,
        "http://127.0.0.1:18080",
    );
    std::fs::create_dir_all(stack.dir.path().join("other")).unwrap();
    other.start().await.unwrap();
    chrome.click("#agent-retry").await.unwrap();
    chrome.wait_agent_state("wrong-origin").await.unwrap();
    let help = chrome
        .find("[data-agent-help=\"wrong-origin\"]")
        .await
        .unwrap();
    assert!(help.is_displayed().await.unwrap());
    assert!(help.text().await.unwrap().contains("--kleidia-url"));
    assert!(!chrome
        .find("[data-agent-help=\"not-running\"]")
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    chrome.screenshot("agent-wrong-origin").await.unwrap();
    other.stop();

    // The right agent again: found on the next check.
    stack.agent.start().await.unwrap();
    chrome.click("#agent-retry").await.unwrap();
    chrome.wait_agent_state("restarted").await.unwrap();

    chrome.close().await;
}
