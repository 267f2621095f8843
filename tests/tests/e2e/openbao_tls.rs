//! OpenBao over TLS (issue 13): a production-like OpenBao (raft, `bao
//! server -config`) serving a certificate from a CA generated at start, and
//! `kleidia bootstrap`, `kleidia serve` and `kleidia-license serve` trusting
//! that CA through `openbao.ca_file` and nothing else. The whole operation
//! flow runs over https: a license upload stored by the license service, a
//! PIN change escrowed, a CSR signed by OpenBao's PKI. Then the attacks: an
//! OpenBao address that answers with a certificate from another CA (as one
//! who took over the address would), and apps configured without the CA,
//! with the system roots only, or with another CA: none of them talks to
//! that server, each says the certificate failed verification, and nothing
//! is written.

use std::time::{Duration, Instant};

use kleidia_tests::license::DAY;
use kleidia_tests::pki::{attestation_chain, csr_asking_for_foreign_names, random_serial};
use kleidia_tests::{openssl, unix_now, Person, TestApp, TestCa};
use kleidia_virtual_yubikey::keys::{alg, PrivateKey};
use rand::rngs::OsRng;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CA_FILE: &str = "KLEIDIA_OPENBAO_CA_FILE";

/// One PIN change, start to end; the new PIN.
async fn change_pin(p: &Person, serial: u32) -> String {
    let (s, op) = p.authorize(serial, json!({"operation": "set_pin"})).await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let pin = p.decrypt(&op["request"]["params"]["new_pin"]);
    let (s, v) = p
        .report(serial, op["operation_id"].as_str().unwrap(), true)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    pin
}

/// Poll `/readyz` until `check` holds.
async fn wait_readyz(f: &TestApp, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = f.api().get("/readyz").await;
        if s == StatusCode::OK && check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "/readyz never {what}: {s} {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Operations that were handed a ticket.
async fn tickets(f: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM operations WHERE params_hash IS NOT NULL")
        .fetch_one(&f.db.pool().await.unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_operation_flow_runs_over_tls_and_a_server_with_another_ca_is_never_talked_to() {
    let mut f = TestApp::builder()
        .tls_openbao()
        .license_service()
        .attestation_root()
        .start()
        .await;
    let real_ca = f.openbao().ca().unwrap();
    assert!(
        f.root_bao().addr.starts_with("https://"),
        "{}",
        f.root_bao().addr
    );

    // Bootstrap ran over TLS when the installation started; it is idempotent.
    let (ok, out, err) = f.bootstrap();
    assert!(ok, "bootstrap again over TLS:\n{out}\n{err}");
    let v = wait_readyz(&f, "ready", |v| v["status"] == "ready").await;
    assert_eq!(v["checks"]["openbao"], "ok", "{v}");

    // The license service stores the uploaded license in OpenBao over TLS.
    let file = f
        .issue_license("L-tls", unix_now() + 365 * DAY, 10, 10)
        .await;
    let admin = f.admin_api().await;
    let (s, v) = admin.upload_license(file).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(f.stored_licenses_version().await, 1);

    // A user registers a key; a PIN change is escrowed; a CSR is signed.
    let eve = f.person("eve", "user", "Eve Example").await;
    let serial = random_serial();
    eve.register_ok(serial).await;
    let pin = change_pin(&eve, serial).await;
    assert_eq!(f.escrow_version(serial).await, 1);
    assert_eq!(f.current_escrow(serial).await["pin"], pin);
    let (s, op) = eve
        .authorize(serial, json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256", "pin_policy": "once", "touch_policy": "never"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{op}");
    // The ticket carries the escrowed PIN, read back from OpenBao.
    assert_eq!(eve.decrypt(&op["request"]["params"]["pin"]), pin);
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
    let csr = csr_asking_for_foreign_names(&key, dir.path());
    let chain = attestation_chain(f.attestation_root(), serial, &key, 2, 1);
    let (s, cert) = eve
        .api
        .sign_csr(
            serial,
            &json!({"operation_id": op["operation_id"], "csr_pem": csr, "attestation_chain_pem": chain}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{cert}");
    std::fs::write(
        dir.path().join("cert.pem"),
        cert["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    let serial_hex = openssl(
        dir.path(),
        &["x509", "-in", "cert.pem", "-noout", "-serial"],
    )
    .unwrap()
    .trim()
    .trim_start_matches("serial=")
    .to_lowercase();
    let issued = f.issued_in_openbao().await;
    assert!(
        issued
            .iter()
            .any(|s| s.replace([':', '-'], "").to_lowercase() == serial_hex),
        "{serial_hex} not among {issued:?}"
    );

    // Kleidia configured without the CA, with the system roots only, or
    // with another CA does not talk to this OpenBao: it does not start,
    // and says the certificate failed verification.
    let other = TestCa::generate(f.dir(), "other").unwrap();
    let other_file = other.ca_file().display().to_string();
    for (name, extra, without) in [
        ("no ca_file", vec![], vec![CA_FILE]),
        (
            "system roots only",
            vec![("KLEIDIA_OPENBAO_SYSTEM_ROOTS", "true")],
            vec![CA_FILE],
        ),
        ("another CA", vec![(CA_FILE, other_file.as_str())], vec![]),
    ] {
        let mut extra = extra;
        extra.push(("KLEIDIA_DATABASE_CONNECT_RETRY_SECS", "2"));
        let err = match f.try_spawn_another(&extra, &without).await {
            Ok(_) => panic!("{name}: kleidia serve started against an untrusted OpenBao"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("TLS certificate verification failed") && err.contains("UnknownIssuer"),
            "{name}: {err}"
        );
    }
    // The same for bootstrap, which would otherwise write the layout.
    let (ok, out, err) =
        kleidia_tests::bao::run_bootstrap(&f.root_bao().addr, &f.root_bao().token, f.base_url())
            .unwrap();
    assert!(!ok, "bootstrap without the CA succeeded:\n{out}");
    assert!(err.contains("certificate"), "{out}\n{err}");

    // Someone else answers at OpenBao's address with a certificate from
    // another CA: the running app refuses the connection, /readyz says why,
    // and a PIN change is refused before any ticket exists.
    let tickets_before = tickets(&f).await;
    f.openbao()
        .restart_with_certificate_from(&other)
        .await
        .unwrap();
    let v = wait_readyz(&f, "degraded by the untrusted certificate", |v| {
        v["status"] == "degraded"
    })
    .await;
    assert_eq!(v["failed"], json!(["openbao"]), "{v}");
    let check = v["checks"]["openbao"].as_str().unwrap();
    assert!(check.contains("TLS certificate verification failed"), "{v}");
    assert_eq!(eve.api.me().await.0, StatusCode::OK);
    let (s, v) = eve.authorize(serial, json!({"operation": "set_pin"})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v.get("request").is_none(), "no ticket: {v}");
    assert!(
        f.log().contains("TLS certificate verification failed"),
        "the log names the cause"
    );
    assert_eq!(
        tickets(&f).await,
        tickets_before,
        "no ticket from the refused PIN change"
    );

    // The real certificate is back: the app carries on by itself, and the
    // refused change left nothing in the escrow (one version before, one now).
    f.openbao()
        .restart_with_certificate_from(&real_ca)
        .await
        .unwrap();
    wait_readyz(&f, "ready again", |v| v["status"] == "ready").await;
    let pin = change_pin(&eve, serial).await;
    assert_eq!(f.escrow_version(serial).await, 2);
    assert_eq!(f.current_escrow(serial).await["pin"], pin);
}
