//! The license service's machine logins against a real OpenBao (raft), as
//! `kleidia bootstrap` sets them up: AppRole (`--approle-out`) and JWT with
//! a Kubernetes-style service-account token signed by the test's own
//! "cluster" key (`--jwt-pubkey`). Tokens live 3 s and are renewed up to
//! 8 s, so over a few dozen seconds the service renews and logs in again
//! several times while licenses are uploaded and stored in OpenBao.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kleidia_tests::bao::bootstrap_bao;
use kleidia_tests::license::{LicenseOptions, LicenseService, LicenseSpec, DAY};
use kleidia_tests::{openssl, unix_now, TestBao};
use serde_json::json;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const LICENSE_SUBJECT: &str = "system:serviceaccount:kleidia:kleidia-license";

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// An RSA "cluster" key pair in `dir` (`sa.key`, `sa.pub`).
fn cluster_key(dir: &Path) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "sa.key",
        ],
    )
    .unwrap();
    openssl(dir, &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]).unwrap();
}

/// A projected service-account token for `subject`, audience `openbao`,
/// signed RS256 with `dir/sa.key`.
fn service_account_token(dir: &Path, subject: &str) -> String {
    let now = unix_now();
    let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = b64url(
        json!({"iss": ISSUER, "sub": subject, "aud": ["openbao"],
               "iat": now, "nbf": now, "exp": now + 3600})
        .to_string()
        .as_bytes(),
    );
    let input = format!("{header}.{claims}");
    std::fs::write(dir.join("jwt.in"), &input).unwrap();
    openssl(
        dir,
        &[
            "dgst", "-sha256", "-sign", "sa.key", "-binary", "-out", "jwt.sig", "jwt.in",
        ],
    )
    .unwrap();
    format!(
        "{input}.{}",
        b64url(&std::fs::read(dir.join("jwt.sig")).unwrap())
    )
}

/// `log` without terminal colour codes (the services colour their fields).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn logins(log: &str) -> usize {
    log.matches("logged in to OpenBao").count()
}

/// Upload licenses one after another until the service has logged in
/// `n` times; every upload must be stored. Returns how many were stored.
async fn upload_until_logins(svc: &LicenseService, dir: &Path, tag: &str, n: usize) -> u64 {
    let id = svc.installation_id().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut stored = 0;
    while logins(&svc.log()) < n {
        stored += 1;
        let file =
            LicenseSpec::new(&format!("L-{tag}-{stored}"), &id, unix_now() + 365 * DAY).issue(dir);
        let (code, s) = svc.upload(std::fs::read(&file).unwrap()).await;
        assert_eq!(code, 200, "upload {stored} ({tag}): {s}\n{}", svc.log());
        assert!(
            Instant::now() < deadline,
            "{tag}: only {} logins; log:\n{}",
            logins(&svc.log()),
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stored
}

#[tokio::test]
async fn the_license_service_logs_in_with_approle_and_with_jwt_and_keeps_its_tokens_fresh() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    cluster_key(dir);
    let creds = dir.join("approle");
    let (creds_s, pubkey) = (
        creds.display().to_string(),
        dir.join("sa.pub").display().to_string(),
    );
    let (bao, root) = bootstrap_bao(
        TestBao::spawn_persistent().await.unwrap(),
        "http://127.0.0.1:8080",
        &[
            "--approle-out",
            &creds_s,
            "--token-ttl",
            "3",
            "--token-max-ttl",
            "8",
            "--jwt-pubkey",
            &pubkey,
            "--jwt-issuer",
            ISSUER,
            "--jwt-license-subject",
            LICENSE_SUBJECT,
        ],
    )
    .await
    .unwrap();
    let version = || root.kv_version("license", "kleidia/licenses");

    // AppRole.
    let role = creds.join("kleidia-license");
    let approle = LicenseOptions::new(&bao.addr, "")
        .env("KLEIDIA_LICENSE_OPENBAO_AUTH", "approle")
        .env(
            "KLEIDIA_LICENSE_OPENBAO_ROLE_ID_FILE",
            &role.join("role_id").display().to_string(),
        )
        .env(
            "KLEIDIA_LICENSE_OPENBAO_SECRET_ID_FILE",
            &role.join("secret_id").display().to_string(),
        );
    let svc = approle.spawn().await;
    let stored = upload_until_logins(&svc, dir, "approle", 3).await;
    let log = plain(&svc.log());
    assert!(log.contains("method=\"approle\""), "{log}");
    assert!(log.contains("renewed the OpenBao token"), "{log}");
    let secret_id = std::fs::read_to_string(role.join("secret_id")).unwrap();
    assert!(!log.contains(secret_id.trim()), "the secret_id was logged");
    svc.stop();
    assert_eq!(version().await, stored);

    // JWT: the service-account token in the projected-token file.
    let token_file = dir.join("sa-token");
    std::fs::write(&token_file, service_account_token(dir, LICENSE_SUBJECT)).unwrap();
    let jwt = LicenseOptions::new(&bao.addr, "")
        .env("KLEIDIA_LICENSE_OPENBAO_AUTH", "jwt")
        .env(
            "KLEIDIA_LICENSE_OPENBAO_JWT_TOKEN_FILE",
            &token_file.display().to_string(),
        );
    let svc = jwt.spawn().await;
    let more = upload_until_logins(&svc, dir, "jwt", 3).await;
    let log = plain(&svc.log());
    assert!(log.contains("method=\"jwt\""), "{log}");
    assert!(log.contains("renewed the OpenBao token"), "{log}");
    svc.stop();
    assert_eq!(version().await, stored + more);
}
