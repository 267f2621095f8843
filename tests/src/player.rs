//! [`Player`]: a protocol-level agent player. It does what the signed-in
//! page's script (`static/agent.js`) does, over HTTP, without a browser:
//! it asks Kleidia for an operation, hands the signed ticket and the
//! secrets encrypted to the agent's key to the REAL `kleidia-agent` (which
//! drives software YubiKeys through pcscd), and reports the agent's answer
//! back to Kleidia.
//!
//! Like the page, the player never sees a PIN, PUK or management key in
//! clear except a PIN the person chose, and an interrupted enrollment is
//! resumed by enrolling again: steps already done are skipped, an
//! unconfirmed secret change is settled from the card's metadata first.
//!
//! ```ignore
//! let player = Player::sign_in(&app, "alice", "user", &agent).await?;
//! player.enroll(serial, "529371").await?;
//! player.change_pin(serial, Some("318642")).await?;
//! ```
//!
//! Every call returns an error instead of panicking, so load and fault
//! tests can count failures and see at which step one stopped
//! ([`PlayError`], through `anyhow::Error::downcast_ref`).

use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::ORIGIN;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::agent::TestAgent;
use crate::client::Api;
use crate::TestApp;

/// Agent errors after which the card may or may not have changed: the
/// page does not report them, the operation stays pending and is resumed
/// (the same list as `UNKNOWN_OUTCOME` in `static/agent.js`).
pub const UNKNOWN_OUTCOME: [&str; 6] = [
    "agent_unreachable",
    "yubikey_removed",
    "card_error",
    "pcsc_unavailable",
    "outcome_unknown",
    "cannot_settle",
];

/// A step of the enrollment, in the order the page runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The agent finds the key; its key is registered with the session.
    Detect,
    /// The card proves itself (attested presence key); Kleidia registers it.
    Register,
    Pin,
    Puk,
    ManagementKey,
    /// Generate a key in a slot, with attestation.
    Generate,
    /// Kleidia verifies the attestation and signs the certificate.
    Sign,
    /// The certificate goes into the slot.
    Import,
    /// The device is active.
    Active,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a call failed: who answered (Kleidia or the agent), with what.
#[derive(Debug, Clone)]
pub struct PlayError {
    /// `"kleidia"` or `"agent"`.
    pub who: &'static str,
    pub path: String,
    /// HTTP status; 0 when nothing answered.
    pub status: u16,
    /// The `error` code of the JSON body (`agent_unreachable` when nothing answered).
    pub code: String,
    pub body: Value,
}

impl PlayError {
    /// Nothing answered (connection refused, reset, timed out).
    pub fn unreachable(&self) -> bool {
        self.status == 0
    }

    /// An answer after which the card may or may not have changed.
    pub fn unknown_outcome(&self) -> bool {
        self.who == "agent" && UNKNOWN_OUTCOME.contains(&self.code.as_str())
    }
}

impl fmt::Display for PlayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} answered {} ({}): {}",
            self.who, self.path, self.status, self.code, self.body
        )
    }
}

impl std::error::Error for PlayError {}

/// The [`PlayError`] in `err`'s chain, if any.
pub fn play_error(err: &anyhow::Error) -> Option<&PlayError> {
    err.chain().find_map(|e| e.downcast_ref::<PlayError>())
}

/// An authorised operation and the agent's answer to it.
#[derive(Debug, Clone)]
pub struct Carried {
    /// Kleidia's answer: `operation_id`, `agent_path`, `request`.
    pub op: Value,
    /// The agent's answer.
    pub res: Value,
}

impl Carried {
    pub fn operation_id(&self) -> &str {
        self.op["operation_id"].as_str().unwrap_or_default()
    }
}

/// A signed-in person's page, carrying operations to a real agent.
#[derive(Clone)]
pub struct Player {
    /// The person's API session (Bearer token).
    pub api: Api,
    /// Where the agent listens (the page's `agent_url`).
    pub agent_url: String,
    /// The Origin the page sends the agent (Kleidia's).
    pub origin: String,
    http: reqwest::Client,
}

