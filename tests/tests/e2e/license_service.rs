//! The license service (`kleidia-license serve`) and vendor tool, as real
//! processes against a test-owned OpenBao. The service runs with a token
//! that carries only the `kleidia-license` policy, so every test also checks
//! that it needs nothing beyond its own KV paths.

use std::path::PathBuf;

use kleidia_tests::license::{
    flip_one_payload_bit, license_command, LicenseBao, LicenseOptions, LicenseService, LicenseSpec,
    DAY,
};
use kleidia_tests::{unix_now, TestBao};
use serde_json::{json, Value};

/// Signature bytes R = the identity point (small order), s = 0, in base64.
const SMALL_ORDER_R_ZERO_S: &str =
    "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";

#[tokio::test]
async fn a_fresh_installation_is_in_trial_and_keeps_its_id_and_trial_start_across_a_restart() {
    let bao = LicenseBao::start().await;
    let before = unix_now();
    let svc = bao.service().spawn().await;
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

    let svc = bao.service().spawn().await;
    assert_eq!(svc.installation_id().await, id);
    let s = svc.status().await;
    assert_eq!(s["status"], "TRIAL", "{s}");
    assert_eq!(s["trial_started_at"].as_i64().unwrap(), started, "{s}");
    assert_eq!(bao.version("installation").await, 1);
}

#[tokio::test]
async fn two_instances_starting_together_agree_on_one_installation_id() {
    let bao = LicenseBao::start().await;
    let a = LicenseService::start(&bao.service()).unwrap();
    let b = LicenseService::start(&bao.service()).unwrap();
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
    let bao = LicenseBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = bao.service().spawn().await;
    let id = svc.installation_id().await;
    let file = LicenseSpec::new("L-valid", &id, unix_now() + 365 * DAY).issue(dir.path());

    let (code, s) = svc.upload(std::fs::read(&file).unwrap()).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["status"], "VALID", "{s}");
    assert_eq!(s["limits"], json!({"max_users": 12, "max_devices": 40}));
    assert_eq!(s["license"]["customer"], "Example Corp");
    assert_eq!(s["license"]["features"], json!(["audit-export"]));
    assert_eq!(s["days_left"], 365, "{s}");

    let h = svc.history().await;
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
    let svc = bao.service().spawn().await;
    assert_eq!(svc.status().await["status"], "VALID");
    let file2 = LicenseSpec::new("L-renewal", &id, unix_now() + 730 * DAY).issue(dir.path());
    let (code, s) = svc.upload(std::fs::read(&file2).unwrap()).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["license"]["license_id"], "L-renewal");
    let h = svc.history().await;
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
    let bao = LicenseBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = bao.service().spawn().await;
    let id = svc.installation_id().await;
    let good = std::fs::read_to_string(
        LicenseSpec::new("L-good", &id, unix_now() + 100 * DAY).issue(dir.path()),
    )
    .unwrap();
    let (code, _) = svc.upload(good.clone()).await;
    assert_eq!(code, 200);
    let status_before = svc.status().await;
    let history_before = svc.history().await;
    let version_before = bao.version("licenses").await;

    let other_key_dir = dir.path().join("other-vendor");
    let o = license_command()
        .arg("keygen")
        .arg("--out")
        .arg(&other_key_dir)
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut small_order: Value = serde_json::from_str(&good).unwrap();
    small_order["signature"] = Value::String(SMALL_ORDER_R_ZERO_S.into());
    let mut extra_field: Value = serde_json::from_str(&good).unwrap();
    extra_field["max_devices"] = json!(100000);

    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        (
            "bit-flipped",
            String::from_utf8(flip_one_payload_bit(good.as_bytes())).unwrap(),
            422,
            "bad_signature",
            "does not verify",
        ),
        (
            "another installation",
            read(
                LicenseSpec::new("L-other-inst", "some-other-installation", unix_now() + DAY)
                    .issue(dir.path()),
            ),
            422,
            "wrong_installation",
            "some-other-installation",
        ),
        (
            "expired",
            read(LicenseSpec::new("L-expired", &id, unix_now() - DAY).issue(dir.path())),
            422,
            "expired",
            "ended",
        ),
        (
            "another key",
            read(
                LicenseSpec::new("L-other-key", &id, unix_now() + DAY)
                    .signed_with(&other_key_dir.join("vendor.key"))
                    .issue(dir.path()),
            ),
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
    assert_eq!(svc.history().await, history_before);
    let mut status_after = svc.status().await;
    status_after["checked_at"] = status_before["checked_at"].clone();
    status_after["days_left"] = status_before["days_left"].clone();
    assert_eq!(status_after, status_before);
}

