//! Kleidia's own listener serving HTTPS (`server.tls_cert_file`,
//! `server.tls_key_file`) for sites without a load balancer: a client that
//! trusts only the site's CA gets the configured certificate, the session
//! cookie is `Secure`, SIGHUP swaps in a new pair for new connections, and a
//! bad replacement leaves the old pair serving.

use std::path::Path;
use std::time::Duration;

use kleidia_tests::client::Browser;
use kleidia_tests::tls::TestCa;
use kleidia_tests::{openssl, wait_until, TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;

/// A server certificate for 127.0.0.1 from the site's CA: `{name}.pem` and
/// `{name}.key` in `dir`; returns the certificate's DER.
fn issue(ca: &TestCa, dir: &Path, name: &str) -> Vec<u8> {
    let (pem, der) = (format!("{name}.pem"), format!("{name}.der"));
    ca.issue_server(&dir.join(&pem), &dir.join(format!("{name}.key")))
        .unwrap();
    openssl(dir, &["x509", "-in", &pem, "-outform", "DER", "-out", &der]).unwrap();
    std::fs::read(dir.join(der)).unwrap()
}

/// Put `{name}.pem` and `{key}.key` where the server reads them.
fn install(dir: &Path, name: &str, key: &str) {
    std::fs::copy(dir.join(format!("{name}.pem")), dir.join("server.pem")).unwrap();
    std::fs::copy(dir.join(format!("{key}.key")), dir.join("server.key")).unwrap();
}

/// A client on a new connection that trusts only the test CA.
fn client(ca: &reqwest::Certificate) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .tls_built_in_root_certs(false)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

/// The certificate (DER) the app serves to a new connection.
async fn served(app: &TestApp, ca: &reqwest::Certificate) -> Vec<u8> {
    let r = client(ca).get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .expect("a TLS connection with a peer certificate")
        .to_vec()
}

/// SIGHUP, then wait until the log has one more line containing `what`.
async fn sighup_and_wait_for(app: &TestApp, what: &str) {
    let before = app.log().matches(what).count();
    app.sighup();
    let logged = wait_until(Duration::from_secs(10), || async {
        app.log().matches(what).count() > before
    })
    .await;
    assert!(logged, "no {what:?} after SIGHUP; log:\n{}", app.log());
}

#[tokio::test]
async fn the_listener_serves_https_and_sighup_swaps_the_certificate_but_never_for_a_bad_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let site = TestCa::generate(dir, "site").unwrap();
    let first = issue(&site, dir, "first");
    let second = issue(&site, dir, "second");
    let third = issue(&site, dir, "third");
    install(dir, "first", "first");
    let ca_pem = site.pem.clone();
    let ca = reqwest::Certificate::from_pem(&ca_pem).unwrap();
    let app = TestApp::builder()
        .https(&dir.join("server.pem"), &dir.join("server.key"), &ca_pem)
        .start()
        .await;
    assert!(app.base_url().starts_with("https://127.0.0.1:"));

    // Over TLS, with the configured certificate; plain HTTP gets nothing.
    assert_eq!(served(&app, &ca).await, first);
    let plain = app.base_url().replace("https://", "http://");
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());
    // A client that trusts the usual roots, not the site's CA, refuses it.
    assert!(reqwest::get(app.url("/healthz")).await.is_err());

    // Signing in over HTTPS sets the Secure, __Host- session cookie.
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let browser = Browser {
        http: reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .tls_built_in_root_certs(false)
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        jar,
        base: app.base_url().to_string(),
    };
    let r = browser.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.contains("kleidia_session="))
        .expect("a session cookie");
    assert!(cookie.starts_with("__Host-kleidia_session="), "{cookie}");
    assert!(cookie.contains("; Secure"), "{cookie}");
    let (s, me) = browser.me().await;
    assert_eq!(s, StatusCode::OK, "signed in over HTTPS: {me}");
    assert_eq!(me["user"]["username"], "admin", "{me}");
    assert_eq!(me["via"], "browser", "{me}");

    // A renewed pair: SIGHUP, and new connections get it.
    install(dir, "second", "second");
    sighup_and_wait_for(&app, "TLS certificate and key reloaded").await;
    assert_eq!(served(&app, &ca).await, second);

    // A certificate whose key is not the one beside it is refused: the
    // second pair keeps serving.
    install(dir, "third", "second");
    sighup_and_wait_for(&app, "NOT reloaded").await;
    assert!(app.log().contains("does not go with"), "{}", app.log());
    assert_eq!(served(&app, &ca).await, second);
    assert_ne!(second, third);

    // So is a file that is no certificate at all.
    std::fs::write(dir.join("server.pem"), "not a certificate\n").unwrap();
    std::fs::copy(dir.join("third.key"), dir.join("server.key")).unwrap();
    sighup_and_wait_for(&app, "NOT reloaded").await;
    assert_eq!(served(&app, &ca).await, second);

    // Once the files are good again, the next SIGHUP takes them.
    install(dir, "third", "third");
    sighup_and_wait_for(&app, "TLS certificate and key reloaded").await;
    assert_eq!(served(&app, &ca).await, third);
}
