//! A secret change whose answer was lost (DESIGN §8, "a retry never costs
//! the card a try"; issue 12 hole 4): the software YubiKey applies the
//! change, SIGKILLs the agent waiting for the answer and drops the
//! connection without answering, and the retry from the device page (a
//! resume, through the presence step) settles it. Kleidia, the agent, pcscd and the key
//! are the real processes; the test plays the page in the browser.

use std::time::Duration;

use kleidia_protocol::agent::{OperationDone, PubKey};
use kleidia_tests::browser::Stack;
use kleidia_tests::card::{escrowed_mgm_key as mgm_key, info_line, open, pin_verifies, ykman};
use kleidia_tests::{is_presence_challenge, Person};
use reqwest::StatusCode;
use serde_json::{json, Value};

const PIN: &str = "529371";
const NEW_PIN: &str = "318642";

/// CHANGE REFERENCE (PIN and PUK) and SET MANAGEMENT KEY.
const INS_CHANGE_REFERENCE: u8 = 0x24;
const INS_SET_MANAGEMENT_KEY: u8 = 0xFF;

/// The owner at their workstation, with the real agent's key registered
/// to their session (as the page does when it finds the agent).
struct Page {
    stack: Stack,
    owner: Person,
    serial: u32,
}

impl Page {
    async fn start(serial: u32) -> Self {
        let stack = Stack::start(serial).await.unwrap();
        let owner = stack.app.person("olga", "user", "Olga Example").await;
        owner.register_ok(serial).await;
        let page = Self {
            stack,
            owner,
            serial,
        };
        page.register_agent().await;
        page
    }

    async fn register_agent(&self) {
        let agent = self.stack.agent.running().expect("the agent runs");
        let pk: PubKey = agent.get("/pubkey").await.unwrap().json().await.unwrap();
        let sid = self.owner.session_id();
        let (s, v) = self
            .owner
            .api
            .register_agent(&sid, &pk.public_key_pem)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// What the page posts to the agent for `op` (an authorised or
    /// resumed operation); the agent's HTTP status and body.
    async fn carry(&self, op: &Value) -> (StatusCode, Value) {
        let agent = self.stack.agent.running().expect("the agent runs");
        let r = agent
            .post(op["agent_path"].as_str().unwrap(), &op["request"])
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap())
    }

    /// An answer that is a presence challenge is carried as agent.js does:
    /// the card signs the server's nonce through the agent, and the proof
    /// (with the new PIN the page chose, if any) gets the ticket.
    async fn presence(
        &self,
        s: StatusCode,
        v: Value,
        new_pin: Option<&Value>,
    ) -> (StatusCode, Value) {
        if !is_presence_challenge(s, &v) {
            return (s, v);
        }
        let (ps, proof) = self.carry(&v).await;
        self.stack
            .check(ps == StatusCode::OK, &format!("presence: {ps}: {proof}"));
        let mut answer = json!({"challenge_id": v["challenge_id"], "proof": proof});
        if let Some(pin) = new_pin {
            answer["new_pin"] = pin.clone();
        }
        let id = v["operation_id"].as_str().unwrap();
        let path = format!("/api/yubikey/{}/operations/{id}/presence", self.serial);
        self.owner.api.post_json(&path, &answer).await
    }

    async fn authorize(&self, body: Value) -> Value {
        let (s, v) = self.owner.api.authorize(self.serial, &body).await;
        let (s, op) = self.presence(s, v, body.get("new_pin")).await;
        self.stack
            .check(s == StatusCode::CREATED, &format!("{s}: {op}"));
        op
    }

    async fn report(&self, op_id: &str, body: Value) -> Value {
        let (s, v) = self.owner.api.report(self.serial, op_id, &body).await;
        self.stack.check(s == StatusCode::OK, &format!("{s}: {v}"));
        v
    }

    /// A change carried through and confirmed, as on enrollment.
    async fn change(&self, body: Value) {
        let op = self.authorize(body).await;
        let (s, done) = self.carry(&op).await;
        self.stack
            .check(s == StatusCode::OK, &format!("{s}: {done}"));
        let id = op["operation_id"].as_str().unwrap();
        self.report(id, json!({"success": true})).await;
    }

    /// PIN, PUK and management key escrowed and on the card: the
    /// credentials of an enrolled key.
    async fn enrolled(serial: u32) -> Self {
        let page = Self::start(serial).await;
        page.change(json!({"operation": "set_pin", "new_pin": PIN}))
            .await;
        page.change(json!({"operation": "set_puk"})).await;
        page.change(json!({"operation": "rotate_management_key"}))
            .await;
        page
    }

