//! Failover under load (issue 19, docs/ha.md): the `make ha` stack
//! (scripts/ha.sh: three replicas behind HAProxy, a three-node OpenBao Raft
//! cluster, PostgreSQL, the license service) while two protocol-level agent
//! players enroll software YubiKeys through the REAL agent and change their
//! PINs, and a signed-in browser session keeps loading pages. Three faults,
//! one per round, each on fresh factory keys:
//!
//! 1. replica 1 is SIGKILLed mid-enrollment, then started again;
//! 2. the active OpenBao node is stopped (a standby takes over), then
//!    started and unsealed again (it rejoins as a standby);
//! 3. the license service is restarted.
//!
//! After each round: both keys are active and nothing is left pending; the
//! secrets escrowed in OpenBao open each card (yubikey crate, over pcscd);
//! the browser session was never sent back to sign-in; every failed request
//! was followed by a successful retry, and the failures stay within the
//! bound the fault explains (see `bound`); `kleidia audit verify` passes.
//!
//! It takes about 2 minutes and needs HAProxy: it runs when HA_TEST=1, which
//! `make test` and `make ha-test` (this test alone) set; a bare `cargo
//! nextest run` skips it. Figures: target/bench/ha-failover.md.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use kleidia_tests::agent::{AgentOptions, TestAgent};
use kleidia_tests::card::VirtualYubiKey;
use kleidia_tests::client::{Api, Browser};
use kleidia_tests::ha::HaStack;
use kleidia_tests::player::{card_opens_with, play_error, Player};
use kleidia_tests::workspace_root;
use reqwest::StatusCode;
use serde_json::Value;

/// Loopback ports of this test's stack: 18430..18450 (docs/ha.md).
const PORT: u16 = 18430;
const PASSWORD: &str = "ha-failover-password-1";
/// PINs the players cycle through (none trivial).
const PINS: [&str; 6] = ["529371", "318642", "740815", "936204", "205938", "681357"];
/// A client waits this long before retrying a failed request.
const BACKOFF: Duration = Duration::from_millis(500);
/// Give up on a step after this many failed tries (then the test fails).
const MAX_TRIES: u32 = 120;
const SIGN_IN: &str = "sent to sign-in";
/// Concurrent clients: two players and one browser.
const CLIENTS: u64 = 3;
/// Sign-ins (slow: Argon2id) sent through HAProxy just before the replica
/// is killed, so some are in flight on it. Fewer than
/// `throttle.account_free_failures` (5): sign-ins of one account in flight
/// at once count against it until they succeed (parallel guessing).
const BURST: u64 = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    KillReplica,
    OpenBaoFailover,
    LicenseRestart,
}

/// What went wrong during a round, as the clients saw it.
#[derive(Default)]
struct Tally {
    /// 5xx answers (HAProxy's 502/503 for a dead replica, Kleidia's 503 while
    /// OpenBao has no active node).
    server_errors: AtomicU32,
    /// Nothing answered (connection reset or refused).
    unreachable: AtomicU32,
    /// Other refusals (4xx) a failover caused.
    refusals: AtomicU32,
    /// Each failure and what the retry did, for the report.
    events: Mutex<Vec<String>>,
    /// Browser pages loaded, and times the browser was sent to sign in.
    pages: AtomicU32,
    sessions_lost: AtomicU32,
}

