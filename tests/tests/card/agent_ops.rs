//! Every agent endpoint's success path and its card errors.

use std::process::Command;

use kleidia_protocol::agent::*;
use kleidia_tests::card::{DEFAULT_PIN, DEFAULT_PUK};
use yubikey::{MgmAlgorithmId, MgmKey, Serial, YubiKey};

use super::{default_mgm_hex, expect_error, lock, ok_json, pin_retries, Env};

fn set_pin_params(env: &Env, current: &[u8], new: &[u8]) -> SetPinParams {
    SetPinParams {
        serial: env.serial(),
        current_pin: env.agent.encrypt(current),
        new_pin: env.agent.encrypt(new),
    }
}

fn csr_params(env: &Env, slot: PivSlot, algorithm: KeyAlgorithm) -> GenerateCsrParams {
    GenerateCsrParams {
        serial: env.serial(),
        slot,
        algorithm,
        pin_policy: PinPolicy::Once,
        touch_policy: TouchPolicy::Never,
        subject: "CN=alice,O=Kleidia Test".into(),
        management_key: env.agent.encrypt(default_mgm_hex().as_bytes()),
        pin: Some(env.agent.encrypt(DEFAULT_PIN)),
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test]
async fn the_agent_describes_itself_and_serves_a_3072_bit_public_key() {
    let _l = lock().await;
    let agent = kleidia_tests::agent::TestAgent::spawn().await.unwrap();
    let wk: WellKnown = ok_json(agent.get("/.well-known/kleidia-agent").await.unwrap()).await;
    assert_eq!(wk.service, "kleidia-agent");
    assert_eq!(wk.agent_key_fingerprint, agent.fingerprint);
    let pk: PubKey = ok_json(agent.get("/pubkey").await.unwrap()).await;
    assert!(pk.public_key_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert!(pk.bits >= 3072);
    assert_eq!(pk.algorithm, "RSA-OAEP-256");
    let health: Health = ok_json(agent.get("/health").await.unwrap()).await;
    assert_eq!((health.status.as_str(), health.decryptions), ("ok", 0));
    let info: SystemInfo = ok_json(agent.get("/system/info").await.unwrap()).await;
    assert!(info.ticket_key_loaded);
    assert!(info.allow_virtual_readers);
    assert_eq!(info.agent_key_fingerprint, agent.fingerprint);
    assert_eq!(info.pid, agent.proc.pid());

    // A restart makes a new key: the private key is nowhere on disk to reload.
    let mut agent = agent;
    let before = agent.fingerprint.clone();
    agent.restart().await.unwrap();
    assert_ne!(agent.fingerprint, before);
    for entry in std::fs::read_dir(&agent.state_dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }
}

#[tokio::test]
async fn discover_lists_the_virtual_yubikey_only_when_virtual_readers_are_allowed() {
    let _l = lock().await;
    let env = Env::new(31000001).await;
    let d: Discover = ok_json(env.agent.get("/discover").await.unwrap()).await;
    assert_eq!(d.yubikeys.len(), 1, "{d:?}");
    let k = &d.yubikeys[0];
    assert_eq!(
        (k.serial, k.firmware.as_str(), k.reader.as_str()),
        (31000001, "5.7.1", "Virtual PCD 00 00")
    );
    assert_eq!(k.form_factor.as_deref(), Some("usb_a_keychain"));

    let strict = kleidia_tests::agent::TestAgent::spawn_with(kleidia_tests::agent::AgentOptions {
        allow_virtual_readers: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let d: Discover = ok_json(strict.get("/discover").await.unwrap()).await;
    assert!(d.yubikeys.is_empty(), "{d:?}");
    let r = strict.get("/piv/info?serial=31000001").await.unwrap();
    expect_error(r, 404, codes::NO_YUBIKEY).await;
}

#[tokio::test]
async fn piv_info_and_check_defaults_of_a_factory_key_show_defaults_and_full_retries() {
    let _l = lock().await;
    let env = Env::new(31000002).await;
    let info: PivInfo = ok_json(env.agent.get("/piv/info?serial=31000002").await.unwrap()).await;
    assert_eq!(info.pin_retries, Some(3));
    assert_eq!(info.puk_retries, Some(3));
    assert_eq!(
        info.management_key_algorithm,
        Some(ManagementKeyAlgorithm::Aes192)
    );
    assert_eq!(
        info.defaults,
        DefaultCredentials {
            pin: Some(true),
            puk: Some(true),
            management_key: Some(true)
        }
    );
    assert_eq!(info.slots.len(), 4);
    assert!(
        info.slots
            .iter()
            .all(|s| s.key.is_none() && s.certificate.is_none()),
        "{info:?}"
    );

    let cd: CheckDefaults = ok_json(
        env.agent
            .get("/piv/check-defaults?serial=31000002")
            .await
            .unwrap(),
    )
    .await;
    assert!(cd.metadata_supported);
    assert_eq!(cd.defaults, info.defaults);
    // Reading all that used no PIN attempt.
    assert_eq!(pin_retries(31000002), 3);

    let r = env.agent.get("/piv/info?serial=99999999").await.unwrap();
    expect_error(r, 404, codes::YUBIKEY_NOT_FOUND).await;
    let r = env.agent.get("/piv/info?serial=abc").await.unwrap();
    expect_error(r, 400, codes::INVALID_REQUEST).await;
}

#[tokio::test]
async fn set_pin_with_a_ticket_changes_the_pin_and_logs_no_secret() {
    let _l = lock().await;
    let env = Env::new(31000003).await;
    let p = set_pin_params(&env, DEFAULT_PIN, b"worm4821");
    let done: OperationDone = ok_json(env.agent.run("/piv/set-pin", &p).await.unwrap()).await;
    assert!(done.ok);
    assert_eq!(
        (done.operation, done.serial),
        (kleidia_protocol::ticket::Operation::SetPin, 31000003)
    );
    assert_eq!(env.agent.decryptions().await.unwrap(), 2);

    let mut yk = YubiKey::open_by_serial(Serial(31000003)).unwrap();
    yk.verify_pin(b"worm4821").unwrap();
    drop(yk);
    let cd: CheckDefaults = ok_json(
        env.agent
            .get("/piv/check-defaults?serial=31000003")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(cd.defaults.pin, Some(false));
    let log = env.agent.log_text();
    assert!(log.contains("ticket accepted"), "{log}");
    assert!(
        !log.contains("worm4821") && !log.contains("123456"),
        "{log}"
    );
}

#[tokio::test]
async fn a_wrong_current_pin_is_reported_with_the_retries_left_and_then_as_blocked() {
    let _l = lock().await;
    let env = Env::new(31000004).await;
    for left in [2u8, 1] {
        let p = set_pin_params(&env, b"999999", b"11223344");
        let body = expect_error(
            env.agent.run("/piv/set-pin", &p).await.unwrap(),
            403,
            codes::WRONG_PIN,
        )
        .await;
        assert_eq!(body.retries_left, Some(left));
        assert_eq!(pin_retries(31000004), left);
    }
    let p = set_pin_params(&env, b"999999", b"11223344");
    expect_error(
        env.agent.run("/piv/set-pin", &p).await.unwrap(),
        403,
        codes::PIN_BLOCKED,
    )
    .await;
    // Blocked for good: even the right PIN is refused as blocked.
    let p = set_pin_params(&env, DEFAULT_PIN, b"11223344");
    expect_error(
        env.agent.run("/piv/set-pin", &p).await.unwrap(),
        403,
        codes::PIN_BLOCKED,
    )
    .await;

    // The PUK unblocks it with a new PIN.
    let p = UnblockPinParams {
        serial: 31000004,
        puk: env.agent.encrypt(DEFAULT_PUK),
        new_pin: env.agent.encrypt(b"55667788"),
    };
    ok_json::<OperationDone>(env.agent.run("/piv/unblock-pin", &p).await.unwrap()).await;
    let mut yk = YubiKey::open_by_serial(Serial(31000004)).unwrap();
    yk.verify_pin(b"55667788").unwrap();
}

#[tokio::test]
async fn set_puk_changes_the_puk_and_a_wrong_puk_reports_retries_left() {
    let _l = lock().await;
    let env = Env::new(31000005).await;
    let p = SetPukParams {
        serial: 31000005,
        current_puk: env.agent.encrypt(DEFAULT_PUK),
        new_puk: env.agent.encrypt(b"87654321"),
    };
    ok_json::<OperationDone>(env.agent.run("/piv/set-puk", &p).await.unwrap()).await;
    let info: PivInfo = ok_json(env.agent.get("/piv/info?serial=31000005").await.unwrap()).await;
    assert_eq!(info.defaults.puk, Some(false));

    let p = UnblockPinParams {
        serial: 31000005,
        puk: env.agent.encrypt(DEFAULT_PUK),
        new_pin: env.agent.encrypt(b"13572468"),
    };
    let body = expect_error(
        env.agent.run("/piv/unblock-pin", &p).await.unwrap(),
        403,
        codes::WRONG_PUK,
    )
    .await;
    assert_eq!(body.retries_left, Some(2));
    let info: PivInfo = ok_json(env.agent.get("/piv/info?serial=31000005").await.unwrap()).await;
    assert_eq!(info.puk_retries, Some(2));
}

#[tokio::test]
async fn rotate_management_key_installs_the_new_key_and_a_wrong_key_is_reported() {
    let _l = lock().await;
    let env = Env::new(31000006).await;
    let new_hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let p = RotateManagementKeyParams {
        serial: 31000006,
        current_management_key: env.agent.encrypt(default_mgm_hex().as_bytes()),
        new_management_key: env.agent.encrypt(new_hex.as_bytes()),
        algorithm: ManagementKeyAlgorithm::Aes256,
        require_touch: false,
    };
    ok_json::<OperationDone>(
        env.agent
            .run("/piv/rotate-management-key", &p)
            .await
            .unwrap(),
    )
    .await;
    let info: PivInfo = ok_json(env.agent.get("/piv/info?serial=31000006").await.unwrap()).await;
    assert_eq!(
        info.management_key_algorithm,
        Some(ManagementKeyAlgorithm::Aes256)
    );
    assert_eq!(info.defaults.management_key, Some(false));
    let mut yk = YubiKey::open_by_serial(Serial(31000006)).unwrap();
    let key =
        MgmKey::from_bytes(hex::decode(new_hex).unwrap(), Some(MgmAlgorithmId::Aes256)).unwrap();
    yk.authenticate(&key).unwrap();
    drop(yk);

    // The factory key no longer works.
    let p = RotateManagementKeyParams {
        serial: 31000006,
        current_management_key: env
            .agent
            .encrypt(b"0102030405060708010203040506070801020304050607080102030405060708"),
        new_management_key: env.agent.encrypt(new_hex.as_bytes()),
        algorithm: ManagementKeyAlgorithm::Aes256,
        require_touch: false,
    };
    expect_error(
        env.agent
            .run("/piv/rotate-management-key", &p)
            .await
            .unwrap(),
        403,
        codes::WRONG_MANAGEMENT_KEY,
    )
    .await;
    let log = env.agent.log_text();
    assert!(log.contains("rotate_management_key"), "{log}");
    assert!(
        !log.contains(new_hex) && !log.contains(&default_mgm_hex()),
        "{log}"
    );
}

#[tokio::test]
async fn generate_csr_returns_a_csr_signed_on_the_device_with_an_attestation_chain_to_the_test_root(
) {
    let _l = lock().await;
    let env = Env::new(31000007).await;
    let p = csr_params(&env, PivSlot::Authentication, KeyAlgorithm::EccP256);
    let r: GeneratedCsr = ok_json(env.agent.run("/piv/generate-csr", &p).await.unwrap()).await;
    assert_eq!(
        (r.serial, r.slot, r.algorithm),
        (31000007, PivSlot::Authentication, KeyAlgorithm::EccP256)
    );
    assert_eq!(r.attestation_chain_pem.len(), 2);

    let dir = env.dir.path();
    std::fs::write(dir.join("csr.pem"), &r.csr_pem).unwrap();
    std::fs::write(dir.join("att.pem"), &r.attestation_chain_pem[0]).unwrap();
    std::fs::write(dir.join("f9.pem"), &r.attestation_chain_pem[1]).unwrap();
    std::fs::write(
        dir.join("root.pem"),
        env.key.attestation_root_pem().unwrap(),
    )
    .unwrap();
    let out = openssl(
        dir,
        &["req", "-in", "csr.pem", "-verify", "-noout", "-subject"],
    );
    assert!(out.contains("CN = alice"), "{out}");
    openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "f9.pem",
            "att.pem",
        ],
    );
    // The attested key is the CSR's key.
    let csr_key = openssl(dir, &["req", "-in", "csr.pem", "-pubkey", "-noout"]);
    let att_key = openssl(dir, &["x509", "-in", "att.pem", "-pubkey", "-noout"]);
    assert_eq!(csr_key, att_key);
    assert_eq!(csr_key.trim(), r.public_key_pem.trim());

    let info: PivInfo = ok_json(env.agent.get("/piv/info?serial=31000007").await.unwrap()).await;
    let slot = info
        .slots
        .iter()
        .find(|s| s.slot == PivSlot::Authentication)
        .unwrap();
    let key = slot.key.as_ref().unwrap();
    assert_eq!(
        (key.algorithm.as_str(), key.origin.as_deref()),
        ("ecc_p256", Some("generated"))
    );
    assert_eq!(
        (key.pin_policy, key.touch_policy),
        (Some(PinPolicy::Once), Some(TouchPolicy::Never))
    );

    // POST /piv/attest gives the same kind of chain for the key now in the slot.
    let a: Attestation = ok_json(
        env.agent
            .run(
                "/piv/attest",
                &AttestParams {
                    serial: 31000007,
                    slot: PivSlot::Authentication,
                },
            )
            .await
            .unwrap(),
    )
    .await;
    std::fs::write(dir.join("att2.pem"), &a.attestation_chain_pem[0]).unwrap();
    openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "f9.pem",
            "att2.pem",
        ],
    );
    let r = env
        .agent
        .run(
            "/piv/attest",
            &AttestParams {
                serial: 31000007,
                slot: PivSlot::Signature,
            },
        )
        .await
        .unwrap();
    expect_error(r, 422, codes::EMPTY_SLOT).await;
}

#[tokio::test]
async fn an_rsa_csr_is_signed_on_the_device_too() {
    let _l = lock().await;
    let env = Env::new(31000008).await;
    let p = csr_params(&env, PivSlot::Signature, KeyAlgorithm::Rsa2048);
    let mut p = p;
    p.pin_policy = PinPolicy::Always;
    let r: GeneratedCsr = ok_json(env.agent.run("/piv/generate-csr", &p).await.unwrap()).await;
    std::fs::write(env.dir.path().join("csr.pem"), &r.csr_pem).unwrap();
    let out = openssl(
        env.dir.path(),
        &["req", "-in", "csr.pem", "-verify", "-noout", "-text"],
    );
    assert!(out.contains("2048 bit"), "{out}");
}

#[tokio::test]
async fn import_certificate_stores_a_certificate_for_the_slot_key_and_refuses_another_key() {
    let _l = lock().await;
    let env = Env::new(31000009).await;
    let r: GeneratedCsr = ok_json(
        env.agent
            .run(
                "/piv/generate-csr",
                &csr_params(&env, PivSlot::Authentication, KeyAlgorithm::EccP256),
            )
            .await
            .unwrap(),
    )
    .await;
    let dir = env.dir.path();
    std::fs::write(dir.join("csr.pem"), &r.csr_pem).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Kleidia Test CA",
            "-days",
            "1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "csr.pem",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-days",
            "30",
            "-set_serial",
            "4660",
            "-out",
            "cert.pem",
        ],
    );
    let cert_pem = std::fs::read_to_string(dir.join("cert.pem")).unwrap();

    // A certificate for a different key (the CA's own) does not go in.
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let p = ImportCertificateParams {
        serial: 31000009,
        slot: PivSlot::Authentication,
        certificate_pem: ca_pem,
        management_key: env.agent.encrypt(default_mgm_hex().as_bytes()),
    };
    expect_error(
        env.agent.run("/piv/import-certificate", &p).await.unwrap(),
        422,
        codes::CERTIFICATE_MISMATCH,
    )
    .await;

    let p = ImportCertificateParams {
        serial: 31000009,
        slot: PivSlot::Authentication,
        certificate_pem: cert_pem,
        management_key: env.agent.encrypt(default_mgm_hex().as_bytes()),
    };
    ok_json::<OperationDone>(env.agent.run("/piv/import-certificate", &p).await.unwrap()).await;
    let info: PivInfo = ok_json(env.agent.get("/piv/info?serial=31000009").await.unwrap()).await;
    let cert = info.slots[0].certificate.as_ref().unwrap();
    assert!(cert.subject.contains("CN=alice"), "{cert:?}");
    assert!(cert.issuer.contains("CN=Kleidia Test CA"), "{cert:?}");
    assert_eq!(cert.serial_number, "1234");
    assert!(cert.not_after > cert.not_before + 29 * 86400);
    // ykman sees it as well.
    let out = kleidia_tests::card::ykman("Virtual PCD 00 00", &["piv", "info"]).unwrap();
    assert!(out.contains("alice"), "{out}");

    // Into an empty slot: nothing to match.
    let p = ImportCertificateParams {
        serial: 31000009,
        slot: PivSlot::KeyManagement,
        certificate_pem: std::fs::read_to_string(dir.join("cert.pem")).unwrap(),
        management_key: env.agent.encrypt(default_mgm_hex().as_bytes()),
    };
    expect_error(
        env.agent.run("/piv/import-certificate", &p).await.unwrap(),
        422,
        codes::EMPTY_SLOT,
    )
    .await;
}

