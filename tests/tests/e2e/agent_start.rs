//! The agent listens at once and makes its RSA-3072 key in the background
//! (issue 17: it used to make the key before listening, seconds on a busy
//! core). `/health` answers `starting` until the key exists; whatever needs
//! the key waits for it, so an operation sent right away still succeeds.
//!
//! On a private pcscd with a software YubiKey (no `pcsc.lock`, the system
//! readers are not used).

use kleidia_protocol::agent::SetPinParams;
use kleidia_tests::agent::{AgentOptions, TestAgent};
use kleidia_tests::card::{VirtualYubiKey, DEFAULT_PIN};
use kleidia_tests::free_port;
use kleidia_tests::readers::PrivatePcscd;
use reqwest::StatusCode;

#[tokio::test]
async fn the_agent_answers_before_its_key_exists_and_an_operation_sent_at_once_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let pcscd = PrivatePcscd::start(18540, 2).unwrap();
    let serial = 32_170_001;
    let _key =
        VirtualYubiKey::plug_private(dir.path(), serial, "5.7.1", &pcscd.readers[0]).unwrap();

    let (agent, first, _) = TestAgent::start_watching_health(
        None,
        AgentOptions::default(),
        free_port(),
        dir.path().join("state"),
        dir.path().join("agent.log"),
        &[pcscd.env()],
    )
    .await
    .unwrap();
    // The first answer came while the key was still being made.
    assert_eq!(first.status, "starting", "{}", agent.log_text());
    assert_eq!(first.decryptions, 0);
    // Once the key is there (the harness read /pubkey, which waits for it).
    assert_eq!(agent.health().await.status, "ok");
    assert_eq!(agent.pubkey().await.bits, 3072);

    // An operation with secrets encrypted to that key: the PIN changes on
    // the card, and the card takes the new PIN (not the old one).
    let p = SetPinParams {
        serial,
        current_pin: agent.encrypt(DEFAULT_PIN),
        new_pin: agent.encrypt(b"271828"),
        settle: false,
    };
    let r = agent.run("/piv/set-pin", &p).await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(agent.decryptions().await.unwrap(), 2);
    let reader = pcscd.readers[0].name.as_str();
    pcscd
        .ykman(
            reader,
            &[
                "piv",
                "access",
                "change-pin",
                "-P",
                "271828",
                "-n",
                "271828",
            ],
        )
        .unwrap();
    assert!(pcscd
        .ykman(
            reader,
            &[
                "piv",
                "access",
                "change-pin",
                "-P",
                "123456",
                "-n",
                "123456"
            ]
        )
        .is_err());
}