impl Tally {
    fn note(&self, who: &str, err: &anyhow::Error) {
        match play_error(err) {
            Some(p) if p.status == 0 => {
                self.unreachable.fetch_add(1, Ordering::SeqCst);
            }
            Some(p) if p.status >= 500 => {
                self.server_errors.fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                self.refusals.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.events
            .lock()
            .unwrap()
            .push(format!("{who}: {}", short(err)));
    }

    fn failures(&self) -> u64 {
        u64::from(self.server_errors.load(Ordering::SeqCst))
            + u64::from(self.unreachable.load(Ordering::SeqCst))
    }
}

fn short(err: &anyhow::Error) -> String {
    let s = format!("{err:#}");
    s.chars().take(240).collect()
}

/// One person at a workstation: a signed-in API session playing the page
/// for their own agent.
struct Seat {
    name: &'static str,
    player: Player,
    _agent: TestAgent,
}

/// Enroll `serial`, then change its PIN until `stop`, retrying every failed
/// step after [`BACKOFF`] the way a person clicks again (an interrupted
/// enrollment resumes; an unconfirmed PIN change is resumed first).
/// Counts PIN changes done after `healed` in `after_heal`.
async fn play(
    seat: Arc<Seat>,
    serial: u32,
    tally: Arc<Tally>,
    healed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    after_heal: Arc<AtomicU32>,
) -> Result<u32> {
    let p = &seat.player;
    let mut tries = 0;
    loop {
        match p.enroll(serial, PINS[0]).await {
            Ok(_) => break,
            Err(e) => {
                tally.note(&format!("{} enroll {serial}", seat.name), &e);
                tries += 1;
                if tries >= MAX_TRIES {
                    bail!(
                        "{}: enrollment of {serial} never succeeded: {e:#}",
                        seat.name
                    );
                }
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
    let mut changes = 0u32;
    let mut tries = 0;
    while !stop.load(Ordering::SeqCst) {
        let pin = PINS[1 + (changes as usize % (PINS.len() - 1))];
        match p.change_pin(serial, Some(pin)).await {
            Ok(_) => {
                changes += 1;
                tries = 0;
                if healed.load(Ordering::SeqCst) {
                    after_heal.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(e) => {
                tally.note(&format!("{} set_pin {serial}", seat.name), &e);
                tries += 1;
                if tries >= MAX_TRIES {
                    bail!(
                        "{}: PIN change of {serial} never succeeded: {e:#}",
                        seat.name
                    );
                }
                tokio::time::sleep(BACKOFF).await;
                // The page's retry: an unconfirmed change is sent again.
                if let Err(e) = resume_pending(p, serial).await {
                    tally.note(&format!("{} resume {serial}", seat.name), &e);
                }
            }
        }
    }
    Ok(changes)
}

/// Resume every unconfirmed secret change of `serial` (the device page's
/// "retry" button).
async fn resume_pending(p: &Player, serial: u32) -> Result<()> {
    let dev = p
        .device(serial)
        .await?
        .ok_or_else(|| anyhow!("{serial} unknown"))?;
    for o in dev["operations"].as_array().into_iter().flatten() {
        if o["state"] == "pending" && !o["secrets_version_new"].is_null() {
            p.resume(serial, o["id"].as_str().unwrap_or_default())
                .await?;
        }
    }
    Ok(())
}

/// A signed-in browser loading pages until `stop`; a failed load is retried
/// once at once and must then succeed; being sent to sign in counts as a
/// lost session.
async fn browse(browser: Browser, tally: Arc<Tally>, stop: Arc<AtomicBool>) -> Result<()> {
    let pages = ["/", "/devices", "/audit", "/devices?state=active"];
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let path = pages[i % pages.len()];
        i += 1;
        match load(&browser, path).await {
            Ok(()) => {}
            Err(e) if e.to_string().starts_with(SIGN_IN) => {
                tally.sessions_lost.fetch_add(1, Ordering::SeqCst);
                bail!("browser: the session was lost: {e}");
            }
            Err(e) => {
                tally.note(&format!("browser GET {path}"), &e);
                if let Err(e2) = load(&browser, path).await {
                    tally.note(&format!("browser GET {path} (retry)"), &e2);
                    bail!("browser: the retry of GET {path} failed too: {e2:#}");
                }
            }
        }
        tally.pages.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// GET `path` as the signed-in browser; an error unless 200 with a page.
async fn load(browser: &Browser, path: &str) -> Result<()> {
    use kleidia_tests::player::PlayError;
    let fail = |status: u16, code: &str, body: String| -> anyhow::Error {
        PlayError {
            who: "kleidia",
            path: path.to_string(),
            status,
            code: code.to_string(),
            body: Value::String(body),
        }
        .into()
    };
    let r = match browser.http.get(browser.url(path)).send().await {
        Ok(r) => r,
        Err(e) => return Err(fail(0, "unreachable", e.to_string())),
    };
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = r.text().await.unwrap_or_default();
    if status == StatusCode::SEE_OTHER && location.starts_with("/login") {
        return Err(anyhow!("{SIGN_IN} from {path}"));
    }
    if status != StatusCode::OK {
        return Err(fail(
            status.as_u16(),
            "http",
            body.chars().take(200).collect(),
        ));
    }
    Ok(())
}

/// `POST /api/auth/login` through HAProxy until it succeeds, retrying after
/// [`BACKOFF`]; how many tries failed.
async fn sign_in_until_ok(url: String, tally: Arc<Tally>) -> Result<u32> {
    use kleidia_tests::player::PlayError;
    let http = reqwest::Client::new();
    // Every try before the successful one failed.
    for failed in 0..MAX_TRIES {
        let r = http
            .post(format!("{url}/api/auth/login"))
            .json(&serde_json::json!({"username": "watcher", "password": PASSWORD}))
            .send()
            .await;
        let (status, body) = match r {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        };
        if status == 200 {
            return Ok(failed);
        }
        tally.note(
            "burst sign-in",
            &PlayError {
                who: "kleidia",
                path: "/api/auth/login".into(),
                status,
                code: "sign_in".into(),
                body: Value::String(body.chars().take(200).collect()),
            }
            .into(),
        );
        tokio::time::sleep(BACKOFF).await;
    }
    bail!("a sign-in never succeeded")
}

/// The most failed requests a fault may cause, and why (see docs/ha.md).
fn bound(fault: Fault, outage: Duration) -> (u64, String) {
    match fault {
        // HAProxy resends a request the dead replica refused (conn-failure,
        // redispatch); only a request already in flight on it can fail, at
        // most one per client.
        Fault::KillReplica => (
            CLIENTS + BURST,
            format!(
                "one request in flight per client ({CLIENTS} clients + {BURST} sign-ins sent just before)"
            ),
        ),
        // While no node is active, secret operations answer 503: each player
        // fails at most once per backoff during the outage, plus the request
        // in flight at each end of it. Pages need no OpenBao.
        Fault::OpenBaoFailover => {
            let per = outage.as_millis() / BACKOFF.as_millis() + 2;
            (
                2 * per as u64,
                format!(
                    "2 players × (outage {} ms / backoff {} ms + 2)",
                    outage.as_millis(),
                    BACKOFF.as_millis()
                ),
            )
        }
        // The replicas keep the last verified license status (cache); no
        // request needs the license service to answer.
        Fault::LicenseRestart => (0, "nothing depends on the license service answering".into()),
    }
}

struct Round {
    /// Sign-ins of the burst whose first try failed (their retry succeeded).
    burst_failed: u32,
    fault: Fault,
    outage: Duration,
    failures: u64,
    bound: u64,
    why: String,
    server_errors: u32,
    unreachable: u32,
    refusals: u32,
    pages: u32,
    pin_changes: Vec<u32>,
    events: Vec<String>,
}

/// Inject `fault`; returns how long the service was degraded (replica:
/// until HAProxy took it out; OpenBao: until a standby was active behind
/// HAProxy; license: the restart).
async fn inject(ha: &HaStack, fault: Fault) -> Result<Duration> {
    let t0 = Instant::now();
    match fault {
        Fault::KillReplica => {
            ha.kill_app(1)?;
            let out = t0.elapsed();
            tokio::time::sleep(Duration::from_secs(3)).await;
            ha.start_app(1)?;
            Ok(out)
        }
        Fault::OpenBaoFailover => {
            let old = ha.active_bao()?;
            ha.stop_bao(old)?;
            let bao = ha.root_bao()?;
            let mut new = None;
            while t0.elapsed() < Duration::from_secs(60) {
                // Active, and reachable through HAProxy.
                if let Ok(n) = ha.active_bao() {
                    if n != old && bao.get("sys/health").await.is_ok() {
                        new = Some(n);
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let outage = t0.elapsed();
            let new = new.ok_or_else(|| anyhow!("no standby took over from node {old}"))?;
            eprintln!(
                "ha: OpenBao node {old} stopped, node {new} active after {} ms",
                outage.as_millis()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            ha.start_bao(old)?;
            assert_eq!(
                ha.active_bao()?,
                new,
                "the returning node rejoins as a standby"
            );
            Ok(outage)
        }
        Fault::LicenseRestart => {
            ha.restart_license()?;
            Ok(t0.elapsed())
        }
    }
}

async fn round(
    ha: &HaStack,
    seats: &[Arc<Seat>; 2],
    browser: &Browser,
    fault: Fault,
    serials: [u32; 2],
    cards_dir: &std::path::Path,
) -> Result<Round> {
    let mut keys = Vec::new();
    for (i, serial) in serials.iter().enumerate() {
        let dir = cards_dir.to_path_buf();
        let s = *serial;
        keys.push(
            tokio::task::spawn_blocking(move || VirtualYubiKey::plug(&dir, s, "5.7.1", i as u8))
                .await??,
        );
    }
    let tally = Arc::new(Tally::default());
    let healed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut after = Vec::new();
    let mut tasks = Vec::new();
    for (seat, serial) in seats.iter().zip(serials) {
        let a = Arc::new(AtomicU32::new(0));
        after.push(a.clone());
        tasks.push(tokio::spawn(play(
            seat.clone(),
            serial,
            tally.clone(),
            healed.clone(),
            stop.clone(),
            a,
        )));
    }
    let browsing = tokio::spawn(browse(
        Browser {
            http: browser.http.clone(),
            jar: browser.jar.clone(),
            base: browser.base.clone(),
        },
        tally.clone(),
        stop.clone(),
    ));
    // Mid-enrollment: the players have registered their keys and are
    // escrowing credentials.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Sign-ins in flight when the replica dies: each must succeed on retry.
    let mut burst = Vec::new();
    if fault == Fault::KillReplica {
        for _ in 0..BURST {
            burst.push(tokio::spawn(sign_in_until_ok(
                ha.url.clone(),
                tally.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outage = inject(ha, fault).await?;
    let mut burst_failed = 0;
    for b in burst {
        burst_failed += b.await??;
    }
    healed.store(true, Ordering::SeqCst);
    // Each player enrolls and then changes its PIN twice on the healed stack.
    let deadline = Instant::now() + Duration::from_secs(300);
    while after.iter().any(|a| a.load(Ordering::SeqCst) < 2) {
        if Instant::now() > deadline || tasks.iter().any(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut pin_changes = Vec::new();
    for t in tasks {
        pin_changes.push(t.await??);
    }
    browsing.await??;
    for (a, s) in after.iter().zip(serials) {
        if a.load(Ordering::SeqCst) < 2 {
            bail!("{fault:?}: the player of {s} did not change its PIN twice after the fault");
        }
    }

    // Both keys are active, and nothing they did is left pending.
    let pool = ha.db.pool().await?;
    for serial in serials {
        let (state, version): (String, Option<i64>) =
            sqlx::query_as("SELECT state, secrets_version FROM devices WHERE serial = $1")
                .bind(i64::from(serial))
                .fetch_one(&pool)
                .await?;
        assert_eq!(state, "active", "{fault:?}: YubiKey {serial}");
        let pending: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT kind, secrets_version_new FROM operations \
             WHERE device_serial = $1 AND state = 'pending'",
        )
        .bind(i64::from(serial))
        .fetch_all(&pool)
        .await?;
        assert!(
            pending.is_empty(),
            "{fault:?}: operations of {serial} left pending: {pending:?}"
        );
        // The escrowed secrets of the version Kleidia says the card holds
        // open the card.
        let version = version.ok_or_else(|| anyhow!("{serial}: nothing escrowed"))?;
        let escrow = ha
            .root_bao()?
            .get(&format!("yubikeys/data/{serial}/secrets?version={version}"))
            .await?["data"]["data"]
            .clone();
        tokio::task::spawn_blocking(move || card_opens_with(serial, &escrow)).await??;
    }
    pool.close().await;
    drop(keys);

    let (ok, out) = ha.audit_verify()?;
    assert!(ok, "{fault:?}: kleidia audit verify failed:\n{out}");
    assert_eq!(
        tally.sessions_lost.load(Ordering::SeqCst),
        0,
        "{fault:?}: the browser session was lost"
    );

    let (max, why) = bound(fault, outage);
    let events = tally.events.lock().unwrap().clone();
    Ok(Round {
        burst_failed,
        fault,
        outage,
        failures: tally.failures(),
        bound: max,
        why,
        server_errors: tally.server_errors.load(Ordering::SeqCst),
        unreachable: tally.unreachable.load(Ordering::SeqCst),
        refusals: tally.refusals.load(Ordering::SeqCst),
        pages: tally.pages.load(Ordering::SeqCst),
        pin_changes,
        events,
    })
}

async fn seat(ha: &HaStack, name: &'static str) -> Result<Arc<Seat>> {
    ha.create_user(name, "user", PASSWORD)?;
    let agent = TestAgent::spawn_with(AgentOptions {
        kleidia_url: ha.url.clone(),
        // The agent fetches Kleidia's ticket key, through HAProxy.
        ticket_key: None,
        allow_virtual_readers: true,
    })
    .await?;
    let mut api = Api::new(&ha.url);
    api.login(name, PASSWORD).await?;
    let player = Player::at(api, &agent.base, &agent.origin);
    player.detect().await?;
    Ok(Arc::new(Seat {
        name,
        player,
        _agent: agent,
    }))
}

fn report(rounds: &[Round]) -> String {
    let mut md = String::from(
        "# Kleidia failover under load (make ha-test)\n\n\
         Two agent players (real agent, software YubiKeys) enroll and change PINs through \
         HAProxy while a browser session loads pages; one fault per round. Failures = 5xx \
         answers + requests nothing answered; each was retried and the retry succeeded.\n\n\
         | fault | degraded for | 5xx | unreachable | 4xx | failures | bound | why | pages | PIN changes | in-flight sign-ins failed (then retried OK) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rounds {
        md.push_str(&format!(
            "| {:?} | {} ms | {} | {} | {} | {} | {} | {} | {} | {:?} | {} |\n",
            r.fault,
            r.outage.as_millis(),
            r.server_errors,
            r.unreachable,
            r.refusals,
            r.failures,
            r.bound,
            r.why,
            r.pages,
            r.pin_changes,
            r.burst_failed
        ));
    }
    for r in rounds {
        md.push_str(&format!("\n## {:?}: failed requests\n\n", r.fault));
        if r.events.is_empty() {
            md.push_str("none\n");
        }
        for e in &r.events {
            md.push_str(&format!("- {e}\n"));
        }
    }
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_under_load_loses_nothing() {
    if std::env::var("HA_TEST").is_err() {
        eprintln!("skipped: `make test` and `make ha-test` run this test (HA_TEST=1)");
        return;
    }
    let _card = kleidia_tests::card::lock().await;
    let ha = HaStack::up(PORT).await.unwrap();
    let cards = tempfile::tempdir().unwrap();
    std::fs::copy(
        ha.attestation_root(),
        cards.path().join("attestation-root.pem"),
    )
    .unwrap();

    ha.create_user("watcher", "admin", PASSWORD).unwrap();
    let browser = Browser::new(&ha.url);
    let r = browser.login("watcher", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "browser sign-in");
    let cookie = browser.cookie_header();
    let seats = [
        seat(&ha, "alice").await.unwrap(),
        seat(&ha, "bob").await.unwrap(),
    ];

    let mut rounds = Vec::new();
    for (i, fault) in [
        Fault::KillReplica,
        Fault::OpenBaoFailover,
        Fault::LicenseRestart,
    ]
    .into_iter()
    .enumerate()
    {
        let base = 19_190_000 + 10 * i as u32;
        let r = round(&ha, &seats, &browser, fault, [base, base + 1], cards.path())
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e:#}"));
        eprintln!(
            "ha: {fault:?}: {} failures (bound {}: {})",
            r.failures, r.bound, r.why
        );
        rounds.push(r);
    }
    standby_replica_is_served(&ha, 19_190_000).await;

    let md = report(&rounds);
    let out = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("ha-failover.md"), &md).unwrap();
    eprintln!("{md}");

    // The browser kept one session throughout.
    assert_eq!(
        browser.cookie_header(),
        cookie,
        "the session cookie changed"
    );
    for r in &rounds {
        assert!(
            r.failures <= r.bound,
            "{:?}: {} failed requests, more than the bound {} ({})\n{md}",
            r.fault,
            r.failures,
            r.bound,
            r.why
        );
    }
}

/// A replica whose OpenBao address is a standby node, not the active one
/// (the production Service may hand it one: docs/ha.md): `/readyz` says
/// ready, because the standby forwards every request to the active node,
/// and the device page's escrow history, read from OpenBao, is there.
async fn standby_replica_is_served(ha: &HaStack, serial: u32) {
    let active = ha.active_bao().unwrap();
    let standby = (1..=3u8).find(|n| *n != active).unwrap();
    let bao = format!("http://127.0.0.1:{}", PORT + 9 + 2 * u16::from(standby));
    let port = PORT + 22;
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = kleidia_tests::app::kleidia_command();
    cmd.arg("--config")
        .arg(ha.dir().join("kleidia.toml"))
        .arg("serve")
        .env("KLEIDIA_SERVER_BIND", format!("127.0.0.1:{port}"))
        .env("KLEIDIA_OPENBAO_ADDR", &bao)
        // Reached directly, not through HAProxy: its own address is the one
        // its host check accepts.
        .env("KLEIDIA_SERVER_PUBLIC_URL", &url);
    let _replica = kleidia_tests::ChildGuard::spawn_logged(
        "replica on a standby",
        &mut cmd,
        &ha.dir().join("logs/app-on-standby.log"),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
            let v: Value = r.json().await.unwrap_or_default();
            if v["status"] == "ready" || Instant::now() > deadline {
                break v;
            }
        } else if Instant::now() > deadline {
            panic!(
                "the replica on standby node {standby} never answered:\n{}",
                ha.log("app-on-standby")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        ready["status"], "ready",
        "a replica on standby node {standby} ({bao}): {ready}"
    );
    assert_eq!(ready["checks"]["openbao"], "ok", "{ready}");

    let browser = Browser::new(&url);
    let r = browser.login("watcher", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (s, _, body) = browser.get_text(&format!("/api/devices/{serial}")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["escrow_unavailable"], Value::Null, "{v}");
    assert!(
        v["secret_versions"]
            .as_array()
            .is_some_and(|h| h.iter().any(|x| x["current"] == true)),
        "the escrow history came through the standby: {v}"
    );
}
