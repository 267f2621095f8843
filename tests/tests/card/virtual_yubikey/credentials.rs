//! PIN, PUK and management key of the software YubiKey: changes that
//! persist, blocking and unblocking, reset, and the factory keys per
//! firmware, cross-checked with `ykman` and `yubico-piv-tool`.

use kleidia_tests::card::{
    default_mgm, info_line, lock_blocking, open, ykman, yubico_piv_tool, VirtualYubiKey,
    DEFAULT_MGM_KEY, DEFAULT_PIN, DEFAULT_PUK,
};
use yubikey::piv::{self, AlgorithmId, ManagementSlotId, SlotId};
use yubikey::{Error, MgmAlgorithmId, MgmKey, PinPolicy, Serial, TouchPolicy, YubiKey};

#[test]
fn pin_and_puk_changes_persist_across_a_replug_and_show_in_ykman_and_yubico_piv_tool() {
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut key = VirtualYubiKey::plug(dir.path(), 12345678, "5.7.1", 0).unwrap();
    let reader = key.reader_name();
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(info.contains("WARNING: Using default PIN!"), "{info}");

    let mut yk = open(12345678);
    yk.change_pin(DEFAULT_PIN, b"24681357").unwrap();
    yk.change_puk(DEFAULT_PUK, b"97531864").unwrap();
    assert!(matches!(
        yk.verify_pin(DEFAULT_PIN),
        Err(Error::WrongPin { tries: 2 })
    ));
    yk.verify_pin(b"24681357").unwrap();
    assert!(matches!(
        yk.change_puk(DEFAULT_PUK, b"11223344"),
        Err(Error::WrongPin { tries: 2 })
    ));
    let pin = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Pin)).unwrap();
    assert_eq!(pin.default, Some(false));
    let puk = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Puk)).unwrap();
    assert_eq!(puk.default, Some(false));
    assert_eq!(
        puk.retries.map(|r| (r.retry_count, r.remaining_count)),
        Some((3, 2))
    );
    drop(yk);

    // Pull the key out and put it back: the new values stay, the PIN session does not.
    key.unplug().unwrap();
    assert!(matches!(
        YubiKey::open_by_serial(Serial(12345678)),
        Err(Error::NotFound)
    ));
    key.replug().unwrap();
    key.restart().unwrap();
    let mut yk = open(12345678);
    assert_eq!(yk.get_pin_retries().unwrap(), 3);
    yk.verify_pin(b"24681357").unwrap();
    yk.change_puk(b"97531864", b"11223344").unwrap();
    drop(yk);

    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(!info.contains("default PIN"), "{info}");
    assert_eq!(
        info_line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 3/3"
    );
    let status = yubico_piv_tool(reader, &["-a", "status"]).unwrap();
    assert!(status.contains("Serial Number:\t12345678"), "{status}");
    assert!(status.contains("PIN tries left:\t3"), "{status}");
    let state = key.state_json().unwrap();
    assert_eq!(state["pin"]["value"], hex::encode("24681357"));
    assert_eq!(state["puk"]["value"], hex::encode("11223344"));
    key.stop().unwrap();
}

