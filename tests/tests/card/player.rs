//! The protocol-level agent player (`kleidia_tests::player`) against the
//! real stack: a factory key is enrolled end to end through the real agent
//! and pcscd, its PIN is changed, and what the card and OpenBao hold is
//! what a person would check afterwards.

use kleidia_tests::browser::Stack;
use kleidia_tests::card::{pin_verifies, DEFAULT_PIN};
use kleidia_tests::player::{escrow_opens_card, Player};

const SERIAL: u32 = 47000001;
const PIN: &str = "582913";
const NEW_PIN: &str = "730164";

#[tokio::test(flavor = "multi_thread")]
async fn a_player_enrolls_a_factory_key_end_to_end_and_changes_its_pin() {
    let stack = Stack::start(SERIAL).await.unwrap();
    let agent = stack.agent.running().unwrap();
    let player = Player::sign_in(&stack.app, "paula", "user", agent)
        .await
        .unwrap();

    let active = player.enroll(SERIAL, PIN).await;
    stack.check(active.is_ok(), &format!("enroll: {active:?}"));
    let active = active.unwrap();
    assert_eq!(active["device"]["state"], "active", "{active}");
    let issued: Vec<_> = active["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "issued")
        .collect();
    assert!(!issued.is_empty(), "{active}");
    let escrow = escrow_opens_card(&stack.app, SERIAL).await.unwrap();
    assert_eq!(escrow["pin"], PIN);
    assert!(!pin_verifies(
        SERIAL,
        std::str::from_utf8(DEFAULT_PIN).unwrap()
    ));
    assert!(pin_verifies(SERIAL, PIN));

    // Enrolling again is refused: it is active.
    let again = player.enroll(SERIAL, PIN).await.unwrap_err();
    assert!(again.to_string().contains("already enrolled"), "{again:#}");

    let changed = player.change_pin(SERIAL, Some(NEW_PIN)).await;
    stack.check(changed.is_ok(), &format!("change PIN: {changed:?}"));
    let escrow = escrow_opens_card(&stack.app, SERIAL).await.unwrap();
    assert_eq!(escrow["pin"], NEW_PIN);
    assert!(pin_verifies(SERIAL, NEW_PIN));
    let dev = stack.device(SERIAL).await.unwrap();
    let pending: Vec<_> = dev["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["state"] == "pending")
        .collect();
    assert!(pending.is_empty(), "{pending:?}");
    let (ok, out) = stack.app.audit_verify();
    assert!(ok, "{out}");
}
