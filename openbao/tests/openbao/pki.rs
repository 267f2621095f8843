//! PKI through the client, and the setup helpers bootstrap uses.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_signs_revokes_and_serves_its_ca_and_crl() {
    let bao = DevBao::start().await;
    let root = bao.root();
    let year = Duration::from_secs(365 * 24 * 3600);
    assert_eq!(root.secrets_mount("pki").await.unwrap(), None);
    root.enable_secrets("pki", "pki", None, Some(year))
        .await
        .unwrap();
    let mount = root.secrets_mount("pki").await.unwrap().unwrap();
    assert_eq!(
        (mount.kind.as_str(), mount.max_lease_ttl),
        ("pki", year.as_secs())
    );
    root.tune_max_lease_ttl("pki", year * 2).await.unwrap();
    assert_eq!(
        root.secrets_mount("pki")
            .await
            .unwrap()
            .unwrap()
            .max_lease_ttl,
        2 * year.as_secs()
    );
    let kv = root.secrets_mount("secret").await.unwrap().unwrap();
    assert_eq!((kv.kind.as_str(), kv.version.as_deref()), ("kv", Some("2")));

    root.write(
        "pki/root/generate/internal",
        &json!({"common_name": "Test CA", "key_type": "ec", "key_bits": 256, "ttl": "8760h"}),
    )
    .await
    .unwrap();
    root.write(
        "pki/roles/piv",
        &json!({"allow_any_name": true, "key_type": "any", "use_csr_common_name": false,
                "use_csr_sans": false, "cn_validations": ["disabled"], "max_ttl": "24h"}),
    )
    .await
    .unwrap();
    assert_eq!(root.list("pki/roles").await.unwrap(), ["piv"]);

    let dir = bao.dir();
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-subj",
            "/CN=evil.example",
            "-out",
            "csr.pem",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csr = std::fs::read_to_string(dir.join("csr.pem")).unwrap();

    let pki = root.pki("pki");
    let signed = pki
        .sign(
            "piv",
            &SignRequest {
                csr,
                common_name: "Alice Example".into(),
                alt_names: vec!["alice@corp.example".into()],
                other_sans: vec![],
                exclude_cn_from_sans: true,
                ttl: Some(Duration::from_secs(3600)),
            },
        )
        .await
        .unwrap();
    assert!(signed
        .certificate
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(signed.issuing_ca.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(signed.serial_number.contains(':'));
    std::fs::write(dir.join("cert.pem"), &signed.certificate).unwrap();
    let text = std::process::Command::new("openssl")
        .args([
            "x509",
            "-in",
            "cert.pem",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Alice Example") && text.contains("alice@corp.example"),
        "{text}"
    );
    assert!(!text.contains("evil.example"), "{text}");

    assert!(pki.revoke(&signed.serial_number).await.unwrap() > 0);
    // Revoking again is fine; an unknown serial is not.
    pki.revoke(&signed.serial_number).await.unwrap();
    let err = pki.revoke("11:22:33").await.unwrap_err();
    assert!(matches!(err, Error::Other { status: 400, .. }), "{err:?}");
    pki.rotate_crl().await.unwrap();

    let ca = pki.fetch("ca/pem").await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&ca).contains("BEGIN CERTIFICATE"));
    let crl = pki.fetch("crl").await.unwrap().unwrap();
    assert_eq!(crl[0], 0x30, "DER");
    let crl_pem = pki.fetch("crl/pem").await.unwrap().unwrap();
    std::fs::write(dir.join("crl.pem"), &crl_pem).unwrap();
    let listed = std::process::Command::new("openssl")
        .args(["crl", "-in", "crl.pem", "-noout", "-text"])
        .current_dir(dir)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).to_uppercase();
    let serial = signed.serial_number.replace(':', "").to_uppercase();
    assert!(
        listed.contains(&serial),
        "{serial} not in the CRL:\n{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_helpers_are_idempotent_and_write_what_they_say() {
    let bao = DevBao::start().await;
    let root = bao.root();
    assert!(root.enable_auth("approle", "approle").await.unwrap());
    assert!(!root.enable_auth("approle", "approle").await.unwrap());
    let err = root.enable_auth("approle", "jwt").await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert_eq!(
        root.auth_methods()
            .await
            .unwrap()
            .get("approle")
            .map(String::as_str),
        Some("approle")
    );

    assert_eq!(root.read_policy("team").await.unwrap(), None);
    root.write_policy("team", TEAM_POLICY).await.unwrap();
    assert_eq!(
        root.read_policy("team").await.unwrap().as_deref(),
        Some(TEAM_POLICY)
    );

    let spec = TokenSpec {
        policies: vec!["team".into()],
        ttl: Duration::from_secs(300),
        max_ttl: Duration::from_secs(900),
    };
    root.write_approle_role("approle", "kleidia", &spec)
        .await
        .unwrap();
    root.write_approle_role("approle", "kleidia", &spec)
        .await
        .unwrap();
    let role = bao.read_json("auth/approle/role/kleidia").await.unwrap();
    assert_eq!(role["data"]["token_ttl"], json!(300));
    assert_eq!(role["data"]["token_max_ttl"], json!(900));
    assert_eq!(role["data"]["token_policies"], json!(["team"]));
    assert_eq!(role["data"]["secret_id_num_uses"], json!(0));

    // The same role_id every time; a new secret_id every time.
    let id = root.approle_role_id("approle", "kleidia").await.unwrap();
    assert_eq!(
        root.approle_role_id("approle", "kleidia").await.unwrap(),
        id
    );
    use secrecy::ExposeSecret as _;
    let s1 = root.approle_secret_id("approle", "kleidia").await.unwrap();
    let s2 = root.approle_secret_id("approle", "kleidia").await.unwrap();
    assert_ne!(s1.expose_secret(), s2.expose_secret());

    // Neither the client nor its configuration prints a token.
    let dev = OpenBao::new(bao.config(Auth::Token(bao.root_token.clone().into()))).unwrap();
    let shown = format!(
        "{dev:?} {:?}",
        bao.config(Auth::Token(bao.root_token.clone().into()))
    );
    assert!(!shown.contains(&bao.root_token), "{shown}");
}
