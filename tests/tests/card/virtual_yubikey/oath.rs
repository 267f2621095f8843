//! The software YubiKey's OATH application through Debian's `ykman`: add,
//! list, codes (RFC 4226 vectors), rename, delete, reset, what survives a
//! replug, and that OATH and PIV do not touch each other.

use kleidia_tests::card::{info_line, lock_blocking, open, ykman, VirtualYubiKey, DEFAULT_PIN};

/// Base32 of the RFC 4226 test secret "12345678901234567890".
const RFC_SECRET_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn accounts(reader: &str) -> Vec<String> {
    ykman(reader, &["oath", "accounts", "list"])
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn ykman_adds_lists_codes_renames_and_deletes_oath_accounts_and_they_survive_a_replug() {
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut key = VirtualYubiKey::plug(dir.path(), 41000001, "5.7.1", 0).unwrap();
    let reader = key.reader_name();
    let info = ykman(reader, &["oath", "info"]).unwrap();
    assert!(info.contains("5.7.1"), "{info}");
    assert!(accounts(reader).is_empty());

    ykman(
        reader,
        &[
            "oath",
            "accounts",
            "add",
            "-i",
            "GitHub",
            "ada",
            "JBSWY3DPEHPK3PXP",
        ],
    )
    .unwrap();
    ykman(
        reader,
        &[
            "oath",
            "accounts",
            "add",
            "-o",
            "HOTP",
            "-i",
            "VPN",
            "ada",
            RFC_SECRET_B32,
        ],
    )
    .unwrap();
    ykman(
        reader,
        &[
            "oath",
            "accounts",
            "add",
            "-t",
            "-a",
            "SHA256",
            "-d",
            "8",
            "-i",
            "Bank",
            "ada",
            "JBSWY3DPEHPK3PXP",
        ],
    )
    .unwrap();
    assert_eq!(accounts(reader), ["Bank:ada", "GitHub:ada", "VPN:ada"]);
    let typed = ykman(reader, &["oath", "accounts", "list", "-o", "-P"]).unwrap();
    assert!(typed.contains("VPN:ada, HOTP"), "{typed}");
    assert!(typed.contains("GitHub:ada, TOTP, 30"), "{typed}");

    // HOTP codes are the RFC 4226 ones, and the counter moves on the card.
    let code = |reader: &str| {
        let out = ykman(reader, &["oath", "accounts", "code", "-s", "VPN:ada"]).unwrap();
        out.trim().to_string()
    };
    assert_eq!(code(reader), "755224");
    assert_eq!(code(reader), "287082");
    // A TOTP code: six digits, computed on the card (CALCULATE ALL).
    let all = ykman(reader, &["oath", "accounts", "code", "GitHub"]).unwrap();
    let line = info_line(&all, "GitHub:ada");
    let digits = line.split_whitespace().last().unwrap();
    assert!(
        digits.len() == 6 && digits.chars().all(|c| c.is_ascii_digit()),
        "{all}"
    );

    ykman(
        reader,
        &[
            "oath",
            "accounts",
            "rename",
            "-f",
            "GitHub:ada",
            "GitLab:ada",
        ],
    )
    .unwrap();
    ykman(reader, &["oath", "accounts", "delete", "-f", "Bank:ada"]).unwrap();
    assert_eq!(accounts(reader), ["GitLab:ada", "VPN:ada"]);

    // Pulled out and plugged in again (a new process on the same state
    // file): the accounts and the HOTP counter are still there.
    key.restart().unwrap();
    let reader = key.reader_name();
    assert_eq!(accounts(reader), ["GitLab:ada", "VPN:ada"]);
    assert_eq!(code(reader), "359152");
    let state = key.state_json().unwrap();
    let saved = state["oath"]["credentials"].as_array().unwrap();
    assert_eq!(saved.len(), 2);
    assert_eq!(saved[0]["name"], hex::encode("GitLab:ada"));
    assert_eq!(saved[1]["counter"], 3);
    key.stop().unwrap();
}

#[test]
fn ykman_oath_reset_deletes_every_account_and_leaves_piv_alone_and_a_piv_reset_leaves_oath() {
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut key = VirtualYubiKey::plug(dir.path(), 41000002, "5.4.3", 0).unwrap();
    let reader = key.reader_name();
    ykman(
        reader,
        &[
            "oath",
            "accounts",
            "add",
            "-i",
            "GitHub",
            "ada",
            "JBSWY3DPEHPK3PXP",
        ],
    )
    .unwrap();
    let mut yk = open(41000002);
    yk.change_pin(DEFAULT_PIN, b"24681357").unwrap();
    drop(yk);

    // A PIV reset (ykman blocks PIN and PUK itself) leaves the OATH accounts.
    ykman(reader, &["piv", "reset", "-f"]).unwrap();
    assert_eq!(accounts(reader), ["GitHub:ada"]);
    ykman(
        reader,
        &[
            "oath",
            "accounts",
            "add",
            "-i",
            "Mail",
            "ada",
            "JBSWY3DPEHPK3PXP",
        ],
    )
    .unwrap();
    let mut yk = open(41000002);
    yk.change_pin(DEFAULT_PIN, b"24681357").unwrap();
    drop(yk);
    let salt_before = key.state_json().unwrap()["oath"]["salt"].clone();

    let out = ykman(reader, &["oath", "reset", "-f"]).unwrap();
    assert!(out.contains("All OATH accounts have been deleted"), "{out}");
    assert!(accounts(reader).is_empty());
    // The PIN chosen before is still the PIN: OATH's reset is OATH's only.
    let mut yk = open(41000002);
    yk.verify_pin(b"24681357").unwrap();
    drop(yk);
    let state = key.state_json().unwrap();
    assert_eq!(state["oath"]["credentials"], serde_json::json!([]));
    assert_ne!(state["oath"]["salt"], salt_before, "a new application id");
    key.stop().unwrap();
}

#[test]
fn a_key_without_the_oath_application_says_so_to_ykman() {
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut key = VirtualYubiKey::plug_without_oath(dir.path(), 41000003, "5.7.1", 0).unwrap();
    let reader = key.reader_name();
    let info = ykman(reader, &["info"]).unwrap();
    let oath = info_line(&info, "OATH");
    assert!(!oath.contains("Enabled"), "{info}");
    let err = ykman(reader, &["oath", "accounts", "list"]).unwrap_err();
    assert!(!format!("{err:#}").is_empty());
    assert_eq!(key.state_json().unwrap()["oath"], serde_json::Value::Null);
    // PIV works as on any key.
    ykman(reader, &["piv", "info"]).unwrap();
    key.stop().unwrap();
}
