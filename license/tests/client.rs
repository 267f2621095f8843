//! `LicenseClient` against the real `kleidia-license serve` and OpenBao:
//! what the app sees when the service is up, refuses, or is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::Duration;

use kleidia_license_client::{ClientError, LicenseClient};
use kleidia_protocol::license::{LicenseState, TRIAL_LIMITS};
use kleidia_tests::bao::BaoClient;
use kleidia_tests::{free_port, wait_until, ChildGuard, TestBao};
use secrecy::SecretString;
use serde_json::json;

const API_TOKEN: &str = "client-test-token-0123456789";

struct Running {
    _bao: TestBao,
    proc: ChildGuard,
    base: String,
}

async fn service() -> Running {
    let bao = TestBao::spawn().await.unwrap();
    BaoClient::new(&bao.addr, &bao.token)
        .post(
            "sys/mounts/license",
            &json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await
        .unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kleidia-license"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KLEIDIA_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .arg("serve")
        .env("KLEIDIA_LICENSE_LISTEN", format!("127.0.0.1:{port}"))
        .env("KLEIDIA_LICENSE_OPENBAO_ADDR", &bao.addr)
        .env("KLEIDIA_LICENSE_OPENBAO_TOKEN", &bao.token)
        .env("KLEIDIA_LICENSE_API_TOKEN", API_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let up = wait_until(Duration::from_secs(30), || {
        let r = http.get(format!("{base}/healthz")).send();
        async move { matches!(r.await, Ok(r) if r.status().is_success()) }
    })
    .await;
    assert!(up, "kleidia-license did not come up");
    Running {
        _bao: bao,
        proc: ChildGuard::new("kleidia-license", child),
        base,
    }
}

fn client(base: &str, ttl: Duration) -> LicenseClient {
    LicenseClient::new(
        base,
        Some(SecretString::from(API_TOKEN)),
        Duration::from_secs(2),
        ttl,
    )
    .unwrap()
}

#[tokio::test]
async fn the_client_serves_the_cached_status_then_falls_back_to_degraded_trial_when_the_service_stops(
) {
    let mut svc = service().await;
    let ttl = Duration::from_millis(700);
    let c = client(&svc.base, ttl);
    let live = c.status().await;
    assert_eq!(live.status, LicenseState::Trial);
    assert!(!live.degraded);
    let id = c.installation_id().await.unwrap().installation_id;
    assert_eq!(live.installation_id, id);

    svc.proc.stop();

    // Within the TTL: the cached answer, still from the service.
    assert_eq!(c.status().await, live);
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let fallback = c.status().await;
    assert_eq!(fallback.status, LicenseState::Trial);
    assert!(fallback.degraded);
    assert_eq!(fallback.limits, Some(TRIAL_LIMITS));
    assert!(
        fallback.reason.contains("unavailable"),
        "{}",
        fallback.reason
    );
    assert!(matches!(
        c.fetch_status().await,
        Err(ClientError::Unreachable(_))
    ));
}

#[tokio::test]
async fn the_client_falls_back_to_degraded_trial_when_nothing_listens() {
    let c = client(
        &format!("http://127.0.0.1:{}", free_port()),
        Duration::from_secs(30),
    );
    let s = c.status().await;
    assert_eq!(s.status, LicenseState::Trial);
    assert!(s.degraded);
    assert_eq!(s.installation_id, "");
    assert_eq!(s.limits, Some(TRIAL_LIMITS));
}

#[tokio::test]
async fn a_refused_upload_comes_back_with_the_services_reason_and_a_wrong_token_is_not_status() {
    let svc = service().await;
    let c = client(&svc.base, Duration::from_secs(30));
    match c.upload(b"{\"format\":".to_vec(), Some("alice")).await {
        Err(ClientError::Refused { status, body }) => {
            assert_eq!(status, 400);
            assert_eq!(body.error, "malformed");
            assert!(body.message.contains("malformed"), "{}", body.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(c.history().await.unwrap().entries.is_empty());

    let wrong = LicenseClient::new(
        &svc.base,
        Some(SecretString::from("not-the-token-0123456789")),
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(matches!(
        wrong.fetch_status().await,
        Err(ClientError::Refused { status: 401, .. })
    ));
    // status() never fails, but a refused call is not the service's answer.
    let s = wrong.status().await;
    assert!(s.degraded);
    assert_eq!(s.status, LicenseState::Trial);
}
