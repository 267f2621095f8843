//! Issue 18 §6: Kleidia's wipe clears more than PIV. A key handed to the
//! next person carries none of the previous owner's OATH accounts: the
//! owner enrolls a software YubiKey and adds OATH accounts with `ykman`,
//! the admin wipes it through the real agent, and `ykman` finds no OATH
//! account and a factory PIV application. A key without the OATH
//! application is wiped too, and the wipe says there was nothing to delete.
//! Kleidia, PostgreSQL, OpenBao, the agent, pcscd and the key are the real
//! processes; the test plays the page (static/agent.js) over HTTP.

use kleidia_protocol::agent::{OathWipe, OperationDone, PubKey};
use kleidia_tests::browser::{Stack, FIRMWARE};
use kleidia_tests::card::{info_line, open, ykman, VirtualYubiKey};
use kleidia_tests::{is_presence_challenge, Person};
use reqwest::StatusCode;
use serde_json::{json, Value};

const PIN: &str = "529371";

/// A signed-in person at the workstation where the agent and the key are.
struct Desk<'a> {
    stack: &'a Stack,
    who: Person,
    serial: u32,
}

impl<'a> Desk<'a> {
    /// `who` registers the running agent's key to their session, as the
    /// page does when it finds the agent.
    async fn new(stack: &'a Stack, who: Person, serial: u32) -> Desk<'a> {
        let agent = stack.agent.running().expect("the agent runs");
        let pk: PubKey = agent.get("/pubkey").await.unwrap().json().await.unwrap();
        let sid = who.session_id();
        let (s, v) = who.api.register_agent(&sid, &pk.public_key_pem).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        Desk { stack, who, serial }
    }

    /// Post what the server handed out to the agent: status and body.
    async fn carry(&self, op: &Value) -> (StatusCode, Value) {
        let agent = self.stack.agent.running().expect("the agent runs");
        let r = agent
            .post(op["agent_path"].as_str().unwrap(), &op["request"])
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    /// Authorise `body`, carrying a presence challenge through the agent
    /// (the card signs it) as agent.js does.
    async fn authorize(&self, body: Value) -> Value {
        let (s, v) = self.who.api.authorize(self.serial, &body).await;
        let (s, op) = if is_presence_challenge(s, &v) {
            let (ps, proof) = self.carry(&v).await;
            self.stack
                .check(ps == StatusCode::OK, &format!("presence: {ps}: {proof}"));
            let mut answer = json!({"challenge_id": v["challenge_id"], "proof": proof});
            if let Some(pin) = body.get("new_pin") {
                answer["new_pin"] = pin.clone();
            }
            let id = v["operation_id"].as_str().unwrap();
            let path = format!("/api/yubikey/{}/operations/{id}/presence", self.serial);
            self.who.api.post_json(&path, &answer).await
        } else {
            (s, v)
        };
        self.stack
            .check(s == StatusCode::CREATED, &format!("{body}: {s}: {op}"));
        op
    }

    /// Authorise, carry and report as the page does; the agent's answer.
    async fn run(&self, body: Value) -> (Value, Value) {
        let op = self.authorize(body).await;
        let (s, done) = self.carry(&op).await;
        self.stack
            .check(s == StatusCode::OK, &format!("{s}: {done}"));
        let mut outcome = json!({"success": true});
        if let Some(oath) = done.get("oath") {
            outcome["oath"] = oath.clone();
        }
        let id = op["operation_id"].as_str().unwrap();
        let (s, v) = self.who.api.report(self.serial, id, &outcome).await;
        self.stack.check(s == StatusCode::OK, &format!("{s}: {v}"));
        assert_eq!(v["state"], "succeeded", "{v}");
        (op, done)
    }

    /// Enrollment as the page runs it: PIN, PUK, management key, then a
    /// key in 9a with its attestation, signed and imported.
    async fn enroll(&self) {
        self.run(json!({"operation": "set_pin", "new_pin": PIN}))
            .await;
        self.run(json!({"operation": "set_puk"})).await;
        self.run(json!({"operation": "rotate_management_key"}))
            .await;
        let (op, csr) = self
            .run(
                json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256",
                        "pin_policy": "once", "touch_policy": "never"}),
            )
            .await;
        let (s, cert) = self
            .who
            .api
            .sign_csr(
                self.serial,
                &json!({"operation_id": op["operation_id"], "csr_pem": csr["csr_pem"],
                        "attestation_chain_pem": csr["attestation_chain_pem"]}),
            )
            .await;
        self.stack
            .check(s == StatusCode::CREATED, &format!("sign-csr: {s}: {cert}"));
        self.run(json!({"operation": "import_certificate",
                        "certificate_id": cert["certificate_id"]}))
            .await;
    }
}