#[tokio::test]
async fn reset_returns_a_used_key_to_factory_state() {
    let _l = lock().await;
    let env = Env::new(31000010).await;
    let p = set_pin_params(&env, DEFAULT_PIN, b"24681357");
    ok_json::<OperationDone>(env.agent.run("/piv/set-pin", &p).await.unwrap()).await;
    let mut csr = csr_params(&env, PivSlot::Authentication, KeyAlgorithm::EccP256);
    csr.pin = Some(env.agent.encrypt(b"24681357"));
    ok_json::<GeneratedCsr>(env.agent.run("/piv/generate-csr", &csr).await.unwrap()).await;
    let info: PivInfo = ok_json(env.agent.get("/piv/info?serial=31000010").await.unwrap()).await;
    assert_eq!(info.defaults.pin, Some(false));

    ok_json::<OperationDone>(
        env.agent
            .run("/piv/reset", &ResetParams { serial: 31000010 })
            .await
            .unwrap(),
    )
    .await;
    let info: PivInfo = ok_json(env.agent.get("/piv/info?serial=31000010").await.unwrap()).await;
    assert_eq!(
        info.defaults,
        DefaultCredentials {
            pin: Some(true),
            puk: Some(true),
            management_key: Some(true)
        }
    );
    assert_eq!((info.pin_retries, info.puk_retries), (Some(3), Some(3)));
    assert!(info.slots.iter().all(|s| s.key.is_none()), "{info:?}");
}

