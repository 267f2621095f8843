//! Revocation relying parties can trust, against the real `kleidia serve`,
//! PostgreSQL and a test-owned OpenBao: a device certificate is "good" over
//! OCSP at `/pki/ocsp` (the URL its AIA names), "revoked" once the device is
//! reported lost, and the CRL served at `/pki/crl` has its nextUpdate ahead
//! after every rebuild, including on an installation whose CRL had gone stale
//! before `kleidia bootstrap` fixed it.
//!
//! Self-contained on purpose: only the harness in `tests/src` is shared.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use kleidia_tests::pki::random_serial;
use kleidia_tests::{Person, TestApp};
use kleidia_virtual_yubikey::attest::pem;
use kleidia_virtual_yubikey::keys::{alg, PrivateKey};
use rand::rngs::OsRng;
use reqwest::StatusCode;
use serde_json::json;

/// One installation: its own OpenBao, bootstrapped for the app's public URL
/// (so certificates name this app's `/pki/ocsp`), and a test attestation root.
async fn start() -> TestApp {
    TestApp::builder()
        .own_openbao()
        .attestation_root()
        .start()
        .await
}

/// What a relying party does with an installation's certificates; files are
/// kept in the installation's folder.
trait RelyingParty {
    fn path(&self, name: &str) -> PathBuf;
    async fn device_with_certificate(&self) -> (Person, u32, String);
    async fn save_der_as_pem(&self, path: &str, name: &str);
    fn ocsp(&self) -> String;
    async fn served_crl(&self) -> (u64, String);
    /// OpenBao's own CRL of the issuing CA, fetched directly (DER).
    async fn openbao_crl(&self) -> Vec<u8>;
}