    /// Authorise `body` and carry it to the agent, with the key armed to
    /// apply the command `ins`, SIGKILL the agent (which waits for the
    /// answer) and drop the connection without answering: the agent dies
    /// after the card changed and before it answered. The page reports what
    /// it saw (the agent is gone); the key plugs itself back in, and the
    /// agent is restarted and registered again. Returns the operation id.
    async fn change_lost_in_flight(&mut self, body: Value, ins: u8) -> String {
        let op = self.authorize(body).await;
        let id = op["operation_id"].as_str().unwrap().to_string();
        let pid = self.stack.agent.running().unwrap().proc.pid();
        let key = self.stack.key();
        key.arm_fault_killing("drop", ins, pid).unwrap();
        let lost = {
            let agent = self.stack.agent.running().unwrap();
            agent
                .post(op["agent_path"].as_str().unwrap(), &op["request"])
                .await
        };
        assert!(lost.is_err(), "the agent died before it answered: {lost:?}");
        key.wait_fault_fired(Duration::from_secs(5)).unwrap();
        assert!(
            key.log().contains(&format!("FAULT: killed process {pid}")),
            "{}",
            key.log()
        );
        self.stack.agent.kill();

        // The page cannot tell what happened; the server must not call it a failure.
        let v = self
            .report(
                &id,
                json!({"success": false, "error": "agent_unreachable", "message": "Failed to fetch"}),
            )
            .await;
        assert_eq!(v["state"], "pending", "{v}");

        let key = self.stack.key();
        tokio::task::block_in_place(|| key.wait_back_after_fault(Duration::from_secs(30))).unwrap();
        self.stack.agent.start().await.unwrap();
        self.register_agent().await;
        id
    }

    /// Retry from the device page: the resumed request must settle, and the
    /// agent says what it found. Reports success as the page does.
    async fn retry(&self, id: &str) -> OperationDone {
        let (s, v) = self.owner.api.secrets(self.serial, id).await;
        let (s, op) = self.presence(s, v, None).await;
        self.stack.check(s == StatusCode::OK, &format!("{s}: {op}"));
        assert_eq!(
            op["request"]["params"]["settle"], true,
            "a resume settles: {op}"
        );
        let (s, done) = self.carry(&op).await;
        self.stack
            .check(s == StatusCode::OK, &format!("retry: {s}: {done}"));
        let done: OperationDone = serde_json::from_value(done).unwrap();
        let settled = done.settled.expect("a settling change says what it found");
        let v = self
            .report(id, json!({"success": true, "settled": settled.as_str()}))
            .await;
        assert_eq!(v["state"], "succeeded", "{v}");
        done
    }