#[tokio::test]
async fn a_license_within_the_window_is_expiring_and_after_its_end_expired() {
    let bao = LicenseBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    let window = bao.service().env("KLEIDIA_LICENSE_EXPIRING_DAYS", "14");
    let svc = window.spawn().await;
    let id = svc.installation_id().await;
    let not_after = unix_now() + 10 * DAY;
    let file = LicenseSpec::new("L-short", &id, not_after).issue(dir.path());
    let (code, s) = svc.upload(std::fs::read(&file).unwrap()).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["status"], "EXPIRING", "{s}");
    assert_eq!(s["days_left"], 10, "{s}");
    assert_eq!(s["limits"]["max_devices"], 40, "{s}");
    svc.stop();

    // Same window, 11 days later.
    let later = window.env(
        "KLEIDIA_LICENSE_TEST_NOW",
        &format!("@{}", unix_now() + 11 * DAY),
    );
    let svc = later.spawn().await;
    let s = svc.status().await;
    assert_eq!(s["status"], "EXPIRED", "{s}");
    assert_eq!(s["limits"], Value::Null, "{s}");
    assert!(s["reason"].as_str().unwrap().contains("L-short"), "{s}");
}

#[tokio::test]
async fn turning_the_clock_back_does_not_extend_the_trial_and_is_reported() {
    let bao = LicenseBao::start().await;
    let svc = bao.service().spawn().await;
    assert_eq!(svc.status().await["status"], "TRIAL");
    svc.stop();

    let ahead = unix_now() + 31 * DAY;
    let svc = bao
        .service()
        .env("KLEIDIA_LICENSE_TEST_NOW", &format!("@{ahead}"))
        .spawn()
        .await;
    let s = svc.status().await;
    assert_eq!(s["status"], "EXPIRED", "{s}");
    assert_eq!(s["clock_rollback"], false);
    svc.stop();

    // Back on the real clock, 31 days "earlier".
    let svc = bao.service().spawn().await;
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
    let bao = LicenseBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = bao.service().spawn().await;
    let id = svc.installation_id().await;
    let file = LicenseSpec::new("L-months", &id, unix_now() + 100 * DAY).issue(dir.path());
    let (code, s) = svc.upload(std::fs::read(&file).unwrap()).await;
    assert_eq!((code, s["status"].as_str()), (200, Some("VALID")), "{s}");
    svc.stop();

    let svc = bao
        .service()
        .env(
            "KLEIDIA_LICENSE_TEST_NOW",
            &format!("@{}", unix_now() + 101 * DAY),
        )
        .spawn()
        .await;
    assert_eq!(svc.status().await["status"], "EXPIRED");
    svc.stop();

    let svc = bao.service().spawn().await;
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
    let bao = LicenseBao::start().await;
    let svc = LicenseService::start(
        &bao.service()
            .env("KLEIDIA_LICENSE_TEST_NOW", "2020-01-01T00:00:00Z"),
    )
    .unwrap();
    let err = svc.ready().await.err().expect("must not start").to_string();
    assert!(err.contains("only move the clock forward"), "{err}");
    assert_eq!(bao.version("installation").await, 0, "nothing written");
}

#[tokio::test]
async fn serve_fails_with_a_clear_message_when_the_license_mount_is_missing() {
    let bao = TestBao::spawn().await.unwrap();
    let svc = LicenseService::start(&LicenseOptions::new(&bao.addr, &bao.token)).unwrap();
    let err = svc.ready().await.err().expect("must not start").to_string();
    assert!(err.contains("no KV v2 mount \"license\""), "{err}");
    assert!(err.contains("kleidia bootstrap"), "{err}");
}

#[tokio::test]
async fn an_unknown_config_key_is_refused_naming_it_and_secrets_stay_out_of_the_output() {
    let o = license_command()
        .arg("serve")
        .env("KLEIDIA_LICENSE_OPENBAO_TOKEN", "super-secret-token-value")
        .env("KLEIDIA_LICENSE_LISTEN_PORT", "1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("listen_port"), "{err}");
    assert!(!err.contains("super-secret-token-value"), "{err}");
}

#[tokio::test]
async fn with_an_api_token_every_endpoint_but_healthz_needs_it() {
    let bao = LicenseBao::start().await;
    let token = "app-shared-token-0123456789abcdef";
    let svc = bao.service().api_token(token).spawn().await;
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
    let good = LicenseSpec::new("L-inspect", "inst-x", unix_now() + DAY).issue(dir.path());
    let o = license_command()
        .arg("inspect")
        .arg(&good)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("inst-x") && out.contains("signature:       VALID"),
        "{out}"
    );
    assert!(out.contains("TEST key"), "{out}");

    let o = license_command()
        .arg("keygen")
        .arg("--out")
        .arg(dir.path().join("k"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let other = LicenseSpec::new("L-inspect-other", "inst-x", unix_now() + DAY)
        .signed_with(&dir.path().join("k/vendor.key"))
        .issue(dir.path());
    let o = license_command()
        .arg("inspect")
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("DOES NOT VERIFY"));
    let o = license_command()
        .arg("inspect")
        .arg(&other)
        .arg("--pubkey")
        .arg(dir.path().join("k/vendor.pub"))
        .output()
        .unwrap();
    assert!(o.status.success());
}

#[tokio::test]
async fn when_openbao_stops_readyz_status_and_upload_answer_503_and_the_process_stays_up() {
    let mut bao = LicenseBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = bao.service().spawn().await;
    let id = svc.installation_id().await;
    let file = LicenseSpec::new("L-down", &id, unix_now() + 100 * DAY).issue(dir.path());
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
