//! The app's side of the license (issue 8): the license page and API, and
//! enforcement, against the real `kleidia serve`, the real
//! `kleidia-license serve` (with a token that carries only the
//! `kleidia-license` policy and a shared API token), PostgreSQL and a
//! bootstrapped OpenBao of the test's own. Licenses are signed with the
//! committed TEST vendor key by `kleidia-license issue`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kleidia_tests::app::{AppOptions, KleidiaApp};
use kleidia_tests::bao::{bootstrapped_bao, BaoClient};
use kleidia_tests::client::{cli_create_user, Api, Browser, ADMIN_PASSWORD};
use kleidia_tests::{bin_path, free_port, workspace_root, ChildGuard, TestBao, TestDb};
use rand::rngs::OsRng;
use rand::Rng;
use reqwest::StatusCode;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

const DAY: i64 = 86_400;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn license_command() -> Command {
    let mut c = Command::new(bin_path("kleidia-license"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KLEIDIA_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

/// `kleidia-license serve` on a fixed port (so it can be restarted where the
/// app expects it). Its `KLEIDIA_LICENSE_*` variables are set on it alone.
struct LicenseService {
    proc: ChildGuard,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl LicenseService {
    async fn spawn(
        port: u16,
        bao_addr: &str,
        bao_token: &str,
        api_token: &str,
        extra: &[(&str, String)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("license.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = license_command();
        cmd.arg("serve")
            .env("KLEIDIA_LICENSE_LISTEN", format!("127.0.0.1:{port}"))
            .env("KLEIDIA_LICENSE_OPENBAO_ADDR", bao_addr)
            .env("KLEIDIA_LICENSE_OPENBAO_TOKEN", bao_token)
            .env("KLEIDIA_LICENSE_API_TOKEN", api_token)
            .env("KLEIDIA_LICENSE_SHUTDOWN_GRACE_SECS", "2")
            .env("RUST_LOG", "debug");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut me = Self {
            proc: ChildGuard::new("kleidia-license", child),
            log_path,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = me
                .proc
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("kleidia-license exited with {st}; log:\n{}", me.log());
            }
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
            {
                if r.status().is_success() {
                    return me;
                }
            }
            assert!(
                Instant::now() < deadline,
                "kleidia-license did not come up; log:\n{}",
                me.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// One installation: a bootstrapped OpenBao, a database, the license
/// service and the app (license status cache off, so every check asks).
struct Site {
    bao: TestBao,
    root_bao: BaoClient,
    db: TestDb,
    app: KleidiaApp,
    license: Option<LicenseService>,
    license_port: u16,
    license_bao_token: String,
    api_token: String,
    dir: tempfile::TempDir,
}

impl Site {
    async fn start() -> Site {
        let (bao, root_bao) = bootstrapped_bao().await.unwrap();
        let app_token = root_bao
            .token_with_policies(&["kleidia-app"])
            .await
            .unwrap();
        let license_bao_token = root_bao
            .token_with_policies(&["kleidia-license"])
            .await
            .unwrap();
        let api_token = format!("license-api-{}", uuid::Uuid::new_v4().simple());
        let license_port = free_port();
        let license =
            LicenseService::spawn(license_port, &bao.addr, &license_bao_token, &api_token, &[])
                .await;
        let db = TestDb::new().await.unwrap();
        let app = KleidiaApp::spawn(AppOptions {
            database_url: db.url.clone(),
            bao_addr: bao.addr.clone(),
            bao_token: app_token,
            env: vec![
                (
                    "KLEIDIA_LICENSE_URL".into(),
                    format!("http://127.0.0.1:{license_port}"),
                ),
                ("KLEIDIA_LICENSE_API_TOKEN".into(), api_token.clone()),
                ("KLEIDIA_LICENSE_CACHE_SECS".into(), "0".into()),
                ("KLEIDIA_LICENSE_TIMEOUT_SECS".into(), "2".into()),
            ],
        })
        .await
        .unwrap();
        cli_create_user(&db.url, "admin", "admin", ADMIN_PASSWORD).unwrap();
        Site {
            bao,
            root_bao,
            db,
            app,
            license: Some(license),
            license_port,
            license_bao_token,
            api_token,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn stop_license_service(&mut self) {
        if let Some(mut l) = self.license.take() {
            l.proc.stop();
        }
    }

    /// Restart the license service on the same port (and OpenBao), with `extra` env.
    async fn restart_license_service(&mut self, extra: &[(&str, String)]) {
        self.stop_license_service();
        self.license = Some(
            LicenseService::spawn(
                self.license_port,
                &self.bao.addr,
                &self.license_bao_token,
                &self.api_token,
                extra,
            )
            .await,
        );
    }

    /// The installation id, asked of the service directly (with the API token).
    async fn installation_id(&self) -> String {
        let v: Value = reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/installation-id",
                self.license_port
            ))
            .bearer_auth(&self.api_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["installation_id"].as_str().unwrap().to_string()
    }

    /// A license file for this installation, signed with the TEST vendor key.
    async fn issue(&self, name: &str, not_after: i64, max_users: u32, max_devices: u32) -> Vec<u8> {
        let out = self.dir.path().join(format!("{name}.json"));
        let o = license_command()
            .arg("issue")
            .arg("--key")
            .arg(workspace_root().join("license/keys/test-vendor.key"))
            .args(["--installation-id", &self.installation_id().await])
            .args(["--customer", "Example Corp"])
            .args(["--license-id", name])
            .arg(format!("--issued=@{}", unix_now() - DAY))
            .arg(format!("--not-after=@{not_after}"))
            .args([
                "--max-users",
                &max_users.to_string(),
                "--max-devices",
                &max_devices.to_string(),
            ])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(&out).unwrap()
    }

    async fn admin_api(&self) -> Api {
        let mut a = Api::new(&self.app.base_url);
        a.login("admin", ADMIN_PASSWORD).await.unwrap();
        a
    }

    async fn admin_browser(&self) -> Browser {
        let b = Browser::new(&self.app.base_url);
        let r = b.login("admin", ADMIN_PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        b
    }

    async fn page(&self, b: &Browser) -> String {
        let (s, _, html) = b.get_text("/license").await;
        assert_eq!(s, StatusCode::OK, "{html}");
        html
    }

    /// A signed-in person with an agent key registered on their API session.
    async fn person(&self, username: &str, role: &str) -> Person {
        let admin = self.admin_api().await;
        let password = format!("{username}-long-password-1");
        let (s, v) = admin
            .post_json(
                "/api/users",
                &json!({"username": username, "role": role, "display_name": username, "password": password}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let mut api = Api::new(&self.app.base_url);
        api.login(username, &password).await.unwrap();
        let key = RsaPrivateKey::new(&mut OsRng, 3072).unwrap();
        let pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let sid = api.session_id.clone().unwrap();
        let (s, v) = api
            .post_json(
                &format!("/api/session/{sid}/register-agent"),
                &json!({"public_key": pem}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        Person { api }
    }

    async fn device_count(&self) -> i64 {
        let pool = self.db.pool().await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM devices")
            .fetch_one(&pool)
            .await
            .unwrap()
    }

    /// `details` of every `license.upload` audit row, oldest first.
    async fn upload_audit(&self) -> Vec<Value> {
        let pool = self.db.pool().await.unwrap();
        sqlx::query_scalar(
            "SELECT details FROM audit_log WHERE action = 'license.upload' ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    }

    /// Current KV version of the service's license list (0: nothing stored).
    async fn stored_licenses_version(&self) -> u64 {
        let (s, v) = self
            .root_bao
            .call("GET", "license/metadata/kleidia/licenses", None)
            .await
            .unwrap();
        if s == StatusCode::NOT_FOUND {
            return 0;
        }
        v["data"]["current_version"].as_u64().unwrap()
    }
}

struct Person {
    api: Api,
}

impl Person {
    async fn register(&self, serial: u32) -> (StatusCode, Value) {
        self.api
            .post_json(
                "/api/devices",
                &json!({"serial": serial, "firmware": "5.7.1"}),
            )
            .await
    }

    async fn authorize(&self, serial: u32, operation: &str) -> (StatusCode, Value) {
        self.api
            .post_json(
                &format!("/api/yubikey/{serial}/operations"),
                &json!({"operation": operation}),
            )
            .await
    }
}

fn random_serial() -> u32 {
    OsRng.gen_range(10_000_000..99_999_999)
}

/// The page's upload form, as a browser sends it (multipart/form-data).
async fn upload_through_page(b: &Browser, file: &[u8]) -> (StatusCode, Option<String>, String) {
    let boundary = "----kleidia-test-boundary-7f3a";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"license.json\"\r\n\
             Content-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"license\"\r\n\r\n\r\n--{boundary}--\r\n")
            .as_bytes(),
    );
    let r = b
        .http
        .post(b.url("/license"))
        .header("origin", &b.base)
        .header("sec-fetch-site", "same-origin")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (s, location, r.text().await.unwrap())
}

/// Flip one bit of the signed payload (the lowest bit of a base64 character
/// in its middle).
fn flip_one_payload_bit(doc: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut v: Value = serde_json::from_slice(doc).unwrap();
    let mut p = v["payload"].as_str().unwrap().as_bytes().to_vec();
    let i = p.len() / 2;
    let idx = ALPHABET.iter().position(|&c| c == p[i]).unwrap();
    p[i] = ALPHABET[idx ^ 1];
    v["payload"] = Value::String(String::from_utf8(p).unwrap());
    v.to_string().into_bytes()
}

#[tokio::test]
async fn a_fresh_installation_shows_trial_with_its_installation_id_and_the_trial_limits() {
    let site = Site::start().await;
    let id = site.installation_id().await;

    let b = site.admin_browser().await;
    let html = site.page(&b).await;
    assert!(html.contains(r#"id="license-status">TRIAL<"#), "{html}");
    assert!(html.contains(&id), "the installation id is shown: {html}");
    assert!(!html.contains("license-degraded"), "{html}");
    assert!(html.contains("New YubiKeys can be enrolled."), "{html}");
    assert!(html.contains("No license has been uploaded yet."), "{html}");
    // Admins find the page in the navigation.
    let (_, _, home) = b.get_text("/").await;
    assert!(home.contains(r#"href="/license""#), "{home}");

    let admin = site.admin_api().await;
    let (s, v) = admin.get("/api/license").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "TRIAL");
    assert_eq!(v["degraded"], false);
    assert_eq!(v["installation_id"], id.as_str());
    assert_eq!(v["limits"], json!({"max_users": 25, "max_devices": 25}));
    assert_eq!(v["usage"], json!({"users": 1, "devices": 0}));
    assert_eq!(v["new_enrollments"]["allowed"], true);
    assert_eq!(v["history"], json!([]));

    // Staff read the status; the page and uploads are for admins only.
    let help = site.person("helen", "helpdesk").await;
    let (s, v) = help.api.get("/api/license").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "TRIAL");
    let (s, _) = help.api.post_json("/api/license", &json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let user = site.person("ursula", "user").await;
    let (s, _) = user.api.get("/api/license").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_valid_license_uploaded_through_the_page_shows_valid_with_its_limits_and_is_audited() {
    let site = Site::start().await;
    let file = site.issue("L-page", unix_now() + 365 * DAY, 12, 40).await;
    let b = site.admin_browser().await;

    let (s, location, body) = upload_through_page(&b, &file).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(location.as_deref(), Some("/license?done=uploaded"));
    let (_, _, html) = b.get_text("/license?done=uploaded").await;
    assert!(html.contains("The license was accepted."), "{html}");
    assert!(html.contains(r#"id="license-status">VALID<"#), "{html}");
    assert!(html.contains("Example Corp"), "{html}");
    assert!(
        html.contains("<td>12</td>") || html.contains(">12<"),
        "{html}"
    );
    assert!(html.contains("40"), "{html}");
    assert!(
        html.contains("<code>L-page</code>"),
        "the history lists it: {html}"
    );
    assert!(
        html.contains(r#"<span class="badge ok">current</span>"#),
        "{html}"
    );

    let admin = site.admin_api().await;
    let (s, v) = admin.get("/api/license").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "VALID");
    assert_eq!(v["limits"], json!({"max_users": 12, "max_devices": 40}));
    assert_eq!(v["license"]["license_id"], "L-page");
    assert_eq!(
        v["history"][0]["uploaded_by"], "admin",
        "the service recorded who uploaded it"
    );

    // A renewal through the API replaces it; both stay in the history.
    let renewal = site.issue("L-api", unix_now() + 730 * DAY, 20, 80).await;
    let (s, v) = admin.post_bytes("/api/license", renewal).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "VALID", "{v}");
    assert_eq!(v["limits"], json!({"max_users": 20, "max_devices": 80}));
    let ids: Vec<&str> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["license_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["L-page", "L-api"]);

    let audit = site.upload_audit().await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0]["result"], "ok");
    assert_eq!(audit[0]["license_id"], "L-page");
    assert_eq!(audit[0]["status"], "VALID");
    assert_eq!(audit[1]["license_id"], "L-api");
    assert_eq!(site.stored_licenses_version().await, 2);
}

#[tokio::test]
async fn a_bit_flipped_license_is_refused_with_the_services_reason_and_nothing_is_stored() {
    let site = Site::start().await;
    let good = site
        .issue("L-flipped", unix_now() + 365 * DAY, 12, 40)
        .await;
    let bad = flip_one_payload_bit(&good);
    let b = site.admin_browser().await;

    let (s, _, html) = upload_through_page(&b, &bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains(r#"id="license-error""#), "{html}");
    assert!(html.contains("the license was refused:"), "{html}");
    assert!(
        html.contains("signature"),
        "the service's reason is shown: {html}"
    );
    assert!(html.contains("Nothing was stored."), "{html}");
    assert!(html.contains(r#"id="license-status">TRIAL<"#), "{html}");

    let admin = site.admin_api().await;
    let (s, v) = admin.post_bytes("/api/license", bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["message"].as_str().unwrap().contains("signature"), "{v}");

    // An empty upload never reaches the service.
    let (s, _, html) = upload_through_page(&b, b"").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("choose the license file"), "{html}");

    // Nothing stored: still TRIAL, no history, no KV version.
    let (_, v) = admin.get("/api/license").await;
    assert_eq!(v["status"], "TRIAL", "{v}");
    assert_eq!(v["history"], json!([]));
    assert_eq!(site.stored_licenses_version().await, 0);
    let audit = site.upload_audit().await;
    assert_eq!(
        audit.len(),
        2,
        "both attempts that reached the service are audited: {audit:?}"
    );
    for a in &audit {
        assert_eq!(a["result"], "refused", "{a}");
        assert_eq!(a["error"], "bad_signature", "{a}");
    }
}

#[tokio::test]
async fn beyond_the_device_limit_a_new_registration_is_refused_while_a_pin_change_on_an_enrolled_key_is_authorised(
) {
    let site = Site::start().await;
    let file = site
        .issue("L-two-keys", unix_now() + 365 * DAY, 10, 2)
        .await;
    let admin = site.admin_api().await;
    let (s, _) = admin.post_bytes("/api/license", file).await;
    assert_eq!(s, StatusCode::OK);

    let alice = site.person("alice", "user").await;
    let (first, second, third) = (random_serial(), random_serial(), random_serial());
    for serial in [first, second] {
        let (s, v) = alice.register(serial).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = alice.register(third).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("allows 2 YubiKeys"),
        "the message names the limit: {msg}"
    );
    assert_eq!(
        site.device_count().await,
        2,
        "the refused key was not stored"
    );

    // Work on a key already in the fleet goes on.
    let (s, op) = alice.authorize(first, "set_pin").await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["agent_path"], "/piv/set-pin");

    // The page shows the limit reached and why enrollments are refused.
    let b = site.admin_browser().await;
    let html = site.page(&b).await;
    assert!(html.contains("limit reached"), "{html}");
    assert!(html.contains("New enrollments are refused"), "{html}");

    // A retired key frees its place.
    for state in ["revoked", "retired"] {
        let (s, v) = admin
            .post_json(
                &format!("/api/devices/{second}/state"),
                &json!({"state": state, "reason": "broken"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = alice.register(third).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn an_expired_license_refuses_new_enrollments_but_work_on_enrolled_keys_goes_on() {
    let mut site = Site::start().await;
    let file = site.issue("L-short", unix_now() + 2 * DAY, 10, 10).await;
    let admin = site.admin_api().await;
    let (s, _) = admin.post_bytes("/api/license", file).await;
    assert_eq!(s, StatusCode::OK);
    let alice = site.person("alice", "user").await;
    let enrolled = random_serial();
    let (s, v) = alice.register(enrolled).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Three days later (the service's test clock), the license has ended.
    site.restart_license_service(&[(
        "KLEIDIA_LICENSE_TEST_NOW",
        format!("@{}", unix_now() + 3 * DAY),
    )])
    .await;
    let (s, v) = admin.get("/api/license").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "EXPIRED", "{v}");
    assert_eq!(v["new_enrollments"]["allowed"], false);

    let (s, v) = alice.register(random_serial()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("EXPIRED"), "{msg}");
    assert!(msg.contains("keep working"), "{msg}");
    assert_eq!(site.device_count().await, 1);

    // Existing keys: a PIN change is authorised, an admin can revoke.
    let (s, op) = alice.authorize(enrolled, "set_pin").await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let (s, v) = admin
        .post_json(
            &format!("/api/devices/{enrolled}/state"),
            &json!({"state": "revoked", "reason": "left"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Accounts are not license-bound once it has ended: staff can still be added.
    let (s, v) = admin
        .post_json(
            "/api/users",
            &json!({"username": "henry", "role": "helpdesk", "display_name": "Henry", "password": "henry-long-password-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let b = site.admin_browser().await;
    let html = site.page(&b).await;
    assert!(html.contains(r#"id="license-status">EXPIRED<"#), "{html}");
    assert!(html.contains("New enrollments are refused"), "{html}");
    assert!(!html.contains("license-clock"), "{html}");

    // Back to the real clock, three days behind what the service has seen:
    // the license stays expired and the page warns about the rollback.
    site.restart_license_service(&[]).await;
    let (_, v) = admin.get("/api/license").await;
    assert_eq!(v["status"], "EXPIRED", "{v}");
    assert_eq!(v["clock_rollback"], true, "{v}");
    let html = site.page(&b).await;
    assert!(html.contains(r#"id="license-clock""#), "{html}");
    let (s, _) = alice.register(random_serial()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn beyond_the_user_limit_no_account_is_created_or_enabled_until_one_is_disabled() {
    let site = Site::start().await;
    let file = site
        .issue("L-two-users", unix_now() + 365 * DAY, 2, 10)
        .await;
    let admin = site.admin_api().await;
    let (s, _) = admin.post_bytes("/api/license", file).await;
    assert_eq!(s, StatusCode::OK);
    let new_user = |name: &str| json!({"username": name, "role": "user", "display_name": name, "password": format!("{name}-long-password-1")});
    let (s, alice) = admin.post_json("/api/users", &new_user("alice")).await;
    assert_eq!(s, StatusCode::CREATED, "{alice}");
    let (s, v) = admin.post_json("/api/users", &new_user("bob")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("allows 2 users"),
        "{v}"
    );
    let pool = site.db.pool().await.unwrap();
    let bobs: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE username = 'bob'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(bobs, 0);

    // A disabled account does not count.
    let id = alice["user"]["id"].as_str().unwrap();
    let (s, v) = admin
        .post_json(&format!("/api/users/{id}/disable"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = admin.post_json("/api/users", &new_user("bob")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Enabling her again would make three.
    let (s, v) = admin
        .post_json(&format!("/api/users/{id}/enable"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("allows 2 users"),
        "{v}"
    );
    let disabled: bool = sqlx::query_scalar("SELECT disabled FROM users WHERE username = 'alice'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(disabled);
    let (_, v) = admin.get("/api/license").await;
    assert_eq!(v["usage"]["users"], 2, "{v}");
}

#[tokio::test]
async fn with_the_license_service_down_the_app_falls_back_to_trial_and_says_it_is_degraded() {
    let mut site = Site::start().await;
    let file = site.issue("L-one-key", unix_now() + 365 * DAY, 10, 1).await;
    let admin = site.admin_api().await;
    let (s, _) = admin.post_bytes("/api/license", file.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let alice = site.person("alice", "user").await;
    let enrolled = random_serial();
    assert_eq!(alice.register(enrolled).await.0, StatusCode::CREATED);
    let next = random_serial();
    assert_eq!(
        alice.register(next).await.0,
        StatusCode::CONFLICT,
        "the license allows one key"
    );

    site.stop_license_service();

    let (s, v) = admin.get("/api/license").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "TRIAL", "{v}");
    assert_eq!(v["degraded"], true);
    assert_eq!(v["limits"], json!({"max_users": 25, "max_devices": 25}));
    let b = site.admin_browser().await;
    let html = site.page(&b).await;
    assert!(
        html.contains("Degraded: the license service is unreachable, TRIAL limits apply."),
        "{html}"
    );
    assert!(html.contains(r#"id="license-status">TRIAL<"#), "{html}");
    assert!(html.contains("The history is not available"), "{html}");

    // TRIAL behaviour: its limits, not the unreachable license's.
    let (s, v) = alice.register(next).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // And nothing on enrolled keys is blocked.
    let (s, op) = alice.authorize(enrolled, "set_pin").await;
    assert_eq!(s, StatusCode::CREATED, "{op}");

    // An upload cannot happen now, says so, and is audited.
    let (s, _, html) = upload_through_page(&b, &file).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{html}");
    assert!(
        html.contains("the license service is unreachable; nothing was uploaded"),
        "{html}"
    );
    let audit = site.upload_audit().await;
    assert_eq!(audit.last().unwrap()["result"], "error", "{audit:?}");

    // Back up: the license is in force again.
    site.restart_license_service(&[]).await;
    let (_, v) = admin.get("/api/license").await;
    assert_eq!(v["status"], "VALID", "{v}");
    assert_eq!(v["degraded"], false);
    let (s, _) = alice.register(random_serial()).await;
    assert_eq!(s, StatusCode::CONFLICT, "two keys against a limit of one");
}