impl Player {
    /// `api`'s session playing the page for `agent` (which must accept
    /// Kleidia's origin and fetch its ticket key from Kleidia).
    pub fn new(api: Api, agent: &TestAgent) -> Self {
        Self::at(api, &agent.base, &agent.origin)
    }

    /// A player for the agent at `agent_url`, sending `origin`.
    pub fn at(api: Api, agent_url: &str, origin: &str) -> Self {
        Self {
            api,
            agent_url: agent_url.trim_end_matches('/').to_string(),
            origin: origin.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("http client"),
        }
    }

    /// A new user `username` with `role`, created by the admin, signed in
    /// (first-login password change done), with `agent`'s key registered.
    pub async fn sign_in(
        app: &TestApp,
        username: &str,
        role: &str,
        agent: &TestAgent,
    ) -> Result<Self> {
        let first = format!("{username}-first-password-1");
        let user = app.create_user(username, role, username, &first).await;
        let mut api = app.api();
        api.login(username, &user.password).await?;
        let me = Self::new(api, agent);
        me.detect().await?;
        Ok(me)
    }

    /// `username` signs in again with `password` (a new session), with
    /// `agent`'s key registered to it.
    pub async fn login(
        app: &TestApp,
        username: &str,
        password: &str,
        agent: &TestAgent,
    ) -> Result<Self> {
        let mut api = app.api();
        api.login(username, password).await?;
        let me = Self::new(api, agent);
        me.detect().await?;
        Ok(me)
    }

    // ------------------------------------------------------------ transport