impl RelyingParty for TestApp {
    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// A user who registers a YubiKey and gets a certificate for its slot 9a
    /// through `sign-csr` with the key's attestation; returns the owner, the
    /// device serial and the certificate's serial number. `cert.pem`,
    /// `ca.pem` (issuing CA) and `root.pem` are left in the dir.
    async fn device_with_certificate(&self) -> (Person, u32, String) {
        let rita = self.person("rita", "user", "Rita Relying").await;
        let serial = random_serial();
        rita.register_ok(serial).await;
        let (s, op) = rita
            .authorize(
                serial,
                json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256",
                       "pin_policy": "once", "touch_policy": "never"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{op}");

        // The "card": a P-256 key, its CSR and its attestation chain.
        let key = PrivateKey::generate(alg::P256, &mut OsRng).unwrap();
        std::fs::write(
            self.path("slot.key"),
            pem("PRIVATE KEY", &key.to_pkcs8().unwrap()).unwrap(),
        )
        .unwrap();
        openssl(
            self.dir(),
            &[
                "req", "-new", "-key", "slot.key", "-out", "slot.csr", "-subj", "/CN=card",
            ],
        );
        let csr = std::fs::read_to_string(self.path("slot.csr")).unwrap();
        let chain = self.attestation(serial, &key, 2, 1);
        let (s, cert) = rita
            .api
            .sign_csr(
                serial,
                &json!({"operation_id": op["operation_id"], "csr_pem": csr,
                        "attestation_chain_pem": chain}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{cert}");
        std::fs::write(
            self.path("cert.pem"),
            cert["certificate_pem"].as_str().unwrap(),
        )
        .unwrap();
        self.save_der_as_pem("/pki/ca", "ca").await;
        self.save_der_as_pem("/pki/root/ca", "root").await;
        (
            rita,
            serial,
            cert["serial_number"].as_str().unwrap().to_string(),
        )
    }

    /// GET a DER certificate from the app and keep it as `<name>.pem`.
    async fn save_der_as_pem(&self, path: &str, name: &str) {
        let der = self.fetch(path).await;
        std::fs::write(self.path(&format!("{name}.der")), der).unwrap();
        openssl(
            self.dir(),
            &[
                "x509",
                "-inform",
                "DER",
                "-in",
                &format!("{name}.der"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }

    /// `openssl ocsp` against Kleidia for `cert.pem`, verifying the response
    /// against the root; returns stdout and stderr together.
    fn ocsp(&self) -> String {
        let url = self.url("/pki/ocsp");
        let (ok, out) = openssl_all(
            self.dir(),
            &[
                "ocsp",
                "-issuer",
                "ca.pem",
                "-cert",
                "cert.pem",
                "-url",
                &url,
                "-resp_text",
                "-CAfile",
                "root.pem",
                "-verify_other",
                "ca.pem",
            ],
        );
        assert!(ok, "{out}");
        assert!(out.contains("Response verify OK"), "{out}");
        out
    }

    /// The CRL at `/pki/crl` (DER, as relying parties fetch it): its
    /// nextUpdate in Unix seconds, read with `openssl crl -nextupdate`, and
    /// its text.
    async fn served_crl(&self) -> (u64, String) {
        let der = self.fetch("/pki/crl").await;
        crl_next_update(self.dir(), &der)
    }

    async fn openbao_crl(&self) -> Vec<u8> {
        reqwest::get(format!("{}/v1/pki_int/crl", self.root_bao().addr))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    kleidia_tests::openssl(dir, args).unwrap()
}

/// `openssl ARGS…` with stdout and stderr together (some verdicts, such as
/// "Response verify OK", go to stderr).
fn openssl_all(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// nextUpdate (Unix seconds) and text of a DER CRL, through openssl.
fn crl_next_update(dir: &Path, der: &[u8]) -> (u64, String) {
    std::fs::write(dir.join("crl.der"), der).unwrap();
    let line = openssl(
        dir,
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-noout",
            "-nextupdate",
        ],
    );
    let text = openssl(
        dir,
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
    );
    let when = line
        .trim()
        .strip_prefix("nextUpdate=")
        .unwrap_or_else(|| panic!("no nextUpdate in {line:?}"));
    (openssl_time(when), text)
}

/// An openssl date ("Dec  3 02:29:02 2026 GMT") as Unix seconds.
fn openssl_time(s: &str) -> u64 {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [mon, day, hms, year, "GMT"] = parts.as_slice() else {
        panic!("unexpected openssl time {s:?}")
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| x == mon).unwrap() as i64 + 1;
    let d: i64 = day.parse().unwrap();
    let y: i64 = year.parse().unwrap();
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]).unwrap()
}

const HOUR: u64 = 3600;

#[test]
fn openssl_times_convert_to_unix_seconds() {
    assert_eq!(openssl_time("Jan  1 00:00:00 1970 GMT"), 0);
    assert_eq!(openssl_time("Mar  1 12:30:15 2024 GMT"), 1_709_296_215);
    assert_eq!(openssl_time("Dec 31 23:59:59 2099 GMT"), 4_102_444_799);
}

#[tokio::test]
async fn ocsp_through_kleidia_says_good_then_revoked_once_the_device_is_lost_and_the_crl_stays_ahead(
) {
    let site = start().await;
    let (rita, serial, cert_serial) = site.device_with_certificate().await;
    let dir = site.dir();

    // The certificate's AIA names Kleidia's OCSP pass-through.
    let uri = openssl(dir, &["x509", "-in", "cert.pem", "-noout", "-ocsp_uri"]);
    assert_eq!(uri.trim(), site.url("/pki/ocsp"));

    // POST (what openssl sends): good, signed by the issuing CA.
    let out = site.ocsp();
    assert!(out.contains("cert.pem: good"), "{out}");

    // GET, RFC 6960 A.1: base64 of the DER request in the path, URL-encoded,
    // raw, or as base64url without padding.
    openssl(
        dir,
        &[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            "cert.pem",
            "-no_nonce",
            "-reqout",
            "req.der",
        ],
    );
    let b64 = openssl(dir, &["base64", "-A", "-in", "req.der"])
        .trim()
        .to_string();
    let encoded = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let url_safe = b64
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_");
    for form in [&encoded, &b64, &url_safe] {
        let r = reqwest::get(site.url(&format!("/pki/ocsp/{form}")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{form}");
        assert_eq!(
            r.headers()["content-type"],
            "application/ocsp-response",
            "{form}"
        );
        std::fs::write(dir.join("resp.der"), r.bytes().await.unwrap()).unwrap();
        let text = openssl(
            dir,
            &["ocsp", "-respin", "resp.der", "-resp_text", "-noverify"],
        );
        assert!(text.contains("Cert Status: good"), "{form}: {text}");
    }

    // A request Kleidia cannot read is refused with a 4xx that says why; a
    // DER SEQUENCE that is no OCSP request gets OpenBao's malformedRequest.
    let http = reqwest::Client::new();
    let r = http
        .get(site.url("/pki/ocsp/not*base64!"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http
        .post(site.url("/pki/ocsp"))
        .header("content-type", "text/plain")
        .body(std::fs::read(dir.join("req.der")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(r.text().await.unwrap().contains("application/ocsp-request"));
    let r = http
        .post(site.url("/pki/ocsp"))
        .header("content-type", "application/ocsp-request")
        .body(vec![0x30, 0x03, 0x02, 0x01, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["content-type"], "application/ocsp-response");
    std::fs::write(dir.join("bad.der"), r.bytes().await.unwrap()).unwrap();
    let (_, text) = openssl_all(
        dir,
        &["ocsp", "-respin", "bad.der", "-resp_text", "-noverify"],
    );
    assert!(text.contains("malformedrequest"), "{text}");

    // The owner reports the key lost: its certificate is revoked, and OCSP
    // says so at once.
    let (s, v) = rita
        .api
        .post_json(
            &format!("/api/devices/{serial}/state"),
            &json!({"state": "lost", "reason": "left on a train"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let out = site.ocsp();
    assert!(out.contains("cert.pem: revoked"), "{out}");

    // The revocation has the CRL rebuilt, in the background (auto-rebuild
    // alone would wait for the grace period): it lists the certificate, and
    // its nextUpdate is the full lifetime ahead (72 h).
    let hex = cert_serial.replace(':', "").to_uppercase();
    let (s, h) = (&site, &hex);
    let listed = kleidia_tests::wait_until(std::time::Duration::from_secs(60), || async move {
        s.served_crl().await.1.contains(h)
    })
    .await;
    assert!(listed, "{hex} is not on the served CRL");
    let (next, text) = site.served_crl().await;
    assert!(text.contains(&hex), "{hex} not in\n{text}");
    let ahead = next.saturating_sub(now());
    assert!(
        (71 * HOUR..=72 * HOUR).contains(&ahead),
        "nextUpdate {ahead}s ahead\n{text}"
    );

    // A rebuild through OpenBao (as an operator or auto-rebuild does) too.
    let before = text
        .lines()
        .find(|l| l.contains("Last Update"))
        .unwrap()
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    site.root_bao().get("pki_int/crl/rotate").await.unwrap();
    let direct = site.openbao_crl().await;
    let (next, text) = crl_next_update(dir, &direct);
    assert!(!text.contains(&before), "not rebuilt:\n{text}");
    assert!(text.contains(&hex), "{hex} not in\n{text}");
    assert!(next > now() + 71 * HOUR, "{text}");
}

#[tokio::test]
async fn bootstrap_turns_on_auto_rebuild_and_auto_tidy_and_replaces_a_stale_crl() {
    let site = start().await;
    let bao = site.root_bao();
    let dir = site.dir();

    // As bootstrapped: auto-rebuilt CRLs whose grace is shorter than their
    // expiry, periodic tidy, the OCSP URL.
    let crl = bao.get("pki_int/config/crl").await.unwrap()["data"].clone();
    assert_eq!(crl["auto_rebuild"], true, "{crl}");
    assert_eq!(crl["expiry"], "72h", "{crl}");
    assert_eq!(crl["auto_rebuild_grace_period"], "48h", "{crl}");
    let root_crl = bao.get("pki/config/crl").await.unwrap()["data"].clone();
    assert_eq!(root_crl["auto_rebuild"], true, "{root_crl}");
    assert_eq!(root_crl["expiry"], "720h", "{root_crl}");
    assert_eq!(root_crl["auto_rebuild_grace_period"], "480h", "{root_crl}");
    let tidy = bao.get("pki_int/config/auto-tidy").await.unwrap()["data"].clone();
    assert_eq!(tidy["enabled"], true, "{tidy}");
    assert_eq!(tidy["tidy_cert_store"], true, "{tidy}");
    assert_eq!(tidy["tidy_revoked_certs"], true, "{tidy}");
    assert_eq!(tidy["interval_duration"], 12 * HOUR, "{tidy}");
    assert_eq!(tidy["safety_buffer"], 72 * HOUR, "{tidy}");
    let urls = bao.get("pki_int/config/urls").await.unwrap()["data"].clone();
    assert_eq!(
        urls["ocsp_servers"],
        json!([site.url("/pki/ocsp")]),
        "{urls}"
    );
    assert_eq!(
        urls["crl_distribution_points"],
        json!([site.url("/pki/crl")]),
        "{urls}"
    );
    let (next, _) = site.served_crl().await;
    assert!(next > now() + 71 * HOUR);

    // Turn it back into an installation from before: no auto-rebuild, no
    // tidy, no OCSP URL, and a CRL that has gone stale.
    bao.post(
        "pki_int/config/crl",
        &json!({"auto_rebuild": false, "expiry": "2s"}),
    )
    .await
    .unwrap();
    bao.post("pki_int/config/auto-tidy", &json!({"enabled": false}))
        .await
        .unwrap();
    bao.post("pki_int/config/urls", &json!({"ocsp_servers": []}))
        .await
        .unwrap();
    bao.get("pki_int/crl/rotate").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let stale = site.openbao_crl().await;
    let (next, text) = crl_next_update(dir, &stale);
    assert!(next < now(), "not stale yet:\n{text}");

    let (ok, out, err) = site.bootstrap();
    assert!(ok, "{out}\n{err}");
    for line in [
        format!("updated   pki_int/ OCSP URL ({}/pki/ocsp)", site.base_url()),
        "updated   pki_int/ CRL auto-rebuilt, expiry 72h, rebuilt 48h before it".into(),
        "updated   pki_int/ CRL rebuilt with the new lifetime".into(),
        "updated   pki_int/ auto-tidy every 12h of certificates expired over 72h ago".into(),
        "in place  pki/ CRL auto-rebuilt, expiry 720h, rebuilt 480h before it".into(),
    ] {
        assert!(out.contains(&line), "{line:?} not in\n{out}");
    }
    // The app's cache may still hold the CRL it served above, for 30 s at
    // most; OpenBao's own is fresh now, and Kleidia's is by then.
    let fresh = site.openbao_crl().await;
    let (next, text) = crl_next_update(dir, &fresh);
    assert!(next > now() + 71 * HOUR, "{text}");
    let s = &site;
    let served_fresh =
        kleidia_tests::wait_until(std::time::Duration::from_secs(40), || async move {
            s.served_crl().await.0 > now() + 71 * HOUR
        })
        .await;
    assert!(served_fresh, "/pki/crl still serves the old CRL");

    // And a second run finds everything in place.
    let (ok, out, err) = site.bootstrap();
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("nothing changed"), "{out}");
}
