//! The skeleton's wiring against the real services: readiness, metrics,
//! configuration errors, migrations, graceful shutdown and `kleidia bootstrap`.

use std::time::{Duration, Instant};

use kleidia_tests::app::{kleidia_cli, kleidia_command};
use kleidia_tests::bao::{bootstrapped_bao, run_bootstrap, BaoClient};
use kleidia_tests::client::Api;
use kleidia_tests::{openssl, TestApp, TestBao, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `kleidia serve` on a fresh database and a fresh OpenBao nobody bootstrapped.
async fn bare_app() -> TestApp {
    TestApp::builder()
        .bare_openbao()
        .without_admin()
        .start()
        .await
}

#[tokio::test]
async fn readyz_is_ok_with_both_services_and_degraded_naming_openbao_when_it_stops() {
    let mut app = bare_app().await;
    let anon = app.api();

    let (s, body) = anon.get("/readyz").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["checks"]["postgres"], "ok", "{body}");
    assert_eq!(body["checks"]["openbao"], "ok", "{body}");

    app.stop_openbao();

    // Degraded, not unready: pages that need only PostgreSQL keep working.
    let (s, body) = anon.get("/readyz").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["failed"], json!(["openbao"]), "{body}");
    assert_eq!(body["checks"]["postgres"], "ok", "{body}");
    assert_ne!(body["checks"]["openbao"], "ok", "{body}");

    // The process is still alive: /healthz is about the process, not its dependencies.
    assert_eq!(anon.get("/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_show_the_pool() {
    let app = TestApp::builder()
        .bare_openbao()
        .without_admin()
        .env("KLEIDIA_SERVER_METRICS_TOKEN", "metrics-scrape-token-1")
        .start()
        .await;
    let anon = app.api();
    for _ in 0..3 {
        anon.get("/healthz").await;
    }
    anon.get("/no/such/page/12345").await;
    let (s, _) = anon.get("/metrics").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "/metrics needs its token");
    let scraper = Api::with_token(app.base_url(), "metrics-scrape-token-1");
    let (s, text) = scraper.get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("kleidia_http_requests_total{")
                && l.contains("route=\"/healthz\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no /healthz counter in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{line}");
    // Unknown paths are grouped, never one series per raw path.
    assert!(text.contains("route=\"unmatched\""), "{text}");
    assert!(!text.contains("12345"), "{text}");
    assert!(
        text.contains("kleidia_http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("kleidia_db_pool_connections{state=\"idle\"}"),
        "{text}"
    );
    assert!(
        text.contains("kleidia_db_pool_connections{state=\"in_use\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn the_first_page_renders_with_security_headers() {
    let app = bare_app().await;
    let r = reqwest::get(app.url("/")).await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    let body = r.text().await.unwrap();
    // Anonymous visitors of `/` land on the sign-in page (redirect followed).
    assert!(body.contains("<title>Sign in · Kleidia</title>"), "{body}");
    assert!(body.contains("/static/htmx.min.js"));
    assert!(!body.contains("<script>"), "no inline script");

    let js = reqwest::get(app.url("/static/htmx.min.js")).await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.text().await.unwrap().starts_with("var htmx="));
    let missing = reqwest::get(app.url("/static/../Cargo.toml"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly_and_secrets_never_reach_the_log() {
    let mut app = bare_app().await;
    app.api().get("/readyz").await;
    let started = Instant::now();
    let status = app.server.proc.stop().expect("process was running");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        app.log()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = app.log();
    assert!(log.contains("Kleidia listening"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    // The OpenBao token and the database password are in the configuration, at
    // debug level nothing prints them.
    assert!(!log.contains(app.app_bao_token()), "token leaked:\n{log}");
    assert!(
        !log.contains("kleidia:kleidia@"),
        "database password leaked:\n{log}"
    );
}

#[tokio::test]
async fn an_unknown_config_key_is_a_startup_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kleidia.toml");
    std::fs::write(
        &cfg,
        "[server]\nbind = \"127.0.0.1:0\"\nlisten_adress = \"x\"\n",
    )
    .unwrap();
    let out = kleidia_command()
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen_adress"), "{err}");

    let out = kleidia_command()
        .arg("serve")
        .env("KLEIDIA_OPENBAO_TOKN", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokn"), "{err}");
    assert!(!err.contains("Kleidia listening"));
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_a_second_run_applies_nothing() {
    let db = TestDb::new().await.unwrap();
    let run = || kleidia_cli(&db.url, &["migrate"]);
    let files = std::fs::read_dir(kleidia_tests::workspace_root().join("migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{files} applied now, {files} in total")),
        "{stdout}"
    );

    let applied = db.count("_sqlx_migrations WHERE success").await;
    assert_eq!(applied as usize, files);
    let pool = db.pool().await.unwrap();
    let settings: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('public.settings')::text")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(settings.as_deref(), Some("settings"));

    let out = run();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 applied now"));
}

/// What bootstrap manages, read back for comparison between runs.
async fn layout(bao: &BaoClient) -> Value {
    let mounts = bao.get("sys/mounts").await.unwrap();
    let pick = |m: &str| {
        let d = &mounts["data"][format!("{m}/")];
        json!({"type": d["type"], "options": d["options"], "max_lease_ttl": d["config"]["max_lease_ttl"]})
    };
    let mut out = json!({});
    for m in ["yubikeys", "secret", "license", "pki", "pki_int"] {
        out[m] = pick(m);
    }
    for r in ["piv-ec", "piv-rsa"] {
        out[r] = bao.get(&format!("pki_int/roles/{r}")).await.unwrap()["data"].clone();
    }
    for p in ["kleidia-app", "kleidia-license"] {
        out[p] = bao.get(&format!("sys/policies/acl/{p}")).await.unwrap()["data"]["policy"].clone();
    }
    out["issuers_root"] =
        bao.call("LIST", "pki/issuers", None).await.unwrap().1["data"]["keys"].clone();
    out["issuers_int"] =
        bao.call("LIST", "pki_int/issuers", None).await.unwrap().1["data"]["keys"].clone();
    out["urls"] = bao.get("pki_int/config/urls").await.unwrap()["data"].clone();
    out
}

#[tokio::test]
async fn bootstrap_twice_changes_nothing_and_the_piv_role_ignores_names_in_the_csr() {
    let tb = TestBao::spawn().await.unwrap();
    let root = BaoClient::new(&tb.addr, &tb.token);
    let public = "https://kleidia.corp.example";

    let (ok, out, err) = run_bootstrap(&tb.addr, &tb.token, public).unwrap();
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("created   kv-v2 mount yubikeys/"), "{out}");
    assert!(
        out.contains("created   PIV signing role pki_int/roles/piv-ec"),
        "{out}"
    );
    assert!(out.contains("created   policy kleidia-app"), "{out}");
    let first = layout(&root).await;

    let (ok, out, err) = run_bootstrap(&tb.addr, &tb.token, public).unwrap();
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("nothing changed"), "{out}");
    assert!(
        !out.contains("created ") && !out.contains("updated "),
        "{out}"
    );
    assert_eq!(
        layout(&root).await,
        first,
        "second bootstrap changed the layout"
    );
    assert_eq!(first["yubikeys"]["options"]["version"], "2");
    assert_eq!(
        first["urls"]["crl_distribution_points"],
        json!([format!("{public}/pki/crl")])
    );

    // A CSR that asks for evil.example everywhere, and to be a CA.
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "csr.pem",
            "-subj",
            "/CN=evil.example/O=Evil",
            "-addext",
            "subjectAltName=DNS:evil.example,DNS:www.evil.example,email:root@evil.example",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
    )
    .unwrap();
    let csr = std::fs::read_to_string(dir.path().join("csr.pem")).unwrap();
    // Sign with the app's own policy, as Kleidia will.
    let app_token = root.token_with_policies(&["kleidia-app"]).await.unwrap();
    let app = root.with_token(&app_token);
    let signed = app
        .post(
            "pki_int/sign/piv-ec",
            &json!({
                "csr": csr,
                "common_name": "Alice Example",
                "exclude_cn_from_sans": true,
                "other_sans": "1.3.6.1.4.1.311.20.2.3;UTF8:alice@corp.example",
                "ttl": "24h",
            }),
        )
        .await
        .unwrap();
    std::fs::write(
        dir.path().join("cert.pem"),
        signed["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let chain = reqwest::get(format!("{}/v1/pki_int/ca_chain", tb.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(dir.path().join("chain.pem"), &chain).unwrap();

    let text = openssl(dir.path(), &["x509", "-in", "cert.pem", "-noout", "-text"]).unwrap();
    assert!(
        !text.contains("evil"),
        "the CSR's names leaked into:\n{text}"
    );
    assert!(text.contains("Subject: CN = Alice Example\n"), "{text}");
    assert!(text.contains("UPN::alice@corp.example"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("Microsoft Smartcard Login"), "{text}");
    assert!(!text.contains("CA:TRUE"), "{text}");
    assert!(text.contains(&format!("URI:{public}/pki/crl")), "{text}");
    // The whole chain verifies: root (self-signed) → intermediate → leaf.
    let root_pem = root.get("pki/cert/ca").await.unwrap()["data"]["certificate"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(dir.path().join("root.pem"), root_pem).unwrap();
    let v = openssl(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "-purpose",
            "sslclient",
            "cert.pem",
        ],
    )
    .unwrap();
    assert!(v.contains("cert.pem: OK"), "{v}");

    // Key types outside the role are refused: Ed25519 is not a PIV key.
    openssl(
        dir.path(),
        &[
            "req", "-new", "-newkey", "ed25519", "-nodes", "-keyout", "ed.pem", "-out", "ed.csr",
            "-subj", "/CN=x",
        ],
    )
    .unwrap();
    let ed = std::fs::read_to_string(dir.path().join("ed.csr")).unwrap();
    let (s, _) = app
        .call(
            "POST",
            "pki_int/sign/piv-ec",
            Some(&json!({"csr": ed, "common_name": "Alice Example"})),
        )
        .await
        .unwrap();
    assert!(s.is_client_error(), "ed25519 CSR was signed");
}

#[tokio::test]
async fn the_app_policy_cannot_touch_sys_sign_verbatim_or_the_license_path() {
    let (_tb, root) = bootstrapped_bao().await.unwrap();
    let app = root.with_token(&root.token_with_policies(&["kleidia-app"]).await.unwrap());
    let license = root.with_token(
        &root
            .token_with_policies(&["kleidia-license"])
            .await
            .unwrap(),
    );

    // What the app needs works (so the refusals below are about the policy).
    let (s, _) = app
        .call(
            "POST",
            "yubikeys/data/12345678/secrets",
            Some(&json!({"data": {"pin": "x"}})),
        )
        .await
        .unwrap();
    assert!(s.is_success(), "app cannot write the escrow: {s}");

    let denied = [
        ("GET", "sys/mounts", None),
        ("POST", "sys/mounts/evil", Some(json!({"type": "kv"}))),
        ("GET", "sys/policies/acl/kleidia-app", None),
        (
            "POST",
            "pki_int/sign-verbatim/piv-ec",
            Some(json!({"csr": "x"})),
        ),
        ("POST", "pki_int/sign-verbatim", Some(json!({"csr": "x"}))),
        (
            "POST",
            "pki/root/sign-intermediate",
            Some(json!({"csr": "x"})),
        ),
        ("GET", "license/data/kleidia/installation", None),
        (
            "POST",
            "license/data/kleidia/installation",
            Some(json!({"data": {"id": "x"}})),
        ),
        ("DELETE", "yubikeys/metadata/12345678/secrets", None),
        (
            "POST",
            "yubikeys/destroy/12345678/secrets",
            Some(json!({"versions": [1]})),
        ),
    ];
    for (m, p, b) in denied {
        let (s, body) = app.call(m, p, b.as_ref()).await.unwrap();
        assert_eq!(s, 403, "app token was not refused on {m} {p}: {body}");
    }

    // The license service reaches its own path and nothing of the app's.
    let (s, _) = license
        .call(
            "POST",
            "license/data/kleidia/installation",
            Some(&json!({"data": {"id": "x"}})),
        )
        .await
        .unwrap();
    assert!(
        s.is_success(),
        "license token cannot write its own path: {s}"
    );
    let (s, _) = license
        .call("GET", "yubikeys/data/12345678/secrets", None)
        .await
        .unwrap();
    assert_eq!(s, 403);
}