    async fn call(
        &self,
        who: &'static str,
        method: Method,
        url: String,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut req = self.http.request(method, &url);
        if who == "kleidia" {
            if let Some(t) = &self.api.token {
                req = req.bearer_auth(t);
            }
        } else {
            req = req.header(ORIGIN, &self.origin);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(PlayError {
                    who,
                    path: path.to_string(),
                    status: 0,
                    code: "agent_unreachable".into(),
                    body: Value::String(e.to_string()),
                }
                .into())
            }
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let data: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let code = data["error"].as_str().unwrap_or("error").to_string();
            return Err(PlayError {
                who,
                path: path.to_string(),
                status: status.as_u16(),
                code,
                body: data,
            }
            .into());
        }
        Ok(data)
    }

    /// Kleidia's API, as the page calls it (`api()` in agent.js).
    pub async fn kleidia(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.api.base);
        self.call("kleidia", method, url, path, body).await
    }

    /// The agent, as the page calls it (`agent()` in agent.js).
    pub async fn agent(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.agent_url);
        self.call("agent", method, url, path, body).await
    }

    // ------------------------------------------------------------ the agent

    /// Find the agent and register its key with this session when it is
    /// new (first visit, or the agent restarted with a new key). Returns the
    /// fingerprint registered.
    pub async fn detect(&self) -> Result<String> {
        let cfg = self
            .kleidia(Method::GET, "/api/session/agent", None)
            .await?;
        let wk = self
            .agent(Method::GET, "/.well-known/kleidia-agent", None)
            .await?;
        let fp = wk["agent_key_fingerprint"].as_str().unwrap_or_default();
        if !fp.is_empty() && cfg["agent_key_fingerprint"].as_str() == Some(fp) {
            return Ok(fp.to_string());
        }
        let pk = self.agent(Method::GET, "/pubkey", None).await?;
        let sid = cfg["session_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {cfg}"))?;
        let res = self
            .kleidia(
                Method::POST,
                &format!("/api/session/{sid}/register-agent"),
                Some(&json!({"public_key": pk["public_key_pem"]})),
            )
            .await?;
        Ok(res["agent_key_fingerprint"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// `GET /discover`: the YubiKeys the agent sees.
    pub async fn discover(&self) -> Result<Vec<Value>> {
        let found = self.agent(Method::GET, "/discover", None).await?;
        Ok(found["yubikeys"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /piv/check-defaults`: which credentials are still the factory
    /// ones (`pin`, `puk`, `management_key`: true, false or null).
    pub async fn check_defaults(&self, serial: u32) -> Result<Value> {
        let v = self
            .agent(
                Method::GET,
                &format!("/piv/check-defaults?serial={serial}"),
                None,
            )
            .await?;
        Ok(v["defaults"].clone())
    }

    // ------------------------------------------------------------ operations

    /// `GET /api/devices/{serial}`; `None` when Kleidia does not know it.
    pub async fn device(&self, serial: u32) -> Result<Option<Value>> {
        match self
            .kleidia(Method::GET, &format!("/api/devices/{serial}"), None)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if play_error(&e).is_some_and(|p| p.status == 404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Report an outcome (`POST …/operations/{id}/result`); Kleidia's answer.
    pub async fn report(&self, serial: u32, op_id: &str, outcome: &Value) -> Result<Value> {
        self.kleidia(
            Method::POST,
            &format!("/api/yubikey/{serial}/operations/{op_id}/result"),
            Some(outcome),
        )
        .await
    }

    /// A presence challenge is carried to the agent (the card signs it) and
    /// the proof answered; any other answer passes through.
    async fn presence(&self, serial: u32, answer: Value, new_pin: Option<&Value>) -> Result<Value> {
        if answer["presence_required"] != true {
            return Ok(answer);
        }
        let path = answer["agent_path"].as_str().unwrap_or_default();
        let proof = self
            .agent(Method::POST, path, Some(&answer["request"]))
            .await
            .context("presence proof")?;
        let mut body = json!({"challenge_id": answer["challenge_id"], "proof": proof});
        if let Some(p) = new_pin {
            body["new_pin"] = p.clone();
        }
        let op = answer["operation_id"].as_str().unwrap_or_default();
        self.kleidia(
            Method::POST,
            &format!("/api/yubikey/{serial}/operations/{op}/presence"),
            Some(&body),
        )
        .await
    }

    /// Authorise an operation (`POST /api/yubikey/{serial}/operations`),
    /// through the presence step: Kleidia's ticket and encrypted secrets.
    pub async fn authorize(&self, serial: u32, body: &Value) -> Result<Value> {
        let first = self
            .kleidia(
                Method::POST,
                &format!("/api/yubikey/{serial}/operations"),
                Some(body),
            )
            .await?;
        self.presence(serial, first, body.get("new_pin")).await
    }

    /// Hand an authorised operation to the agent and report how it went, as
    /// the page does: an agent error with an unknown outcome is not
    /// reported (the operation stays pending, to be resumed); any other
    /// agent error is reported as a failure. Returns the agent's answer.
    pub async fn carry(&self, serial: u32, op: &Value) -> Result<Value> {
        let op_id = op["operation_id"].as_str().unwrap_or_default();
        let path = op["agent_path"].as_str().unwrap_or_default();
        let res = match self.agent(Method::POST, path, Some(&op["request"])).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(p) = play_error(&e) {
                    if !p.unknown_outcome() {
                        let msg: String = p.body["message"]
                            .as_str()
                            .unwrap_or_default()
                            .chars()
                            .take(300)
                            .collect();
                        let _ = self
                            .report(
                                serial,
                                op_id,
                                &json!({"success": false, "error": p.code, "message": msg}),
                            )
                            .await;
                    }
                }
                return Err(e);
            }
        };
        let outcome = match res.get("settled") {
            Some(s) if !s.is_null() => json!({"success": true, "settled": s}),
            _ => json!({"success": true}),
        };
        self.report(serial, op_id, &outcome).await?;
        Ok(res)
    }

    /// Authorise, carry and report one operation (`runOperation`).
    pub async fn run(&self, serial: u32, body: Value) -> Result<Carried> {
        let op = self.authorize(serial, &body).await?;
        let res = self.carry(serial, &op).await?;
        Ok(Carried { op, res })
    }

    /// Send an unconfirmed secret change again (`resume` in agent.js): a
    /// new ticket for the same new value; the agent settles it.
    pub async fn resume(&self, serial: u32, op_id: &str) -> Result<Value> {
        let first = self
            .kleidia(
                Method::POST,
                &format!("/api/yubikey/{serial}/secrets"),
                Some(&json!({"operation_id": op_id})),
            )
            .await?;
        let op = self.presence(serial, first, None).await?;
        self.carry(serial, &op).await
    }

    /// Settle the pending secret changes of `dev` from the card's metadata
    /// (`settlePending`): no longer the factory value = applied.
    pub async fn settle_pending(&self, serial: u32, dev: &Value, defaults: &Value) -> Result<()> {
        for o in dev["operations"].as_array().into_iter().flatten() {
            let kind = match o["kind"].as_str() {
                Some("set_pin") => "pin",
                Some("set_puk") => "puk",
                Some("rotate_management_key") => "management_key",
                _ => continue,
            };
            let Some(is_default) = defaults[kind].as_bool() else {
                continue;
            };
            if o["state"] != "pending" || o["secrets_version_new"].is_null() {
                continue;
            }
            let id = o["id"].as_str().unwrap_or_default();
            let outcome = if is_default {
                json!({"success": false, "error": "not_applied", "message": "resumed: the card still has the factory value"})
            } else {
                json!({"success": true})
            };
            self.report(serial, id, &outcome).await?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ enrollment

    /// Enroll the factory key `serial` end to end with the PIN `pin`, or
    /// resume an interrupted enrollment (steps already done are skipped).
    /// Returns the active device.
    pub async fn enroll(&self, serial: u32, pin: &str) -> Result<Value> {
        self.enroll_with(serial, pin, |_| {}).await
    }

    /// [`enroll`](Self::enroll), calling `before(step)` before each step
    /// (a fault test injects its fault there). The error names the step.
    pub async fn enroll_with(
        &self,
        serial: u32,
        pin: &str,
        mut before: impl FnMut(Step),
    ) -> Result<Value> {
        before(Step::Detect);
        self.detect().await.context("step Detect")?;
        let yk = self
            .discover()
            .await
            .context("step Detect")?
            .into_iter()
            .find(|k| k["serial"].as_u64() == Some(u64::from(serial)))
            .ok_or_else(|| anyhow!("step Detect: YubiKey {serial} is not plugged in"))?;

        let mut dev = self.device(serial).await.context("step Register")?;
        if dev.is_none() {
            before(Step::Register);
            self.register(serial, &yk).await.context("step Register")?;
            dev = self.device(serial).await.context("step Register")?;
        }
        let dev = dev.ok_or_else(|| anyhow!("step Register: not registered"))?;
        match dev["device"]["state"].as_str() {
            Some("registered") => {}
            Some("active") => bail!("step Register: YubiKey {serial} is already enrolled"),
            other => bail!("step Register: YubiKey {serial} is {other:?}"),
        }

        let defaults = self.check_defaults(serial).await.context("step Pin")?;
        self.settle_pending(serial, &dev, &defaults)
            .await
            .context("step Pin")?;
        let plan = self
            .kleidia(Method::GET, "/api/policy/enrollment", None)
            .await
            .context("step Pin")?;
        let settled = self
            .device(serial)
            .await
            .context("step Pin")?
            .unwrap_or_default();

        if defaults["pin"] == false {
            if settled["device"]["secrets_version"].is_null() {
                bail!("step Pin: the PIN is no longer the factory PIN, but Kleidia has no escrowed value for it");
            }
        } else {
            before(Step::Pin);
            self.run(serial, json!({"operation": "set_pin", "new_pin": pin}))
                .await
                .context("step Pin")?;
        }
        if defaults["puk"] != false {
            before(Step::Puk);
            self.run(serial, json!({"operation": "set_puk"}))
                .await
                .context("step Puk")?;
        }
        if defaults["management_key"] != false {
            before(Step::ManagementKey);
            self.run(serial, json!({"operation": "rotate_management_key"}))
                .await
                .context("step ManagementKey")?;
        }

        let credentialed = self
            .device(serial)
            .await
            .context("step Generate")?
            .unwrap_or_default();
        for spec in plan["slots"].as_array().into_iter().flatten() {
            self.certify_slot(serial, &credentialed, spec, &mut before)
                .await?;
        }
        before(Step::Active);
        let active = self
            .device(serial)
            .await
            .context("step Active")?
            .unwrap_or_default();
        if active["device"]["state"] != "active" {
            bail!("step Active: the device did not become active: {active}");
        }
        Ok(active)
    }

    /// The card shows itself (`/api/devices/claim`, its attested presence
    /// key signs the challenge) and Kleidia registers it to this person.
    pub async fn register(&self, serial: u32, yk: &Value) -> Result<Value> {
        let claim = self
            .kleidia(
                Method::POST,
                "/api/devices/claim",
                Some(&json!({"serial": serial})),
            )
            .await?;
        let proof = self
            .agent(
                Method::POST,
                claim["agent_path"].as_str().unwrap_or_default(),
                Some(&claim["request"]),
            )
            .await?;
        self.kleidia(
            Method::POST,
            "/api/devices",
            Some(&json!({
                "serial": serial, "firmware": yk["firmware"], "form_factor": yk.get("form_factor"),
                "challenge_id": claim["challenge_id"], "proof": proof
            })),
        )
        .await
    }

    /// Generate a key in the slot of `spec`, have it attested and signed,
    /// import the certificate (`certifySlot`); a slot with an issued
    /// certificate in `dev` only gets the import.
    async fn certify_slot(
        &self,
        serial: u32,
        dev: &Value,
        spec: &Value,
        before: &mut impl FnMut(Step),
    ) -> Result<()> {
        let slot = spec["slot"].clone();
        let existing = dev["certificates"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["slot"] == slot && c["status"] == "issued");
        let cert_id = match existing {
            Some(c) => c["id"].clone(),
            None => {
                before(Step::Generate);
                let r = self
                    .run(
                        serial,
                        json!({"operation": "generate_csr", "slot": slot, "algorithm": spec["algorithm"],
                               "pin_policy": spec["pin_policy"], "touch_policy": spec["touch_policy"]}),
                    )
                    .await
                    .context("step Generate")?;
                before(Step::Sign);
                let c = self
                    .kleidia(
                        Method::POST,
                        &format!("/api/yubikey/{serial}/sign-csr"),
                        Some(&json!({"operation_id": r.op["operation_id"], "csr_pem": r.res["csr_pem"],
                                     "attestation_chain_pem": r.res["attestation_chain_pem"]})),
                    )
                    .await
                    .context("step Sign")?;
                c["certificate_id"].clone()
            }
        };
        before(Step::Import);
        self.run(
            serial,
            json!({"operation": "import_certificate", "certificate_id": cert_id}),
        )
        .await
        .context("step Import")?;
        Ok(())
    }

    // ------------------------------------------------------------ maintenance

    /// Change the PIN: to `new_pin`, or (None) to one Kleidia generates.
    pub async fn change_pin(&self, serial: u32, new_pin: Option<&str>) -> Result<Carried> {
        let mut body = json!({"operation": "set_pin"});
        if let Some(p) = new_pin {
            body["new_pin"] = json!(p);
        }
        self.run(serial, body).await
    }

    /// A new PUK, generated and escrowed by Kleidia.
    pub async fn change_puk(&self, serial: u32) -> Result<Carried> {
        self.run(serial, json!({"operation": "set_puk"})).await
    }

    /// A new management key, generated and escrowed by Kleidia.
    pub async fn rotate_management_key(&self, serial: u32) -> Result<Carried> {
        self.run(serial, json!({"operation": "rotate_management_key"}))
            .await
    }

    /// Unblock the PIN with the escrowed PUK, setting `new_pin` (or one Kleidia generates).
    pub async fn unblock_pin(&self, serial: u32, new_pin: Option<&str>) -> Result<Carried> {
        let mut body = json!({"operation": "unblock_pin"});
        if let Some(p) = new_pin {
            body["new_pin"] = json!(p);
        }
        self.run(serial, body).await
    }

    /// Renew the certificates: a new key and certificate in every slot of
    /// the enrollment plan (the device page's "renew").
    pub async fn renew_certificates(&self, serial: u32) -> Result<()> {
        let plan = self
            .kleidia(Method::GET, "/api/policy/enrollment", None)
            .await?;
        let none = json!({"certificates": []});
        for spec in plan["slots"].as_array().into_iter().flatten() {
            self.certify_slot(serial, &none, spec, &mut |_| {}).await?;
        }
        Ok(())
    }

    /// Reset the key to factory state, settling any unconfirmed secret
    /// change from the card's metadata first (the device page's "wipe").
    pub async fn wipe(&self, serial: u32) -> Result<Carried> {
        let defaults = self.check_defaults(serial).await?;
        if let Some(dev) = self.device(serial).await? {
            self.settle_pending(serial, &dev, &defaults).await?;
        }
        self.run(serial, json!({"operation": "reset"})).await
    }
}

/// Whether `err` is a [`PlayError`] with HTTP status `status`.
pub fn is_status(err: &anyhow::Error, status: StatusCode) -> bool {
    play_error(err).is_some_and(|p| p.status == status.as_u16())
}

/// The secrets escrowed in OpenBao for the version Kleidia says the card
/// holds open the card, checked with the `yubikey` crate through pcscd:
/// the PIN verifies, the PUK verifies (changed to itself), the management
/// key authenticates, and every PIN and PUK try is left. Returns the
/// escrowed values checked.
pub async fn escrow_opens_card(app: &TestApp, serial: u32) -> Result<Value> {
    let (_, version, _) = app.device_row(serial).await;
    let version = version.ok_or_else(|| anyhow!("{serial}: no confirmed escrow version"))?;
    let escrow = app.escrow(serial, version as u64).await;
    let e = escrow.clone();
    tokio::task::spawn_blocking(move || card_opens_with(serial, &e)).await??;
    Ok(escrow)
}

/// Whether the card `serial` opens with `escrow` (`pin`, `puk`,
/// `management_key`, `management_key_algorithm`): see [`escrow_opens_card`].
pub fn card_opens_with(serial: u32, escrow: &Value) -> Result<()> {
    use yubikey::{MgmAlgorithmId, MgmKey, YubiKey};
    let mut last = None;
    let mut yk = None;
    for _ in 0..100 {
        match YubiKey::open_by_serial(yubikey::Serial(serial)) {
            Ok(k) => {
                yk = Some(k);
                break;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut yk = yk.ok_or_else(|| anyhow!("open YubiKey {serial}: {last:?}"))?;
    let field = |k: &str| {
        escrow[k]
            .as_str()
            .ok_or_else(|| anyhow!("{serial}: no {k} in the escrow"))
    };
    let pin = field("pin")?;
    let puk = field("puk")?;
    yk.verify_pin(pin.as_bytes())
        .map_err(|e| anyhow!("{serial}: the escrowed PIN does not open the card: {e}"))?;
    yk.change_puk(puk.as_bytes(), puk.as_bytes())
        .map_err(|e| anyhow!("{serial}: the escrowed PUK does not open the card: {e}"))?;
    let alg = match field("management_key_algorithm")? {
        "3des" => MgmAlgorithmId::ThreeDes,
        "aes128" => MgmAlgorithmId::Aes128,
        "aes192" => MgmAlgorithmId::Aes192,
        "aes256" => MgmAlgorithmId::Aes256,
        other => bail!("{serial}: management key algorithm {other}"),
    };
    let bytes = hex::decode(field("management_key")?)?;
    let mgm = MgmKey::from_bytes(bytes, Some(alg))
        .map_err(|e| anyhow!("{serial}: escrowed management key: {e}"))?;
    yk.authenticate(&mgm).map_err(|e| {
        anyhow!("{serial}: the escrowed management key does not open the card: {e}")
    })?;
    let retries = yk.get_pin_retries().map_err(|e| anyhow!("{e}"))?;
    if retries != 3 {
        bail!("{serial}: {retries} PIN tries left, not 3");
    }
    Ok(())
}
