//! The fault matrix (issue 16 §1): every step of enrollment and of each
//! maintenance operation × every fault, on the real stack (Kleidia, its
//! PostgreSQL database, OpenBao, the license service, the agent, pcscd and
//! a software YubiKey), driven by the protocol-level agent player.
//!
//! A cell: get the key to the step; inject the fault there; run the step
//! (it may fail, that is the point); recover from the fault; check that the
//! device page explains the state the API reports; resume (enroll again,
//! retry the unconfirmed change, or run the operation again) or roll back;
//! then check that nothing was lost: no operation left pending, the device
//! in the state the operation leads to, the secrets escrowed in OpenBao
//! open the card (the `yubikey` crate verifies the PIN and PUK and
//! authenticates with the management key), and `kleidia audit verify` passes.
//!
//! Faults on a step that writes to the card fire in the middle of it: the
//! software YubiKey applies the command and then withholds its answer while
//! the agent (or Kleidia) is killed, or it drops the connection as if it
//! were pulled out. Other faults happen right before the step.
//!
//! The cells are generated from the table at the bottom (`cells!`); the
//! table in docs/reliability.md lists them. `make faults` runs every cell;
//! `make test` runs the cells not marked `#[ignore]` (a representative
//! slice: enrollment and maintenance steps with card faults, OpenBao
//! stopped, a server restart, and a key generation whose answer was lost,
//! closed as expired by the server).

use std::time::Duration;

use kleidia_tests::browser::Stack;
use kleidia_tests::player::{escrow_opens_card, play_error, Player, Step as EnrollStep};
use serde_json::Value;

const PIN: &str = "529371";
const NEW_PIN: &str = "318642";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    // Enrollment.
    Register,
    Pin,
    Puk,
    ManagementKey,
    Generate,
    Sign,
    Import,
    // Maintenance of an enrolled key.
    ChangePin,
    ChangePuk,
    RotateManagementKey,
    RenewCertificate,
    UnblockPin,
    /// Roll back (reset) a key whose enrollment stopped after the PIN.
    Wipe,
}

impl Step {
    /// The enrollment step this is, for the player's hook.
    fn enrollment(self) -> Option<EnrollStep> {
        Some(match self {
            Step::Register => EnrollStep::Register,
            Step::Pin => EnrollStep::Pin,
            Step::Puk => EnrollStep::Puk,
            Step::ManagementKey => EnrollStep::ManagementKey,
            Step::Generate => EnrollStep::Generate,
            Step::Sign => EnrollStep::Sign,
            Step::Import => EnrollStep::Import,
            _ => return None,
        })
    }

    /// The instruction of the card command the step changes the card with.
    fn ins(self) -> Option<u8> {
        match self {
            // GENERATE ASYMMETRIC KEY PAIR (the presence key; a slot's key).
            Step::Register | Step::Generate | Step::RenewCertificate => Some(0x47),
            // CHANGE REFERENCE DATA.
            Step::Pin | Step::Puk | Step::ChangePin | Step::ChangePuk => Some(0x24),
            // SET MANAGEMENT KEY.
            Step::ManagementKey | Step::RotateManagementKey => Some(0xFF),
            // PUT DATA (the certificate).
            Step::Import => Some(0xDB),
            // RESET RETRY COUNTER.
            Step::UnblockPin => Some(0x2C),
            // RESET.
            Step::Wipe => Some(0xFB),
            Step::Sign => None,
        }
    }