#[tokio::test]
async fn an_unplugged_or_absent_yubikey_gives_a_clear_error_and_a_replugged_one_works() {
    let _l = lock().await;
    let mut env = Env::new(31000011).await;
    env.key.unplug().unwrap();
    expect_error(
        env.agent.get("/piv/info?serial=31000011").await.unwrap(),
        404,
        codes::NO_YUBIKEY,
    )
    .await;
    let p = set_pin_params(&env, DEFAULT_PIN, b"97531864");
    expect_error(
        env.agent.run("/piv/set-pin", &p).await.unwrap(),
        404,
        codes::NO_YUBIKEY,
    )
    .await;
    let d: Discover = ok_json(env.agent.get("/discover").await.unwrap()).await;
    assert!(d.yubikeys.is_empty());
    env.key.replug().unwrap();
    let p = set_pin_params(&env, DEFAULT_PIN, b"97531864");
    ok_json::<OperationDone>(env.agent.run("/piv/set-pin", &p).await.unwrap()).await;
}

#[tokio::test]
async fn a_second_operation_on_a_busy_yubikey_gets_409_and_its_ticket_stays_usable() {
    let _l = lock().await;
    let env = Env::new(31000012).await;
    let slow = env.agent.signed(&csr_params(
        &env,
        PivSlot::Authentication,
        KeyAlgorithm::Rsa4096,
    ));
    let other = env
        .agent
        .signed(&set_pin_params(&env, DEFAULT_PIN, b"86420975"));
    let (a, b) = tokio::join!(env.agent.post("/piv/generate-csr", &slow), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let info = env.agent.get("/piv/info?serial=31000012").await.unwrap();
        let pin = env.agent.post("/piv/set-pin", &other).await.unwrap();
        (info, pin)
    });
    ok_json::<GeneratedCsr>(a.unwrap()).await;
    expect_error(b.0, 409, codes::DEVICE_BUSY).await;
    expect_error(b.1, 409, codes::DEVICE_BUSY).await;
    // The refused ticket was not used up: it works once the key is free.
    ok_json::<OperationDone>(env.agent.post("/piv/set-pin", &other).await.unwrap()).await;
}

