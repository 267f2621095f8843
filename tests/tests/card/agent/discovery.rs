//! Reading the agent and the keys it sees: its identity and key, discovery,
//! PIV info, keys that come and go, and its configuration.

use kleidia_protocol::agent::*;
use kleidia_tests::agent::{expect_error, ok_json, AgentWithKey};
use kleidia_tests::card::{lock, pin_retries, DEFAULT_PIN};

#[tokio::test]
async fn the_agent_describes_itself_and_serves_a_3072_bit_public_key() {
    let _l = lock().await;
    let agent = kleidia_tests::agent::TestAgent::spawn().await.unwrap();
    let wk: WellKnown = agent.well_known().await;
    assert_eq!(wk.service, "kleidia-agent");
    assert_eq!(wk.agent_key_fingerprint, agent.fingerprint);
    let pk: PubKey = agent.pubkey().await;
    assert!(pk.public_key_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert!(pk.bits >= 3072);
    assert_eq!(pk.algorithm, "RSA-OAEP-256");
    let health: Health = agent.health().await;
    assert_eq!((health.status.as_str(), health.decryptions), ("ok", 0));
    let info: SystemInfo = agent.system_info().await;
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
    let env = AgentWithKey::new(31000001).await;
    let d: Discover = env.agent.discover().await;
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
    let d: Discover = strict.discover().await;
    assert!(d.yubikeys.is_empty(), "{d:?}");
    let r = strict.get("/piv/info?serial=31000001").await.unwrap();
    expect_error(r, 404, codes::NO_YUBIKEY).await;
}

#[tokio::test]
async fn piv_info_and_check_defaults_of_a_factory_key_show_defaults_and_full_retries() {
    let _l = lock().await;
    let env = AgentWithKey::new(31000002).await;
    let info: PivInfo = env.agent.piv_info(31000002).await;
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

    let cd: CheckDefaults = env.agent.check_defaults(31000002).await;
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
async fn an_unplugged_or_absent_yubikey_gives_a_clear_error_and_a_replugged_one_works() {
    let _l = lock().await;
    let mut env = AgentWithKey::new(31000011).await;
    env.key.unplug().unwrap();
    expect_error(
        env.agent.get("/piv/info?serial=31000011").await.unwrap(),
        404,
        codes::NO_YUBIKEY,
    )
    .await;
    let p = env.set_pin_params(DEFAULT_PIN, b"97531864");
    expect_error(
        env.agent.run("/piv/set-pin", &p).await.unwrap(),
        404,
        codes::NO_YUBIKEY,
    )
    .await;
    let d: Discover = env.agent.discover().await;
    assert!(d.yubikeys.is_empty());
    // Scans of empty readers are routine, not errors (issue 18 §7): the
    // agent's log has no ERROR line after them.
    for _ in 0..3 {
        let _: Discover = env.agent.discover().await;
    }
    let log = env.agent.log_text();
    assert!(!log.contains("ERROR"), "{log}");
    env.key.replug().unwrap();
    let p = env.set_pin_params(DEFAULT_PIN, b"97531864");
    ok_json::<OperationDone>(env.agent.run("/piv/set-pin", &p).await.unwrap()).await;
}

#[tokio::test]
async fn discover_and_info_during_an_operation_on_another_key_all_succeed() {
    let _l = lock().await;
    let env = AgentWithKey::new(31000016).await;
    let other =
        kleidia_tests::card::VirtualYubiKey::plug(env.dir.path(), 31000017, "5.7.1", 1).unwrap();
    let slow = env
        .agent
        .signed(&env.csr_params(PivSlot::Authentication, KeyAlgorithm::Rsa4096));
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
