//! Changing what protects a key through the agent, with tickets: PIN, PUK,
//! management key and reset, and their card errors.

use kleidia_protocol::agent::*;
use kleidia_tests::agent::{expect_error, ok_json, AgentWithKey};
use kleidia_tests::card::{default_mgm_hex, lock, pin_retries, DEFAULT_PIN, DEFAULT_PUK};
use yubikey::{MgmAlgorithmId, MgmKey, Serial, YubiKey};

#[tokio::test]
async fn set_pin_with_a_ticket_changes_the_pin_and_logs_no_secret() {
    let _l = lock().await;
    let env = AgentWithKey::new(31000003).await;
    let p = env.set_pin_params(DEFAULT_PIN, b"worm4821");
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
    let cd: CheckDefaults = env.agent.check_defaults(31000003).await;
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
    let env = AgentWithKey::new(31000004).await;
    for left in [2u8, 1] {
        let p = env.set_pin_params(b"999999", b"11223344");
        let body = expect_error(
            env.agent.run("/piv/set-pin", &p).await.unwrap(),
            403,
            codes::WRONG_PIN,
        )
        .await;
        assert_eq!(body.retries_left, Some(left));
        assert_eq!(pin_retries(31000004), left);
    }
    let p = env.set_pin_params(b"999999", b"11223344");
    expect_error(
        env.agent.run("/piv/set-pin", &p).await.unwrap(),
        403,
        codes::PIN_BLOCKED,
    )
    .await;
    // Blocked for good: even the right PIN is refused as blocked.
    let p = env.set_pin_params(DEFAULT_PIN, b"11223344");
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
        settle: false,
    };
    ok_json::<OperationDone>(env.agent.run("/piv/unblock-pin", &p).await.unwrap()).await;
    let mut yk = YubiKey::open_by_serial(Serial(31000004)).unwrap();
    yk.verify_pin(b"55667788").unwrap();
}

#[tokio::test]
async fn set_puk_changes_the_puk_and_a_wrong_puk_reports_retries_left() {
    let _l = lock().await;
    let env = AgentWithKey::new(31000005).await;
    let p = SetPukParams {
        serial: 31000005,
        current_puk: env.agent.encrypt(DEFAULT_PUK),
        new_puk: env.agent.encrypt(b"87654321"),
        settle: false,
    };
    ok_json::<OperationDone>(env.agent.run("/piv/set-puk", &p).await.unwrap()).await;
    let info: PivInfo = env.agent.piv_info(31000005).await;
    assert_eq!(info.defaults.puk, Some(false));

    let p = UnblockPinParams {
        serial: 31000005,
        puk: env.agent.encrypt(DEFAULT_PUK),
        new_pin: env.agent.encrypt(b"13572468"),
        settle: false,
    };
    let body = expect_error(
        env.agent.run("/piv/unblock-pin", &p).await.unwrap(),
        403,
        codes::WRONG_PUK,
    )
    .await;
    assert_eq!(body.retries_left, Some(2));
    let info: PivInfo = env.agent.piv_info(31000005).await;
    assert_eq!(info.puk_retries, Some(2));
}

#[tokio::test]
async fn rotate_management_key_installs_the_new_key_and_a_wrong_key_is_reported() {
    let _l = lock().await;
    let env = AgentWithKey::new(31000006).await;
    let new_hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let p = RotateManagementKeyParams {
        serial: 31000006,
        current_management_key: env.agent.encrypt(default_mgm_hex().as_bytes()),
        new_management_key: env.agent.encrypt(new_hex.as_bytes()),
        algorithm: ManagementKeyAlgorithm::Aes256,
        require_touch: false,
        settle: false,
    };
    ok_json::<OperationDone>(
        env.agent
            .run("/piv/rotate-management-key", &p)
            .await
            .unwrap(),
    )
    .await;
    let info: PivInfo = env.agent.piv_info(31000006).await;
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
        settle: false,
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
async fn reset_returns_a_used_key_to_factory_state() {
    let _l = lock().await;
    let env = AgentWithKey::new(31000010).await;
    let p = env.set_pin_params(DEFAULT_PIN, b"24681357");
    ok_json::<OperationDone>(env.agent.run("/piv/set-pin", &p).await.unwrap()).await;
    let mut csr = env.csr_params(PivSlot::Authentication, KeyAlgorithm::EccP256);
    csr.pin = Some(env.agent.encrypt(b"24681357"));
    ok_json::<GeneratedCsr>(env.agent.run("/piv/generate-csr", &csr).await.unwrap()).await;
    let info: PivInfo = env.agent.piv_info(31000010).await;
    assert_eq!(info.defaults.pin, Some(false));

    ok_json::<OperationDone>(
        env.agent
            .run("/piv/reset", &ResetParams { serial: 31000010 })
            .await
            .unwrap(),
    )
    .await;
    let info: PivInfo = env.agent.piv_info(31000010).await;
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
async fn a_second_operation_on_a_busy_yubikey_gets_409_and_its_ticket_stays_usable_while_a_read_waits(
) {
    let _l = lock().await;
    let env = AgentWithKey::new(31000012).await;
    let slow = env
        .agent
        .signed(&env.csr_params(PivSlot::Authentication, KeyAlgorithm::Rsa4096));
    let other = env
        .agent
        .signed(&env.set_pin_params(DEFAULT_PIN, b"86420975"));
    let (a, b) = tokio::join!(env.agent.post("/piv/generate-csr", &slow), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (info, pin) = tokio::join!(
            env.agent.get("/piv/info?serial=31000012"),
            env.agent.post("/piv/set-pin", &other)
        );
        (info.unwrap(), pin.unwrap())
    });
    ok_json::<GeneratedCsr>(a.unwrap()).await;
    // A read is not refused: it waits for the card and sees the new key.
    let info: PivInfo = ok_json(b.0).await;
    assert!(
        info.slots.iter().any(|s| s.key.is_some()),
        "read after the key was made: {info:?}"
    );
    expect_error(b.1, 409, codes::DEVICE_BUSY).await;
    // The refused ticket was not used up: it works once the key is free.
    ok_json::<OperationDone>(env.agent.post("/piv/set-pin", &other).await.unwrap()).await;
}