#[tokio::test]
async fn firmware_without_aes_defaults_is_driven_with_its_3des_management_key() {
    let _l = lock().await;
    let env = Env::with_firmware(31000013, "5.4.3").await;
    let info: PivInfo = ok_json(env.agent.get("/piv/info?serial=31000013").await.unwrap()).await;
    assert_eq!(
        info.management_key_algorithm,
        Some(ManagementKeyAlgorithm::TripleDes)
    );
    let p = csr_params(&env, PivSlot::Authentication, KeyAlgorithm::EccP384);
    let r: GeneratedCsr = ok_json(env.agent.run("/piv/generate-csr", &p).await.unwrap()).await;
    assert!(r.csr_pem.contains("BEGIN CERTIFICATE REQUEST"));
}

#[tokio::test]
async fn a_yubikey_pulled_out_during_an_operation_is_reported_as_removed() {
    let _l = lock().await;
    let env = Env::new(31000014).await;
    let slow = env.agent.signed(&csr_params(
        &env,
        PivSlot::Authentication,
        KeyAlgorithm::Rsa4096,
    ));
    let (r, ()) = tokio::join!(env.agent.post("/piv/generate-csr", &slow), async {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        env.key.unplug().unwrap();
    });
    let (status, body) = super::error_of(r.unwrap()).await;
    assert_eq!(
        (status, body.error.as_str()),
        (409, codes::YUBIKEY_REMOVED),
        "{}",
        body.message
    );
}

