//! The license service (`kleidia-license serve`) and vendor tool, as real
//! processes against a test-owned OpenBao. The service runs with a token
//! that carries only the `kleidia-license` policy, so every test also checks
//! that it needs nothing beyond its own KV paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use kleidia_tests::bao::BaoClient;
use kleidia_tests::{bin_path, free_port, workspace_root, ChildGuard, TestBao};
use serde_json::{json, Value};

const DAY: i64 = 86_400;

/// The policy `kleidia bootstrap` writes for the license service.
const LICENSE_POLICY: &str = r#"
path "license/data/kleidia/*" { capabilities = ["create", "read", "update"] }
path "license/metadata/kleidia/*" { capabilities = ["read", "list"] }
"#;

/// Signature bytes R = the identity point (small order), s = 0, in base64.
const SMALL_ORDER_R_ZERO_S: &str =
    "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";

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

fn test_key() -> PathBuf {
    workspace_root().join("license/keys/test-vendor.key")
}

/// A test OpenBao with the `license` KV v2 mount and a token limited to the
/// license service's policy.
struct Bao {
    bao: TestBao,
    root: BaoClient,
    service_token: String,
}

impl Bao {
    async fn new() -> Self {
        let bao = TestBao::spawn().await.unwrap();
        let root = BaoClient::new(&bao.addr, &bao.token);
        root.post(
            "sys/mounts/license",
            &json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await
        .unwrap();
        root.post(
            "sys/policies/acl/kleidia-license",
            &json!({ "policy": LICENSE_POLICY }),
        )
        .await
        .unwrap();
        let service_token = root
            .token_with_policies(&["kleidia-license"])
            .await
            .unwrap();
        Self {
            bao,
            root,
            service_token,
        }
    }

    /// Current KV version of `license/kleidia/<name>` (0 when absent).
    async fn version(&self, name: &str) -> u64 {
        let (status, v) = self
            .root
            .call("GET", &format!("license/metadata/kleidia/{name}"), None)
            .await
            .unwrap();
        if status == 404 {
            return 0;
        }
        v["data"]["current_version"].as_u64().unwrap()
    }
}

struct Service {
    proc: ChildGuard,
    base: String,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Start `serve` without waiting for it.
    fn start(addr: &str, token: &str, env: &[(&str, String)]) -> Result<Self> {
        let port = free_port();
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join("license.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = license_command();
        cmd.arg("serve")
            .env("KLEIDIA_LICENSE_LISTEN", format!("127.0.0.1:{port}"))
            .env("KLEIDIA_LICENSE_OPENBAO_ADDR", addr)
            .env("KLEIDIA_LICENSE_OPENBAO_TOKEN", token)
            .env("KLEIDIA_LICENSE_SHUTDOWN_GRACE_SECS", "5")
            .env("RUST_LOG", "debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdout(log.try_clone()?).stderr(log).spawn()?;
        Ok(Self {
            proc: ChildGuard::new("kleidia-license", child),
            base: format!("http://127.0.0.1:{port}"),
            log_path,
            _dir: dir,
        })
    }

    /// Wait for `/healthz`; fail early with the log if the process exits.
    async fn ready(mut self) -> Result<Self> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(st) = self
                .proc
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("kleidia-license exited with {st}; log:\n{}", self.log());
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(self);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("kleidia-license did not come up; log:\n{}", self.log())
    }

    async fn spawn(bao: &Bao, env: &[(&str, String)]) -> Self {
        Self::start(&bao.bao.addr, &bao.service_token, env)
            .unwrap()
            .ready()
            .await
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> Value {
        let r = reqwest::get(self.url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}; log:\n{}", self.log());
        r.json().await.unwrap()
    }

    async fn status(&self) -> Value {
        self.get("/license/status").await
    }

    async fn installation_id(&self) -> String {
        self.get("/installation-id").await["installation_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn upload(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url("/license"))
            .header("x-kleidia-actor", "alice")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// SIGTERM and wait; asserts a clean exit (graceful shutdown).
    fn stop(mut self) {
        let st = self.proc.stop().unwrap();
        assert!(st.success(), "exit {st}; log:\n{}", self.log());
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

/// `kleidia-license issue` with the committed test key unless `key` is given.
fn issue(
    dir: &Path,
    name: &str,
    installation: &str,
    not_after: i64,
    key: Option<&Path>,
) -> PathBuf {
    let out = dir.join(name);
    let key = key.map(Path::to_path_buf).unwrap_or_else(test_key);
    let o = run(license_command()
        .arg("issue")
        .arg("--key")
        .arg(&key)
        .args(["--installation-id", installation])
        .args(["--customer", "Example Corp"])
        .args(["--license-id", name])
        .arg(format!("--issued=@{}", unix_now() - 60 * DAY))
        .arg(format!("--not-after=@{not_after}"))
        .args(["--max-devices", "40", "--max-users", "12"])
        .args(["--feature", "audit-export"])
        .arg("--out")
        .arg(&out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Flip the lowest bit of one base64 character in the middle of the payload:
/// exactly one bit of the signed bytes changes.
fn flip_one_payload_bit(doc: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut v: Value = serde_json::from_str(doc).unwrap();
    let mut p = v["payload"].as_str().unwrap().as_bytes().to_vec();
    let i = p.len() / 2;
    let idx = ALPHABET.iter().position(|&c| c == p[i]).unwrap();
    p[i] = ALPHABET[idx ^ 1];
    v["payload"] = Value::String(String::from_utf8(p).unwrap());
    v.to_string()
}

#[tokio::test]
async fn a_fresh_installation_is_in_trial_and_keeps_its_id_and_trial_start_across_a_restart() {
    let bao = Bao::new().await;
    let before = unix_now();
    let svc = Service::spawn(&bao, &[]).await;
    let s = svc.status().await;
    assert_eq!(s["status"], "TRIAL", "{s}");
    assert_eq!(s["degraded"], false);
    assert_eq!(s["days_left"], 30, "{s}");
    assert_eq!(s["limits"], json!({"max_users": 25, "max_devices": 25}));
    let started = s["trial_started_at"].as_i64().unwrap();
    assert!(started >= before - 1 && started <= unix_now() + 1, "{s}");
    assert_eq!(s["trial_ends_at"].as_i64().unwrap(), started + 30 * DAY);
    let id = svc.installation_id().await;
    assert_eq!(s["installation_id"], id.as_str());
    svc.stop();

    let svc = Service::spawn(&bao, &[]).await;
    assert_eq!(svc.installation_id().await, id);
    let s = svc.status().await;
    assert_eq!(s["status"], "TRIAL", "{s}");
    assert_eq!(s["trial_started_at"].as_i64().unwrap(), started, "{s}");
    assert_eq!(bao.version("installation").await, 1);
}

#[tokio::test]
async fn two_instances_starting_together_agree_on_one_installation_id() {
    let bao = Bao::new().await;
    let a = Service::start(&bao.bao.addr, &bao.service_token, &[]).unwrap();
    let b = Service::start(&bao.bao.addr, &bao.service_token, &[]).unwrap();
    let (a, b) = tokio::join!(a.ready(), b.ready());
    let (a, b) = (a.unwrap(), b.unwrap());
    let id = a.installation_id().await;
    assert_eq!(b.installation_id().await, id);
    assert_eq!(
        a.status().await["trial_started_at"],
        b.status().await["trial_started_at"]
    );
    // Written exactly once: the loser of the check-and-set read the winner's id.
    assert_eq!(bao.version("installation").await, 1);
}

#[tokio::test]
async fn a_valid_license_uploads_and_reports_valid_with_its_limits_and_history() {
    let bao = Bao::new().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::spawn(&bao, &[]).await;
    let id = svc.installation_id().await;
    let file = issue(dir.path(), "L-valid", &id, unix_now() + 365 * DAY, None);

    let (code, s) = svc.upload(std::fs::read(&file).unwrap()).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["status"], "VALID", "{s}");
    assert_eq!(s["limits"], json!({"max_users": 12, "max_devices": 40}));
    assert_eq!(s["license"]["customer"], "Example Corp");
    assert_eq!(s["license"]["features"], json!(["audit-export"]));
    assert_eq!(s["days_left"], 365, "{s}");

    let h = svc.get("/license/history").await;
    let entries = h["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{h}");
    assert_eq!(entries[0]["license_id"], "L-valid");
    assert_eq!(entries[0]["uploaded_by"], "alice");
    assert_eq!(entries[0]["current"], true);

    // Uploading the same file again changes nothing.
    let (code, _) = svc.upload(std::fs::read(&file).unwrap()).await;
    assert_eq!(code, 200);
    assert_eq!(bao.version("licenses").await, 1);
    svc.stop();

    // A newer license replaces it; both stay in the history.
    let svc = Service::spawn(&bao, &[]).await;
    assert_eq!(svc.status().await["status"], "VALID");
    let file2 = issue(dir.path(), "L-renewal", &id, unix_now() + 730 * DAY, None);
    let (code, s) = svc.upload(std::fs::read(&file2).unwrap()).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["license"]["license_id"], "L-renewal");
    let h = svc.get("/license/history").await;
    let ids: Vec<&str> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["license_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["L-valid", "L-renewal"]);
    assert_eq!(h["entries"][1]["current"], true);
}

#[tokio::test]
async fn every_refused_upload_says_why_and_leaves_the_license_and_history_unchanged() {
    let bao = Bao::new().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::spawn(&bao, &[]).await;
    let id = svc.installation_id().await;
    let good = std::fs::read_to_string(issue(
        dir.path(),
        "L-good",
        &id,
        unix_now() + 100 * DAY,
        None,
    ))
    .unwrap();
    let (code, _) = svc.upload(good.clone()).await;
    assert_eq!(code, 200);
    let status_before = svc.status().await;
    let history_before = svc.get("/license/history").await;
    let version_before = bao.version("licenses").await;

    let other_key_dir = dir.path().join("other-vendor");
    let o = run(license_command()
        .arg("keygen")
        .arg("--out")
        .arg(&other_key_dir));
    assert!(o.status.success());
    let mut small_order: Value = serde_json::from_str(&good).unwrap();
    small_order["signature"] = Value::String(SMALL_ORDER_R_ZERO_S.into());
    let mut extra_field: Value = serde_json::from_str(&good).unwrap();
    extra_field["max_devices"] = json!(100000);

    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        (
            "bit-flipped",
            flip_one_payload_bit(&good),
            422,
            "bad_signature",
            "does not verify",
        ),
        (
            "another installation",
            read(issue(
                dir.path(),
                "L-other-inst",
                "some-other-installation",
                unix_now() + DAY,
                None,
            )),
            422,
            "wrong_installation",
            "some-other-installation",
        ),
        (
            "expired",
            read(issue(dir.path(), "L-expired", &id, unix_now() - DAY, None)),
            422,
            "expired",
            "ended",
        ),
        (
            "another key",
            read(issue(
                dir.path(),
                "L-other-key",
                &id,
                unix_now() + DAY,
                Some(&other_key_dir.join("vendor.key")),
            )),
            422,
            "bad_signature",
            "another key",
        ),
        (
            "small-order R",
            small_order.to_string(),
            422,
            "bad_signature",
            "does not verify",
        ),
        (
            "malformed JSON",
            "{\"format\": \"kleidia-license-v1\", ".into(),
            400,
            "malformed",
            "malformed",
        ),
        (
            "unknown field",
            extra_field.to_string(),
            400,
            "malformed",
            "max_devices",
        ),
        ("empty body", String::new(), 400, "malformed", "malformed"),
        (
            "oversized",
            format!("{good}{}", " ".repeat(20_000)),
            413,
            "too_large",
            "larger than",
        ),
    ];
    for (name, body, want_code, want_error, want_in_message) in cases {
        let (code, body) = svc.upload(body).await;
        assert_eq!(code, want_code, "{name}: {body}");
        assert_eq!(body["error"], want_error, "{name}: {body}");
        let msg = body["message"].as_str().unwrap();
        assert!(msg.contains(want_in_message), "{name}: {msg}");
    }
    // A body far beyond the cap is cut off, not buffered: the client sees
    // either the 413 or the connection closed under its upload.
    let r = reqwest::Client::new()
        .post(svc.url("/license"))
        .body(vec![b'x'; 8 * 1024 * 1024])
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }

    assert_eq!(bao.version("licenses").await, version_before);
    assert_eq!(svc.get("/license/history").await, history_before);
    let mut status_after = svc.status().await;
    status_after["checked_at"] = status_before["checked_at"].clone();
    status_after["days_left"] = status_before["days_left"].clone();
    assert_eq!(status_after, status_before);
}

#[tokio::test]
async fn a_license_within_the_window_is_expiring_and_after_its_end_expired() {
    let bao = Bao::new().await;
    let dir = tempfile::tempdir().unwrap();
    let window = [("KLEIDIA_LICENSE_EXPIRING_DAYS", "14".to_string())];
    let svc = Service::spawn(&bao, &window).await;
    let id = svc.installation_id().await;
    let not_after = unix_now() + 10 * DAY;
    let file = issue(dir.path(), "L-short", &id, not_after, None);
    let (code, s) = svc.upload(std::fs::read(&file).unwrap()).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["status"], "EXPIRING", "{s}");
    assert_eq!(s["days_left"], 10, "{s}");
    assert_eq!(s["limits"]["max_devices"], 40, "{s}");
    svc.stop();

    // Same window, 11 days later.
    let later = [
        window[0].clone(),
        (
            "KLEIDIA_LICENSE_TEST_NOW",
            format!("@{}", unix_now() + 11 * DAY),
        ),
    ];
    let svc = Service::spawn(&bao, &later).await;
    let s = svc.status().await;
    assert_eq!(s["status"], "EXPIRED", "{s}");
    assert_eq!(s["limits"], Value::Null, "{s}");
    assert!(s["reason"].as_str().unwrap().contains("L-short"), "{s}");
}

#[tokio::test]
async fn turning_the_clock_back_does_not_extend_the_trial_and_is_reported() {
    let bao = Bao::new().await;
    let svc = Service::spawn(&bao, &[]).await;
    assert_eq!(svc.status().await["status"], "TRIAL");
    svc.stop();

    let ahead = unix_now() + 31 * DAY;
    let svc = Service::spawn(&bao, &[("KLEIDIA_LICENSE_TEST_NOW", format!("@{ahead}"))]).await;
    let s = svc.status().await;
    assert_eq!(s["status"], "EXPIRED", "{s}");
    assert_eq!(s["clock_rollback"], false);
    svc.stop();

    // Back on the real clock, 31 days "earlier".
    let svc = Service::spawn(&bao, &[]).await;
    let s = svc.status().await;
    assert_eq!(s["status"], "EXPIRED", "{s}");
    assert_eq!(s["clock_rollback"], true, "{s}");
    assert!(s["checked_at"].as_i64().unwrap() >= ahead, "{s}");
    assert!(s["reason"].as_str().unwrap().contains("clock"), "{s}");
    assert!(
        svc.log().contains("system clock is behind"),
        "{}",
        svc.log()
    );
}

#[tokio::test]
async fn turning_the_clock_back_does_not_un_expire_a_license() {
    let bao = Bao::new().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::spawn(&bao, &[]).await;
    let id = svc.installation_id().await;
    let file = issue(dir.path(), "L-months", &id, unix_now() + 100 * DAY, None);
    let (code, s) = svc.upload(std::fs::read(&file).unwrap()).await;
    assert_eq!((code, s["status"].as_str()), (200, Some("VALID")), "{s}");
    svc.stop();

    let svc = Service::spawn(
        &bao,
        &[(
            "KLEIDIA_LICENSE_TEST_NOW",
            format!("@{}", unix_now() + 101 * DAY),
        )],
    )
    .await;
    assert_eq!(svc.status().await["status"], "EXPIRED");
    svc.stop();

    let svc = Service::spawn(&bao, &[]).await;
    let s = svc.status().await;
    assert_eq!(s["status"], "EXPIRED", "{s}");
    assert_eq!(s["clock_rollback"], true, "{s}");
    // And the license cannot be uploaded again as if it were still valid.
    let (code, body) = svc.upload(std::fs::read(&file).unwrap()).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error"], "expired");
}

#[tokio::test]
async fn a_test_clock_earlier_than_the_system_clock_is_refused() {
    let bao = Bao::new().await;
    let svc = Service::start(
        &bao.bao.addr,
        &bao.service_token,
        &[("KLEIDIA_LICENSE_TEST_NOW", "2020-01-01T00:00:00Z".into())],
    )
    .unwrap();
    let err = svc.ready().await.err().expect("must not start").to_string();
    assert!(err.contains("only move the clock forward"), "{err}");
    assert_eq!(bao.version("installation").await, 0, "nothing written");
}

#[tokio::test]
async fn serve_fails_with_a_clear_message_when_the_license_mount_is_missing() {
    let bao = TestBao::spawn().await.unwrap();
    let svc = Service::start(&bao.addr, &bao.token, &[]).unwrap();
    let err = svc.ready().await.err().expect("must not start").to_string();
    assert!(err.contains("no KV v2 mount \"license\""), "{err}");
    assert!(err.contains("kleidia bootstrap"), "{err}");
}

#[tokio::test]
async fn an_unknown_config_key_is_refused_naming_it_and_secrets_stay_out_of_the_output() {
    let o = run(license_command()
        .arg("serve")
        .env("KLEIDIA_LICENSE_OPENBAO_TOKEN", "super-secret-token-value")
        .env("KLEIDIA_LICENSE_LISTEN_PORT", "1"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("listen_port"), "{err}");
    assert!(!err.contains("super-secret-token-value"), "{err}");
}

#[tokio::test]
async fn with_an_api_token_every_endpoint_but_healthz_needs_it() {
    let bao = Bao::new().await;
    let token = "app-shared-token-0123456789abcdef";
    let svc = Service::spawn(&bao, &[("KLEIDIA_LICENSE_API_TOKEN", token.into())]).await;
    let http = reqwest::Client::new();
    for path in ["/license/status", "/license/history", "/installation-id"] {
        let r = http.get(svc.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http
            .get(svc.url(path))
            .bearer_auth("wrong-token-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http
            .get(svc.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = http
        .post(svc.url("/license"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let r = http.get(svc.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(bao.version("licenses").await, 0);
}

#[tokio::test]
async fn inspect_says_whether_a_license_verifies_with_the_compiled_in_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = issue(dir.path(), "L-inspect", "inst-x", unix_now() + DAY, None);
    let o = run(license_command().arg("inspect").arg(&good));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("inst-x") && out.contains("signature:       VALID"),
        "{out}"
    );
    assert!(out.contains("TEST key"), "{out}");

    let o = run(license_command()
        .arg("keygen")
        .arg("--out")
        .arg(dir.path().join("k")));
    assert!(o.status.success());
    let other = issue(
        dir.path(),
        "L-inspect-other",
        "inst-x",
        unix_now() + DAY,
        Some(&dir.path().join("k/vendor.key")),
    );
    let o = run(license_command().arg("inspect").arg(&other));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("DOES NOT VERIFY"));
    let o = run(license_command()
        .arg("inspect")
        .arg(&other)
        .arg("--pubkey")
        .arg(dir.path().join("k/vendor.pub")));
    assert!(o.status.success());
}

#[tokio::test]
async fn when_openbao_stops_readyz_status_and_upload_answer_503_and_the_process_stays_up() {
    let mut bao = Bao::new().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::spawn(&bao, &[]).await;
    let id = svc.installation_id().await;
    let file = issue(dir.path(), "L-down", &id, unix_now() + 100 * DAY, None);
    let r = reqwest::get(svc.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    bao.bao.proc.stop();
    let r = reqwest::get(svc.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);

    let r = reqwest::get(svc.url("/license/status")).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "storage_unavailable", "{body}");
    assert!(
        !body["message"].as_str().unwrap().contains("127.0.0.1"),
        "{body}"
    );
    let (code, body) = svc.upload(std::fs::read(&file).unwrap()).await;
    assert_eq!(code, 503, "{body}");
    let r = reqwest::get(svc.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(svc.log().contains("OpenBao"), "{}", svc.log());
}