fn oath_accounts(reader: &str) -> Vec<String> {
    ykman(reader, &["oath", "accounts", "list"])
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `ykman piv info` of a PIV application in factory state: default PIN and
/// management key, all tries left, no certificate.
fn assert_piv_factory(reader: &str) {
    let info = ykman(reader, &["piv", "info"]).unwrap();
    assert!(info.contains("WARNING: Using default PIN!"), "{info}");
    assert!(info.contains("Using default Management key"), "{info}");
    assert_eq!(
        info_line(&info, "PIN tries remaining:"),
        "PIN tries remaining: 3/3"
    );
    assert!(!info.contains("Slot 9A"), "{info}");
}

/// The `operation.succeeded` audit entry of the wipe `op`.
async fn wipe_audit(stack: &Stack, op: &Value) -> Value {
    stack
        .app
        .audit_details("operation.succeeded")
        .await
        .into_iter()
        .find(|d| d["operation_id"] == op["operation_id"])
        .expect("the wipe is audited")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wipe_deletes_the_previous_owners_oath_accounts_and_leaves_piv_factory() {
    let serial = 42000001;
    let stack = Stack::start(serial).await.unwrap();
    let owner = stack.app.person("olga", "user", "Olga Example").await;
    owner.register_ok(serial).await;
    let owner = Desk::new(&stack, owner, serial).await;
    owner.enroll().await;
    assert_eq!(stack.app.device_row(serial).await.0, "active");

    // The owner keeps their one-time-password accounts on the key too.
    let reader = stack.key().reader_name();
    for (issuer, secret) in [("GitHub", "JBSWY3DPEHPK3PXP"), ("VPN", "GEZDGNBVGY3TQOJQ")] {
        ykman(
            reader,
            &["oath", "accounts", "add", "-i", issuer, "olga", secret],
        )
        .unwrap();
    }
    assert_eq!(oath_accounts(reader), ["GitHub:olga", "VPN:olga"]);

    // The key comes back. The admin's device page offers the wipe and says
    // what it cannot do: FIDO2 needs a person, a re-plug and a touch.
    let page = stack.app.admin_browser().await;
    let (s, _, html) = page.get_text(&format!("/devices/{serial}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("Resets the PIV and OATH applications"),
        "{html}"
    );
    assert!(html.contains("id=\"fido2-reset\""), "{html}");
    assert!(html.contains("<code>ykman fido reset</code>"), "{html}");
    assert!(
        html.contains("within a few seconds of being plugged in"),
        "{html}"
    );

    // The admin wipes it at their workstation.
    let admin = stack.app.person("adam", "admin", "Adam Admin").await;
    let admin = Desk::new(&stack, admin, serial).await;
    let (op, done) = admin.run(json!({"operation": "reset"})).await;
    let done: OperationDone = serde_json::from_value(done).unwrap();
    assert_eq!(done.oath, Some(OathWipe::Reset));

    // What the next person finds: no OATH account, PIV as from the factory.
    assert!(oath_accounts(reader).is_empty());
    assert_piv_factory(reader);
    let mut yk = open(serial);
    assert!(
        yk.verify_pin(PIN.as_bytes()).is_err(),
        "the old PIN is gone"
    );
    drop(yk);
    let state = stack.key().state_json().unwrap();
    assert_eq!(state["oath"]["credentials"], json!([]));
    // Kleidia's records: back in the pool, certificates revoked, and the
    // audit says what became of the OATH accounts.
    assert_eq!(stack.app.device_row(serial).await.0, "returned");
    let audit = wipe_audit(&stack, &op).await;
    assert_eq!(audit["operation"], "reset", "{audit}");
    assert_eq!(audit["device"]["oath"], "reset", "{audit}");
    assert_eq!(audit["device"]["certificates_revoked"], 1, "{audit}");
    let log = stack.agent.running().unwrap().log_text();
    assert!(log.contains("OATH application after the wipe"), "{log}");
    assert!(!log.contains(PIN), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_without_the_oath_application_is_wiped_and_the_wipe_says_so() {
    let serial = 42000002;
    let mut stack = Stack::start(serial).await.unwrap();
    // A key without the OATH application: the factory key the stack
    // plugged in is swapped for one made without it (same serial, same
    // test attestation root) before anyone registers it.
    let mut factory = stack.key.take().unwrap();
    factory.stop().unwrap();
    std::fs::remove_file(&factory.state).unwrap();
    drop(factory);
    stack.key =
        Some(VirtualYubiKey::plug_without_oath(stack.dir.path(), serial, FIRMWARE, 0).unwrap());
    let owner = stack.app.person("otto", "user", "Otto Example").await;
    owner.register_ok(serial).await;
    let owner = Desk::new(&stack, owner, serial).await;
    owner
        .run(json!({"operation": "set_pin", "new_pin": PIN}))
        .await;
    let reader = stack.key().reader_name();
    assert!(ykman(reader, &["oath", "accounts", "list"]).is_err());

    // The owner rolls the unfinished enrollment back: the same reset.
    let before = stack.app.device_row(serial).await;
    assert!(before.1.is_some(), "the PIN is escrowed: {before:?}");
    let op = owner.authorize(json!({"operation": "reset"})).await;
    let (s, done) = owner.carry(&op).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    let done: OperationDone = serde_json::from_value(done).unwrap();
    assert_eq!(done.oath, Some(OathWipe::NotPresent));
    // A report that makes up what became of OATH is refused and changes nothing.
    let id = op["operation_id"].as_str().unwrap();
    let (s, v) = owner
        .who
        .api
        .report(serial, id, &json!({"success": true, "oath": "shredded"}))
        .await;
    assert!(s.is_client_error(), "{s}: {v}");
    assert_eq!(
        stack.app.device_row(serial).await,
        before,
        "nothing changed"
    );
    let (s, v) = owner
        .who
        .api
        .report(serial, id, &json!({"success": true, "oath": done.oath}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_piv_factory(reader);
    assert_eq!(stack.key().state_json().unwrap()["oath"], Value::Null);
    let after = stack.app.device_row(serial).await;
    assert_eq!(
        (after.0.as_str(), after.1),
        ("registered", None),
        "{after:?}"
    );
    let audit = wipe_audit(&stack, &op).await;
    assert_eq!(audit["device"]["oath"], "not_present", "{audit}");
}