#[test]
fn a_blocked_pin_is_unblocked_with_the_puk() {
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut key = VirtualYubiKey::plug(dir.path(), 12345678, "5.4.3", 0).unwrap();
    let reader = key.reader_name();
    let mut yk = open(12345678);
    assert!(matches!(
        yk.verify_pin(b"000000"),
        Err(Error::WrongPin { tries: 2 })
    ));
    assert!(matches!(
        yk.verify_pin(b"000000"),
        Err(Error::WrongPin { tries: 1 })
    ));
    assert!(matches!(
        yk.verify_pin(b"000000"),
        Err(Error::WrongPin { tries: 0 })
    ));
    assert!(
        matches!(
            yk.verify_pin(DEFAULT_PIN),
            Err(Error::WrongPin { tries: 0 })
        ),
        "blocked"
    );
    assert_eq!(yk.get_pin_retries().unwrap(), 0);
    drop(yk);

    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert_eq!(
        info_line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 0/3"
    );
    let status = yubico_piv_tool(reader, &["-a", "status"]).unwrap();
    assert!(status.contains("PIN tries left:\t0"), "{status}");

    let mut yk = open(12345678);
    assert!(matches!(
        yk.unblock_pin(b"87654321", b"135790"),
        Err(Error::WrongPin { tries: 2 })
    ));
    yk.unblock_pin(DEFAULT_PUK, b"135790").unwrap();
    yk.verify_pin(b"135790").unwrap();
    let puk = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Puk)).unwrap();
    assert_eq!(
        puk.retries.map(|r| r.remaining_count),
        Some(3),
        "a good PUK restores its counter"
    );
    drop(yk);
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert_eq!(
        info_line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 3/3"
    );

    // New retry counts (ykman asks the device, which also restores the default PIN and PUK).
    let mgm = hex::encode(DEFAULT_MGM_KEY);
    ykman(
        reader,
        &[
            "piv",
            "access",
            "set-retries",
            "5",
            "4",
            "-m",
            &mgm,
            "-P",
            "135790",
            "-f",
        ],
    )
    .unwrap();
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert_eq!(
        info_line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 5/5"
    );
    assert!(info.contains("WARNING: Using default PIN!"), "{info}");
    let mut yk = open(12345678);
    let puk = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Puk)).unwrap();
    assert_eq!(
        puk.retries.map(|r| (r.retry_count, r.remaining_count)),
        Some((4, 4))
    );
    yk.verify_pin(DEFAULT_PIN).unwrap();
    drop(yk);
    key.stop().unwrap();
}

#[test]
fn a_key_with_pin_and_puk_blocked_resets_to_factory_defaults() {
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut key = VirtualYubiKey::plug(dir.path(), 12345678, "5.7.1", 0).unwrap();
    let reader = key.reader_name();
    let mut yk = open(12345678);
    yk.authenticate(&default_mgm(&yk)).unwrap();
    piv::generate(
        &mut yk,
        SlotId::Authentication,
        AlgorithmId::EccP256,
        PinPolicy::Default,
        TouchPolicy::Default,
    )
    .unwrap();
    let new_mgm = MgmKey::from_bytes([7u8; 16], Some(MgmAlgorithmId::Aes128)).unwrap();
    new_mgm.set_manual(&mut yk, false).unwrap();
    yk.change_pin(DEFAULT_PIN, b"555555").unwrap();
    assert!(yk.reset_device().is_err(), "PIN and PUK still usable");

    for _ in 0..3 {
        let _ = yk.verify_pin(b"000000");
    }
    assert!(yk.reset_device().is_err(), "PUK still usable");
    // The crate burns the PUK and records "PUK blocked" in ykman's admin data object.
    yk.block_puk().unwrap();
    assert!(matches!(
        yk.unblock_pin(DEFAULT_PUK, b"000000"),
        Err(Error::PinLocked)
    ));
    // ykman resets the card when it lets go, so reconnect afterwards.
    drop(yk);
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(info.contains("PUK blocked."), "{info}");
    assert_eq!(
        info_line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 0/3"
    );
    let mut yk = open(12345678);
    yk.reset_device().unwrap();
    drop(yk);

    let mut yk = open(12345678);
    yk.verify_pin(DEFAULT_PIN).unwrap();
    yk.authenticate(&default_mgm(&yk)).unwrap();
    assert!(matches!(
        piv::metadata(&mut yk, SlotId::Authentication),
        Err(Error::NotFound)
    ));
    assert_eq!(
        piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Pin))
            .unwrap()
            .default,
        Some(true)
    );
    assert_eq!(
        piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Management))
            .unwrap()
            .default,
        Some(true)
    );
    drop(yk);
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(info.contains("WARNING: Using default PIN!"), "{info}");
    assert!(
        info.contains("WARNING: Using default Management key!"),
        "{info}"
    );
    assert_eq!(
        info_line(&info, "Management key algorithm:"),
        "Management key algorithm: AES192"
    );
    assert_eq!(
        info_line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 3/3"
    );
    let state = key.state_json().unwrap();
    let slots: Vec<&String> = state["slots"].as_object().unwrap().keys().collect();
    assert_eq!(
        slots,
        vec!["f9"],
        "only the attestation key survives a reset"
    );
    key.stop().unwrap();
}