    /// The PIN the card has when the operation is done.
    fn final_pin(self) -> &'static str {
        match self {
            Step::ChangePin | Step::UnblockPin => NEW_PIN,
            _ => PIN,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The agent is SIGKILLed (mid-command on a card-writing step).
    AgentKilled,
    /// The key is pulled out (mid-command: it applies, then drops the connection).
    CardUnplugged,
    OpenBaoStopped,
    OpenBaoSealed,
    /// The installation's PostgreSQL server is stopped (a server of the
    /// cell's own: the machine's shared one keeps running).
    PostgresDown,
    LicenseStopped,
    /// `kleidia serve` is killed (mid-command on a card-writing step) and started again.
    ServerRestarted,
}

impl Fault {
    fn needs_own_openbao(self) -> bool {
        matches!(self, Fault::OpenBaoStopped | Fault::OpenBaoSealed)
    }
}

/// What was done to inject the fault, to undo it.
#[derive(Default)]
struct Injected {
    /// A card fault was armed (it may or may not have fired).
    armed: bool,
    unplugged: bool,
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Inject `fault` at `step` (called right before the step starts).
fn inject(stack: &mut Stack, fault: Fault, step: Step, done: &mut Injected) {
    let ins = step.ins();
    match fault {
        Fault::AgentKilled => match ins {
            Some(ins) => {
                let pid = stack.agent.running().expect("the agent runs").proc.pid();
                stack.key().arm_fault_killing("drop", ins, pid).unwrap();
                done.armed = true;
            }
            None => stack.agent.kill(),
        },
        Fault::CardUnplugged => match ins {
            Some(ins) => {
                stack.key().arm_fault("drop", ins).unwrap();
                done.armed = true;
            }
            None => {
                stack.key().unplug().unwrap();
                done.unplugged = true;
            }
        },
        Fault::OpenBaoStopped => stack.app.stop_openbao(),
        Fault::OpenBaoSealed => block_on(stack.app.openbao().seal()).unwrap(),
        Fault::PostgresDown => block_on(database_down(stack, true)),
        Fault::LicenseStopped => stack.app.stop_license_service(),
        Fault::ServerRestarted => match ins {
            Some(ins) => {
                let pid = stack.app.server.proc.pid();
                stack.key().arm_fault_killing("drop", ins, pid).unwrap();
                done.armed = true;
            }
            None => stack.app.server.proc.kill(),
        },
    }
}

/// Stop (or start again) the installation's PostgreSQL server: a server
/// of the cell's own ([`TestAppBuilder::own_postgres`]), so the shared one
/// the other tests use keeps running. `pg_ctl stop -m fast` ends every
/// session and the server process exits: connections are refused until
/// the start.
async fn database_down(stack: &Stack, down: bool) {
    let pg = stack.app.postgres();
    let r = if down { pg.stop() } else { pg.start() };
    r.unwrap_or_else(|e| panic!("PostgreSQL {}: {e:#}", if down { "stop" } else { "start" }));
}

/// Undo the fault: what an operator (or the person) does.
async fn recover(stack: &mut Stack, fault: Fault, done: &Injected) {
    let key = stack.key.as_mut().unwrap();
    let fired = key.log().contains("FAULT: INS");
    key.disarm_fault();
    if done.armed && fired {
        let k = stack.key();
        tokio::task::block_in_place(|| k.wait_back_after_fault(Duration::from_secs(30))).unwrap();
    }
    if done.unplugged {
        let k = stack.key.as_mut().unwrap();
        tokio::task::block_in_place(|| k.replug()).unwrap();
    }
    match fault {
        Fault::AgentKilled => stack.agent.kill(),
        Fault::OpenBaoStopped => {
            let bao = stack.app.openbao();
            bao.restart().await.unwrap();
            bao.unseal().await.unwrap();
        }
        Fault::OpenBaoSealed => stack.app.openbao().unseal().await.unwrap(),
        Fault::PostgresDown => database_down(stack, false).await,
        Fault::LicenseStopped => stack.app.restart_license_service(&[]).await,
        Fault::ServerRestarted => {
            stack.app.server.proc.kill();
            stack.app.start_server_again().await.unwrap();
        }
        Fault::CardUnplugged => {}
    }
    if stack.agent.running().is_none() {
        stack.agent.start().await.unwrap();
    }
}

/// Get the key to `step`: enrolled for maintenance, registered with its
/// PIN set for a roll back, blocked PIN for an unblock.
async fn prepare(step: Step, player: &Player, serial: u32) {
    match step {
        Step::Wipe => {
            let yk = player
                .discover()
                .await
                .unwrap()
                .into_iter()
                .find(|k| k["serial"] == serial)
                .unwrap();
            player.register(serial, &yk).await.unwrap();
            player.change_pin(serial, Some(PIN)).await.unwrap();
        }
        s if s.enrollment().is_none() => {
            player.enroll(serial, PIN).await.unwrap();
            if s == Step::UnblockPin {
                tokio::task::spawn_blocking(move || {
                    let mut yk = kleidia_tests::card::open(serial);
                    while yk.get_pin_retries().unwrap() > 0 {
                        let _ = yk.verify_pin(b"000000");
                    }
                })
                .await
                .unwrap();
            }
        }
        _ => {}
    }
}

/// The maintenance operation of `step`.
async fn maintain(player: &Player, step: Step, serial: u32) -> anyhow::Result<()> {
    match step {
        Step::ChangePin => player.change_pin(serial, Some(NEW_PIN)).await.map(drop),
        Step::ChangePuk => player.change_puk(serial).await.map(drop),
        Step::RotateManagementKey => player.rotate_management_key(serial).await.map(drop),
        Step::RenewCertificate => player.renew_certificates(serial).await,
        Step::UnblockPin => player.unblock_pin(serial, Some(NEW_PIN)).await.map(drop),
        Step::Wipe => player.wipe(serial).await.map(drop),
        other => unreachable!("{other:?} is an enrollment step"),
    }
}

/// The operations of the device still pending.
async fn pending(stack: &Stack, serial: u32) -> Vec<(String, String, bool)> {
    let pool = stack.app.db.pool().await.unwrap();
    let rows: Vec<(uuid::Uuid, String, Option<i64>)> = sqlx::query_as(
        "SELECT id, kind, secrets_version_new FROM operations WHERE device_serial = $1 AND state = 'pending' ORDER BY created_at",
    )
    .bind(i64::from(serial))
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(id, kind, v)| (id.to_string(), kind, v.is_some()))
        .collect()
}

/// Ticket lifetime, grace and sweep interval of the cells' server
/// (`[operations]`): a lost answer's operation is closed within about
/// `TICKET_SECS + GRACE_SECS + 1` seconds of its ticket instead of the
/// default 90 + 60 + 30. 30 s still leaves a loaded 2-core machine ample
/// time between a ticket being issued and the agent checking it.
const TICKET_SECS: u64 = 30;
/// The PostgresDown cells' own PostgreSQL server (loopback; cells run one
/// at a time under the readers' lock).
const POSTGRES_PORT: u16 = 18760;
const GRACE_SECS: u64 = 5;

/// The device's pending operations once every ticket issued so far has
/// expired and the sweep has had its turn: waits (at most the ticket
/// lifetime, the grace and a margin for a loaded machine) while a pending
/// non-secret operation may still be closed, then returns what is left.
async fn pending_after_expiry(stack: &Stack, serial: u32) -> Vec<(String, String, bool)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(TICKET_SECS + GRACE_SECS + 60);
    loop {
        let left = pending(stack, serial).await;
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every operation the server closed as expired says so (error
/// `outcome_unknown`) and has its `operation.expired` audit event, by
/// Kleidia; the admin's device page lists it as expired.
async fn expired_are_audited(stack: &Stack, serial: u32) {
    let pool = stack.app.db.pool().await.unwrap();
    let expired: Vec<(uuid::Uuid, Option<String>)> = sqlx::query_as(
        "SELECT id, error FROM operations WHERE device_serial = $1 AND state = 'expired'",
    )
    .bind(i64::from(serial))
    .fetch_all(&pool)
    .await
    .unwrap();
    for (id, error) in &expired {
        assert_eq!(error.as_deref(), Some("outcome_unknown"), "{id}");
        let audited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_log WHERE action = 'operation.expired' \
             AND actor_name = 'kleidia' AND details->>'operation_id' = $1",
        )
        .bind(id.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(audited, 1, "operation.expired audited once for {id}");
    }
    pool.close().await;
    if !expired.is_empty() {
        let (s, _, page) = stack
            .app
            .admin_browser()
            .await
            .get_text(&format!("/devices/{serial}"))
            .await;
        assert_eq!(s, 200);
        assert!(
            page.contains("<td>expired</td><td>outcome_unknown</td>"),
            "the device page lists the expired operation: {page}"
        );
    }
}

/// The device page, as the admin sees it, explains what the API says:
/// the state, an interrupted enrollment, an unconfirmed change.
async fn page_explains(stack: &Stack, serial: u32) {
    let (s, dev) = stack.app.admin_api().await.device(serial).await;
    if s == 404 {
        // Never registered (the fault hit the registration): no page yet.
        return;
    }
    let dev: Value = dev;
    let state = dev["device"]["state"].as_str().unwrap().to_string();
    let browser = stack.app.admin_browser().await;
    let (s, _, page) = browser.get_text(&format!("/devices/{serial}")).await;
    assert_eq!(s, 200, "{page}");
    assert!(
        page.contains(&format!("state-{state}")),
        "the page shows the state {state}"
    );
    let unconfirmed = pending(stack, serial).await.iter().any(|p| p.2);
    if unconfirmed {
        assert!(page.contains("An unconfirmed change"), "{page}");
    }
    if state == "registered" {
        assert!(page.contains("registered but not enrolled yet"), "{page}");
    }
}

async fn cell(step: Step, fault: Fault, serial: u32) {
    let mut stack = Stack::start_configured(Some(serial), |b| {
        let b = b
            .env(
                "KLEIDIA_OPERATIONS_TICKET_LIFETIME_SECS",
                &TICKET_SECS.to_string(),
            )
            .env(
                "KLEIDIA_OPERATIONS_RESULT_GRACE_SECS",
                &GRACE_SECS.to_string(),
            )
            .env("KLEIDIA_OPERATIONS_SWEEP_INTERVAL_SECS", "1");
        let b = if fault == Fault::PostgresDown {
            b.own_postgres(POSTGRES_PORT)
        } else {
            b
        };
        if fault.needs_own_openbao() {
            b.persistent_openbao()
        } else {
            b
        }
    })
    .await
    .unwrap();
    let player = Player::sign_in(&stack.app, "fiona", "user", stack.agent.running().unwrap())
        .await
        .unwrap();
    prepare(step, &player, serial).await;
    // Only helpdesk or an admin unblocks a PIN with the escrowed PUK.
    let owner = player.clone();
    let player = if step == Step::UnblockPin {
        Player::sign_in(
            &stack.app,
            "hana",
            "helpdesk",
            stack.agent.running().unwrap(),
        )
        .await
        .unwrap()
    } else {
        player
    };

    // The step, with the fault.
    let mut done = Injected::default();
    let first = match step.enrollment() {
        Some(at) => {
            let mut once = false;
            let stack = &mut stack;
            let done = &mut done;
            player
                .enroll_with(serial, PIN, |s| {
                    if s == at && !once {
                        once = true;
                        inject(stack, fault, step, done);
                    }
                })
                .await
                .map(drop)
        }
        None => {
            inject(&mut stack, fault, step, &mut done);
            maintain(&player, step, serial).await
        }
    };
    if let Err(e) = &first {
        if let Some(p) = play_error(e) {
            assert_ne!(
                p.status, 500,
                "an internal error, not an explained one: {e:#}"
            );
        }
    }

    recover(&mut stack, fault, &done).await;
    player.detect().await.unwrap();
    page_explains(&stack, serial).await;

    // Resume, or run it again.
    let finished = if first.is_ok() {
        Ok(())
    } else if step.enrollment().is_some() {
        player.enroll(serial, PIN).await.map(drop)
    } else {
        let unconfirmed = pending(&stack, serial).await.into_iter().find(|p| p.2);
        match unconfirmed {
            Some((id, _, _)) if step != Step::Wipe => player.resume(serial, &id).await.map(drop),
            _ => maintain(&player, step, serial).await,
        }
    };
    stack.check(
        finished.is_ok(),
        &format!("resume after {fault:?} at {step:?}: first {first:?}, then {finished:?}"),
    );

    // Nothing lost, nothing left open: no unconfirmed secret change, and no
    // operation at all left pending. A key generation, an import or a reset
    // whose answer was lost is closed by the server once its ticket has
    // expired (`expired`, `outcome_unknown`, audited as `operation.expired`);
    // the step itself was done again.
    let left: Vec<_> = pending(&stack, serial)
        .await
        .into_iter()
        .filter(|p| p.2)
        .collect();
    stack.check(
        left.is_empty(),
        &format!("unconfirmed changes left pending: {left:?}"),
    );
    let left = pending_after_expiry(&stack, serial).await;
    stack.check(
        left.is_empty(),
        &format!("operations left pending after their tickets expired: {left:?}"),
    );
    expired_are_audited(&stack, serial).await;
    let dev = stack.app.device(serial).await;
    if step == Step::Wipe {
        assert_eq!(dev["device"]["state"], "registered", "{dev}");
        let defaults = owner.check_defaults(serial).await.unwrap();
        assert_eq!(
            defaults["pin"], true,
            "the card is back to factory: {defaults}"
        );
        assert_eq!(defaults["management_key"], true, "{defaults}");
    } else {
        assert_eq!(dev["device"]["state"], "active", "{dev}");
        let escrow = escrow_opens_card(&stack.app, serial).await.unwrap();
        assert_eq!(escrow["pin"], step.final_pin());
    }
    page_explains(&stack, serial).await;
    let (ok, out) = stack.app.audit_verify();
    assert!(ok, "audit verify: {out}");
}

/// One test per (step, fault); the serial is unique per cell.
macro_rules! cells {
    ($($name:ident = $step:ident x $fault:ident $(#[$attr:meta])?;)*) => {
        /// The table: every cell and its test.
        #[allow(dead_code)]
        pub const TABLE: &[(&str, &str, &str)] = &[$((stringify!($name), stringify!($step), stringify!($fault))),*];
        $(
            #[tokio::test(flavor = "multi_thread")]
            $(#[$attr])?
            async fn $name() {
                cell(Step::$step, Fault::$fault, 49_000_000 + 16 * Step::$step as u32 + Fault::$fault as u32).await;
            }
        )*
    };
}

cells! {
    register_x_agent_killed = Register x AgentKilled #[ignore = "fault matrix: make faults"];
    register_x_card_unplugged = Register x CardUnplugged #[ignore = "fault matrix: make faults"];
    register_x_openbao_stopped = Register x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    register_x_openbao_sealed = Register x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    register_x_postgres_down = Register x PostgresDown #[ignore = "fault matrix: make faults"];
    register_x_license_stopped = Register x LicenseStopped #[ignore = "fault matrix: make faults"];
    register_x_server_restarted = Register x ServerRestarted #[ignore = "fault matrix: make faults"];
    pin_x_agent_killed = Pin x AgentKilled;
    pin_x_card_unplugged = Pin x CardUnplugged #[ignore = "fault matrix: make faults"];
    pin_x_openbao_stopped = Pin x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    pin_x_openbao_sealed = Pin x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    pin_x_postgres_down = Pin x PostgresDown #[ignore = "fault matrix: make faults"];
    pin_x_license_stopped = Pin x LicenseStopped #[ignore = "fault matrix: make faults"];
    pin_x_server_restarted = Pin x ServerRestarted #[ignore = "fault matrix: make faults"];
    puk_x_agent_killed = Puk x AgentKilled #[ignore = "fault matrix: make faults"];
    puk_x_card_unplugged = Puk x CardUnplugged #[ignore = "fault matrix: make faults"];
    puk_x_openbao_stopped = Puk x OpenBaoStopped;
    puk_x_openbao_sealed = Puk x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    puk_x_postgres_down = Puk x PostgresDown #[ignore = "fault matrix: make faults"];
    puk_x_license_stopped = Puk x LicenseStopped #[ignore = "fault matrix: make faults"];
    puk_x_server_restarted = Puk x ServerRestarted #[ignore = "fault matrix: make faults"];
    management_key_x_agent_killed = ManagementKey x AgentKilled #[ignore = "fault matrix: make faults"];
    management_key_x_card_unplugged = ManagementKey x CardUnplugged #[ignore = "fault matrix: make faults"];
    management_key_x_openbao_stopped = ManagementKey x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    management_key_x_openbao_sealed = ManagementKey x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    management_key_x_postgres_down = ManagementKey x PostgresDown #[ignore = "fault matrix: make faults"];
    management_key_x_license_stopped = ManagementKey x LicenseStopped #[ignore = "fault matrix: make faults"];
    management_key_x_server_restarted = ManagementKey x ServerRestarted #[ignore = "fault matrix: make faults"];
    generate_x_agent_killed = Generate x AgentKilled #[ignore = "fault matrix: make faults"];
    generate_x_card_unplugged = Generate x CardUnplugged;
    generate_x_openbao_stopped = Generate x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    generate_x_openbao_sealed = Generate x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    generate_x_postgres_down = Generate x PostgresDown #[ignore = "fault matrix: make faults"];
    generate_x_license_stopped = Generate x LicenseStopped #[ignore = "fault matrix: make faults"];
    generate_x_server_restarted = Generate x ServerRestarted #[ignore = "fault matrix: make faults"];
    sign_x_agent_killed = Sign x AgentKilled #[ignore = "fault matrix: make faults"];
    sign_x_card_unplugged = Sign x CardUnplugged #[ignore = "fault matrix: make faults"];
    sign_x_openbao_stopped = Sign x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    sign_x_openbao_sealed = Sign x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    sign_x_postgres_down = Sign x PostgresDown #[ignore = "fault matrix: make faults"];
    sign_x_license_stopped = Sign x LicenseStopped #[ignore = "fault matrix: make faults"];
    sign_x_server_restarted = Sign x ServerRestarted #[ignore = "fault matrix: make faults"];
    import_x_agent_killed = Import x AgentKilled #[ignore = "fault matrix: make faults"];
    import_x_card_unplugged = Import x CardUnplugged #[ignore = "fault matrix: make faults"];
    import_x_openbao_stopped = Import x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    import_x_openbao_sealed = Import x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    import_x_postgres_down = Import x PostgresDown #[ignore = "fault matrix: make faults"];
    import_x_license_stopped = Import x LicenseStopped #[ignore = "fault matrix: make faults"];
    import_x_server_restarted = Import x ServerRestarted #[ignore = "fault matrix: make faults"];
    change_pin_x_agent_killed = ChangePin x AgentKilled #[ignore = "fault matrix: make faults"];
    change_pin_x_card_unplugged = ChangePin x CardUnplugged;
    change_pin_x_openbao_stopped = ChangePin x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    change_pin_x_openbao_sealed = ChangePin x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    change_pin_x_postgres_down = ChangePin x PostgresDown #[ignore = "fault matrix: make faults"];
    change_pin_x_license_stopped = ChangePin x LicenseStopped #[ignore = "fault matrix: make faults"];
    change_pin_x_server_restarted = ChangePin x ServerRestarted #[ignore = "fault matrix: make faults"];
    change_puk_x_agent_killed = ChangePuk x AgentKilled #[ignore = "fault matrix: make faults"];
    change_puk_x_card_unplugged = ChangePuk x CardUnplugged #[ignore = "fault matrix: make faults"];
    change_puk_x_openbao_stopped = ChangePuk x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    change_puk_x_openbao_sealed = ChangePuk x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    change_puk_x_postgres_down = ChangePuk x PostgresDown #[ignore = "fault matrix: make faults"];
    change_puk_x_license_stopped = ChangePuk x LicenseStopped #[ignore = "fault matrix: make faults"];
    change_puk_x_server_restarted = ChangePuk x ServerRestarted;
    rotate_management_key_x_agent_killed = RotateManagementKey x AgentKilled #[ignore = "fault matrix: make faults"];
    rotate_management_key_x_card_unplugged = RotateManagementKey x CardUnplugged #[ignore = "fault matrix: make faults"];
    rotate_management_key_x_openbao_stopped = RotateManagementKey x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    rotate_management_key_x_openbao_sealed = RotateManagementKey x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    rotate_management_key_x_postgres_down = RotateManagementKey x PostgresDown #[ignore = "fault matrix: make faults"];
    rotate_management_key_x_license_stopped = RotateManagementKey x LicenseStopped #[ignore = "fault matrix: make faults"];
    rotate_management_key_x_server_restarted = RotateManagementKey x ServerRestarted #[ignore = "fault matrix: make faults"];
    renew_certificate_x_agent_killed = RenewCertificate x AgentKilled #[ignore = "fault matrix: make faults"];
    renew_certificate_x_card_unplugged = RenewCertificate x CardUnplugged #[ignore = "fault matrix: make faults"];
    renew_certificate_x_openbao_stopped = RenewCertificate x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    renew_certificate_x_openbao_sealed = RenewCertificate x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    renew_certificate_x_postgres_down = RenewCertificate x PostgresDown #[ignore = "fault matrix: make faults"];
    renew_certificate_x_license_stopped = RenewCertificate x LicenseStopped #[ignore = "fault matrix: make faults"];
    renew_certificate_x_server_restarted = RenewCertificate x ServerRestarted #[ignore = "fault matrix: make faults"];
    unblock_pin_x_agent_killed = UnblockPin x AgentKilled #[ignore = "fault matrix: make faults"];
    unblock_pin_x_card_unplugged = UnblockPin x CardUnplugged #[ignore = "fault matrix: make faults"];
    unblock_pin_x_openbao_stopped = UnblockPin x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    unblock_pin_x_openbao_sealed = UnblockPin x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    unblock_pin_x_postgres_down = UnblockPin x PostgresDown #[ignore = "fault matrix: make faults"];
    unblock_pin_x_license_stopped = UnblockPin x LicenseStopped #[ignore = "fault matrix: make faults"];
    unblock_pin_x_server_restarted = UnblockPin x ServerRestarted #[ignore = "fault matrix: make faults"];
    wipe_x_agent_killed = Wipe x AgentKilled #[ignore = "fault matrix: make faults"];
    wipe_x_card_unplugged = Wipe x CardUnplugged #[ignore = "fault matrix: make faults"];
    wipe_x_openbao_stopped = Wipe x OpenBaoStopped #[ignore = "fault matrix: make faults"];
    wipe_x_openbao_sealed = Wipe x OpenBaoSealed #[ignore = "fault matrix: make faults"];
    wipe_x_postgres_down = Wipe x PostgresDown #[ignore = "fault matrix: make faults"];
    wipe_x_license_stopped = Wipe x LicenseStopped #[ignore = "fault matrix: make faults"];
    wipe_x_server_restarted = Wipe x ServerRestarted #[ignore = "fault matrix: make faults"];
}