#[tokio::test]
async fn the_agent_takes_its_settings_from_a_config_file_and_the_environment() {
    let _l = lock().await;
    let dir = tempfile::tempdir().unwrap();
    let key = kleidia_tests::card::VirtualYubiKey::plug(dir.path(), 31000015, "5.7.1", 0).unwrap();
    let vk = kleidia_protocol::ticket::TicketSigningKey::from_bytes(&[5; 32]).verifying_key();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "kleidia_url = \"https://kleidia.example.org\"\nticket_key = \"{}\"\nallow_virtual_readers = true\nstate_dir = \"{}\"\n",
            vk.to_base64(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let port = kleidia_tests::free_port();
    let child = std::process::Command::new(kleidia_tests::bin_path("kleidia-agent"))
        .arg("--config")
        .arg(&config)
        .env("KLEIDIA_AGENT_PORT", port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _agent = kleidia_tests::ChildGuard::new("kleidia-agent", child);
    let origin = "https://kleidia.example.org";
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/system/info");
    let up = kleidia_tests::wait_until(std::time::Duration::from_secs(30), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(url)
                .header("origin", origin)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    assert!(
        up,
        "the agent did not come up on the port from KLEIDIA_AGENT_PORT"
    );
    let info: SystemInfo = ok_json(
        http.get(&url)
            .header("origin", origin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(info.kleidia_url, "https://kleidia.example.org/");
    assert!(info.ticket_key_loaded && info.allow_virtual_readers);
    assert!(dir.path().join("state/used-tickets.json").exists());
    let d: Discover = ok_json(
        http.get(format!("http://127.0.0.1:{port}/discover"))
            .header("origin", origin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let serials: Vec<u32> = d.yubikeys.iter().map(|k| k.serial).collect();
    assert_eq!(serials, vec![key.serial]);

    // An unknown key in the file stops the agent with a clear message.
    std::fs::write(
        &config,
        "kleidia_url = \"https://kleidia.example.org\"\nbind = \"0.0.0.0\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(kleidia_tests::bin_path("kleidia-agent"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field"), "{err}");
}

#[tokio::test]
async fn discover_and_info_during_an_operation_on_another_key_all_succeed() {
    let _l = lock().await;
    let env = Env::new(31000016).await;
    let other =
        kleidia_tests::card::VirtualYubiKey::plug(env.dir.path(), 31000017, "5.7.1", 1).unwrap();
    let slow = env.agent.signed(&csr_params(
        &env,
        PivSlot::Authentication,
        KeyAlgorithm::Rsa4096,
    ));
    let (r, (d, info)) = tokio::join!(env.agent.post("/piv/generate-csr", &slow), async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let d = env.agent.get("/discover").await.unwrap();
        let info = env
            .agent
            .get(&format!("/piv/info?serial={}", other.serial))
            .await
            .unwrap();
        (d, info)
    });
    let csr: GeneratedCsr = ok_json(r.unwrap()).await;
    assert_eq!(csr.attestation_chain_pem.len(), 2);
    let d: Discover = ok_json(d).await;
    assert_eq!(d.yubikeys.len(), 2, "{d:?}");
    let info: PivInfo = ok_json(info).await;
    assert_eq!(info.serial, 31000017);
}