#[test]
fn the_factory_3des_key_authenticates_on_5_4_3_and_aes_192_on_5_7() {
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut old = VirtualYubiKey::plug(dir.path(), 11111111, "5.4.3", 0).unwrap();
    let mut new = VirtualYubiKey::plug(dir.path(), 22222222, "5.7.1", 1).unwrap();

    let mut yk = open(11111111);
    let tdes = MgmKey::from_bytes(DEFAULT_MGM_KEY, Some(MgmAlgorithmId::ThreeDes)).unwrap();
    let aes = MgmKey::from_bytes(DEFAULT_MGM_KEY, Some(MgmAlgorithmId::Aes192)).unwrap();
    assert_eq!(default_mgm(&yk).algorithm_id(), MgmAlgorithmId::ThreeDes);
    yk.authenticate(&tdes).unwrap();
    assert!(
        yk.authenticate(&aes).is_err(),
        "a 5.4.3 key has a 3DES factory key"
    );
    let meta = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Management)).unwrap();
    assert_eq!(format!("{:?}", meta.algorithm), "Management(ThreeDes)");
    drop(yk);

    let mut yk = open(22222222);
    assert_eq!(default_mgm(&yk).algorithm_id(), MgmAlgorithmId::Aes192);
    yk.authenticate(&aes).unwrap();
    assert!(yk.authenticate(&tdes).is_err());
    let wrong = MgmKey::from_bytes([0x42u8; 24], Some(MgmAlgorithmId::Aes192)).unwrap();
    assert!(matches!(
        yk.authenticate(&wrong),
        Err(Error::AuthenticationError)
    ));
    drop(yk);

    let info = ykman(old.reader_name(), &["piv", "info"]).unwrap();
    assert_eq!(
        info_line(&info, "Management key algorithm:"),
        "Management key algorithm: TDES"
    );
    let info = ykman(new.reader_name(), &["piv", "info"]).unwrap();
    assert_eq!(
        info_line(&info, "Management key algorithm:"),
        "Management key algorithm: AES192"
    );
    old.stop().unwrap();
    new.stop().unwrap();
}

#[test]
fn a_new_management_key_is_required_after_it_is_set() {
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut key = VirtualYubiKey::plug(dir.path(), 12345678, "5.4.3", 0).unwrap();
    let reader = key.reader_name();
    let new_key = [0x5Au8; 32];
    let mut yk = open(12345678);
    yk.authenticate(&default_mgm(&yk)).unwrap();
    MgmKey::from_bytes(new_key, Some(MgmAlgorithmId::Aes256))
        .unwrap()
        .set_manual(&mut yk, false)
        .unwrap();
    drop(yk);
    key.restart().unwrap();

    let mut yk = open(12345678);
    assert!(yk.authenticate(&default_mgm(&yk)).is_err());
    let mgm = MgmKey::from_bytes(new_key, Some(MgmAlgorithmId::Aes256)).unwrap();
    yk.authenticate(&mgm).unwrap();
    let meta = piv::metadata(&mut yk, SlotId::Management(ManagementSlotId::Management)).unwrap();
    assert_eq!(meta.default, Some(false));
    drop(yk);

    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert_eq!(
        info_line(&info, "Management key algorithm:"),
        "Management key algorithm: AES256"
    );
    assert!(!info.contains("default Management key"), "{info}");
    // ykman authenticates with the new key too: generating needs it.
    let hex_key = hex::encode(new_key);
    let out = ykman(
        reader,
        &[
            "piv", "keys", "generate", "-m", &hex_key, "-a", "ECCP256", "9e", "-",
        ],
    )
    .unwrap();
    assert!(out.contains("BEGIN PUBLIC KEY"), "{out}");
    assert!(ykman(
        reader,
        &[
            "piv",
            "keys",
            "generate",
            "-m",
            &hex::encode(DEFAULT_MGM_KEY),
            "9d",
            "-"
        ]
    )
    .is_err());
    let state = key.state_json().unwrap();
    assert_eq!(state["management_key"]["algorithm"], 0x0C);
    assert!(state["slots"]["9e"].is_object());
    key.stop().unwrap();
}
