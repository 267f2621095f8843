//! Keys and certificates through the agent: CSRs signed on the device with
//! their attestation, certificate import, and keys pulled out mid-operation.

use kleidia_protocol::agent::*;
use kleidia_tests::agent::{error_of, expect_error, ok_json, AgentWithKey};
use kleidia_tests::card::{default_mgm_hex, lock};
use kleidia_tests::openssl;

#[tokio::test]
async fn generate_csr_returns_a_csr_signed_on_the_device_with_an_attestation_chain_to_the_test_root(
) {
    let _l = lock().await;
    let env = AgentWithKey::new(31000007).await;
    let p = env.csr_params(PivSlot::Authentication, KeyAlgorithm::EccP256);
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
    )
    .unwrap();
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
    )
    .unwrap();
    // The attested key is the CSR's key.
    let csr_key = openssl(dir, &["req", "-in", "csr.pem", "-pubkey", "-noout"]).unwrap();
    let att_key = openssl(dir, &["x509", "-in", "att.pem", "-pubkey", "-noout"]).unwrap();
    assert_eq!(csr_key, att_key);
    assert_eq!(csr_key.trim(), r.public_key_pem.trim());

    let info: PivInfo = env.agent.piv_info(31000007).await;
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
    )
    .unwrap();
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
    let env = AgentWithKey::new(31000008).await;
    let p = env.csr_params(PivSlot::Signature, KeyAlgorithm::Rsa2048);
    let mut p = p;
    p.pin_policy = PinPolicy::Always;
    let r: GeneratedCsr = ok_json(env.agent.run("/piv/generate-csr", &p).await.unwrap()).await;
    std::fs::write(env.dir.path().join("csr.pem"), &r.csr_pem).unwrap();
    let out = openssl(
        env.dir.path(),
        &["req", "-in", "csr.pem", "-verify", "-noout", "-text"],
    )
    .unwrap();
    assert!(out.contains("2048 bit"), "{out}");
}

#[tokio::test]
async fn import_certificate_stores_a_certificate_for_the_slot_key_and_refuses_another_key() {
    let _l = lock().await;
    let env = AgentWithKey::new(31000009).await;
    let r: GeneratedCsr = ok_json(
        env.agent
            .run(
                "/piv/generate-csr",
                &env.csr_params(PivSlot::Authentication, KeyAlgorithm::EccP256),
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
    )
    .unwrap();
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
    )
    .unwrap();
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
    let info: PivInfo = env.agent.piv_info(31000009).await;
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
async fn firmware_without_aes_defaults_is_driven_with_its_3des_management_key() {
    let _l = lock().await;
    let env = AgentWithKey::with_firmware(31000013, "5.4.3").await;
    let info: PivInfo = env.agent.piv_info(31000013).await;
    assert_eq!(
        info.management_key_algorithm,
        Some(ManagementKeyAlgorithm::TripleDes)
    );
    let p = env.csr_params(PivSlot::Authentication, KeyAlgorithm::EccP384);
    let r: GeneratedCsr = ok_json(env.agent.run("/piv/generate-csr", &p).await.unwrap()).await;
    assert!(r.csr_pem.contains("BEGIN CERTIFICATE REQUEST"));
}

#[tokio::test]
async fn a_yubikey_pulled_out_during_an_operation_is_reported_as_removed() {
    let _l = lock().await;
    let env = AgentWithKey::new(31000014).await;
    let slow = env
        .agent
        .signed(&env.csr_params(PivSlot::Authentication, KeyAlgorithm::Rsa4096));
    let (r, ()) = tokio::join!(env.agent.post("/piv/generate-csr", &slow), async {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        env.key.unplug().unwrap();
    });
    let (status, body) = error_of(r.unwrap()).await;
    assert_eq!(
        (status, body.error.as_str()),
        (409, codes::YUBIKEY_REMOVED),
        "{}",
        body.message
    );
}