    /// The operation row: state and error.
    async fn operation(&self, id: &str) -> (String, Option<String>) {
        let pool = self.stack.app.db.pool().await.unwrap();
        sqlx::query_as("SELECT state, error FROM operations WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    }

    /// The escrow version the device row says the card holds, and its values.
    async fn confirmed(&self) -> (i64, Value) {
        let (_, version, _) = self.stack.app.device_row(self.serial).await;
        let v = version.expect("a confirmed version");
        let values = self.stack.app.escrow(self.serial, v as u64).await;
        (v, values)
    }

    /// `ykman piv info`, read before anything is verified.
    fn piv_info(&self) -> String {
        ykman(self.stack.key().reader_name(), &["piv", "info"]).unwrap()
    }

    /// The PUK's tries left, from the card's metadata (GET METADATA through
    /// the agent's `/piv/info`: nothing tried).
    async fn puk_retries(&self) -> u8 {
        let agent = self.stack.agent.running().expect("the agent runs");
        agent.piv_info(self.serial).await.puk_retries.unwrap()
    }

    /// The settle is audited: the unknown outcome, and what was found.
    async fn assert_audited(&self, id: &str, found: &str) {
        let unknown = self
            .stack
            .app
            .audit_details("operation.outcome_unknown")
            .await;
        assert!(
            unknown
                .iter()
                .any(|d| d["operation_id"] == id && d["error"] == "agent_unreachable"),
            "{unknown:?}"
        );
        let resumed = self.stack.app.audit_details("secret.read").await;
        assert!(
            resumed
                .iter()
                .any(|d| d["operation_id"] == id && d["settle"] == true),
            "{resumed:?}"
        );
        let done = self.stack.app.audit_details("operation.succeeded").await;
        let last = done.last().unwrap();
        assert_eq!(last["operation_id"], id, "{done:?}");
        assert_eq!(last["found_on_card"], found, "{last}");
        assert!(last["device"]["secrets_version"].is_i64(), "{last}");
        let (ok, out) = self.stack.app.audit_verify();
        assert!(ok, "the audit chain verifies: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pin_change_applied_by_the_card_whose_answer_was_lost_is_confirmed_on_retry_without_costing_a_try(
) {
    let mut page = Page::enrolled(43000001).await;
    let (before, _) = page.confirmed().await;
    let id = page
        .change_lost_in_flight(
            json!({"operation": "set_pin", "new_pin": NEW_PIN}),
            INS_CHANGE_REFERENCE,
        )
        .await;
    assert_eq!(page.operation(&id).await.0, "pending");
    assert_eq!(page.confirmed().await.0, before, "nothing confirmed yet");

    let done = page.retry(&id).await;
    assert_eq!(done.settled.unwrap().as_str(), "already_applied");

    let info = page.piv_info();
    assert_eq!(
        info_line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 3/3"
    );
    let (after, escrow) = page.confirmed().await;
    assert!(after > before);
    assert_eq!(escrow["pin"], NEW_PIN);
    assert!(pin_verifies(page.serial, NEW_PIN), "the card holds it");
    assert_eq!(page.operation(&id).await, ("succeeded".to_string(), None));
    page.assert_audited(&id, "already_applied").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_puk_change_applied_by_the_card_whose_answer_was_lost_is_confirmed_on_retry_without_costing_a_try(
) {
    let mut page = Page::enrolled(43000002).await;
    let (before, old) = page.confirmed().await;
    let id = page
        .change_lost_in_flight(json!({"operation": "set_puk"}), INS_CHANGE_REFERENCE)
        .await;
    page.retry(&id).await;

    assert_eq!(page.puk_retries().await, 3);
    let (after, escrow) = page.confirmed().await;
    assert!(after > before);
    assert_ne!(escrow["puk"], old["puk"], "the new PUK is confirmed");
    let puk = escrow["puk"].as_str().unwrap().to_string();
    open(page.serial)
        .change_puk(puk.as_bytes(), puk.as_bytes())
        .expect("the confirmed PUK is the card's");
    assert_eq!(page.operation(&id).await.0, "succeeded");
    page.assert_audited(&id, "already_applied").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_management_key_rotation_applied_by_the_card_whose_answer_was_lost_is_confirmed_on_retry()
{
    let mut page = Page::enrolled(43000003).await;
    let (before, old) = page.confirmed().await;
    let id = page
        .change_lost_in_flight(
            json!({"operation": "rotate_management_key"}),
            INS_SET_MANAGEMENT_KEY,
        )
        .await;
    page.retry(&id).await;

    let (after, escrow) = page.confirmed().await;
    assert!(after > before);
    assert_ne!(escrow["management_key"], old["management_key"]);
    let mut yk = open(page.serial);
    yk.authenticate(&mgm_key(&escrow))
        .expect("the confirmed management key is the card's");
    drop(yk);
    let info = page.piv_info();
    assert_eq!(
        info_line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 3/3"
    );
    assert_eq!(page.operation(&id).await.0, "succeeded");
    page.assert_audited(&id, "already_applied").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_of_a_pin_change_that_never_reached_the_card_makes_it_and_leaves_every_try() {
    let page = Page::enrolled(43000004).await;
    // The page died before it posted the request to the agent.
    let op = page
        .authorize(json!({"operation": "set_pin", "new_pin": NEW_PIN}))
        .await;
    let id = op["operation_id"].as_str().unwrap();

    let done = page.retry(id).await;
    assert_eq!(done.settled.unwrap().as_str(), "applied_now");
    let info = page.piv_info();
    assert_eq!(
        info_line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 3/3",
        "the probe's try is restored by the change"
    );
    let (_, escrow) = page.confirmed().await;
    assert_eq!(escrow["pin"], NEW_PIN);
    assert!(pin_verifies(page.serial, NEW_PIN));
    assert!(!pin_verifies(page.serial, PIN));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_after_the_card_changed_the_puk_is_an_unknown_outcome_not_a_failure() {
    let page = Page::enrolled(43000005).await;
    let (before, _) = page.confirmed().await;
    let op = page.authorize(json!({"operation": "set_puk"})).await;
    let id = op["operation_id"].as_str().unwrap();
    let key = page.stack.key();
    key.arm_fault("drop", INS_CHANGE_REFERENCE).unwrap();
    let (s, err) = page.carry(&op).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{err}");
    assert_eq!(err["error"], "outcome_unknown", "{err}");
    key.wait_fault_fired(Duration::from_secs(5)).unwrap();

    // The page reports the agent's code; the change stays unconfirmed.
    let v = page
        .report(
            id,
            json!({"success": false, "error": "outcome_unknown", "message": err["message"]}),
        )
        .await;
    assert_eq!(v["state"], "pending", "{v}");
    assert_eq!(page.confirmed().await.0, before);
    // The key comes back by itself a moment after the dropped connection.
    tokio::task::block_in_place(|| {
        page.stack
            .key()
            .wait_back_after_fault(Duration::from_secs(30))
    })
    .unwrap();

    let done = page.retry(id).await;
    assert_eq!(done.settled.unwrap().as_str(), "already_applied");
    assert_eq!(page.puk_retries().await, 3);
    let (_, escrow) = page.confirmed().await;
    let puk = escrow["puk"].as_str().unwrap().to_string();
    open(page.serial)
        .change_puk(puk.as_bytes(), puk.as_bytes())
        .expect("the confirmed PUK is the card's");
}
