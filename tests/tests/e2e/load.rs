//! Load and concurrency (issue 16 §2): while signed-in sessions browse,
//! enrollments and PIN changes run at once through protocol-level agent
//! players ([`Player`]) to real agents driving software YubiKeys in the
//! readers of private pcscds ([`PrivatePcscd`]; the system pcscd's two
//! readers are not used, so this holds no `pcsc.lock`).
//!
//! Afterwards: no 5xx anywhere (not in what the sessions and players saw,
//! not in the server's `/metrics`, not in its log), no PIN, PUK or
//! management key in the server's or an agent's log, no operation left
//! pending, every device enrolled or changed is active with its secrets
//! escrowed and those secrets open its card (ykman changes the PIN, the PUK
//! and the management key to themselves), and `kleidia audit verify` passes.
//!
//! `make load` runs the full size (200 sessions, 20 enrollments, 50 PIN
//! changes: `full_load`, ignored otherwise); `make test` runs a small
//! slice of the same code (`a_slice_of_the_load`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kleidia_tests::agent::{AgentOptions, TestAgent};
use kleidia_tests::card::VirtualYubiKey;
use kleidia_tests::client::Browser;
use kleidia_tests::player::{play_error, Player};
use kleidia_tests::readers::{PrivatePcscd, MAX_READERS};
use kleidia_tests::{free_port, TestApp};
use reqwest::StatusCode;

const FIRMWARE: &str = "5.7.1";
/// Bearer token for the server's `/metrics` (read after the load).
const METRICS_TOKEN: &str = "load-test-scrape-token";

/// How much load.
struct Plan {
    /// Signed-in browser sessions that browse while the operations run.
    sessions: usize,
    /// Factory keys enrolled at once.
    enrollments: usize,
    /// PIN changes, spread over `pin_cards` enrolled keys (one at a time per key).
    pin_changes: usize,
    pin_cards: usize,
    /// The first vpcd port of this plan's private pcscds (from the 18700–18799 block).
    first_port: u16,
    /// Serials from here up.
    first_serial: u32,
}

/// A key in a reader of a private pcscd, and the player that owns it.
struct Seat {
    serial: u32,
    pcscd: usize,
    reader: String,
    player: Player,
    _key: VirtualYubiKey,
}

/// What the browsing sessions saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    server_errors: AtomicU64,
    failures: AtomicU64,
}

async fn run(plan: Plan) {
    let started = Instant::now();
    let cards = plan.enrollments + plan.pin_cards;
    let dir = tempfile::tempdir().unwrap();

    // Readers: private pcscds of two readers each, an agent for each.
    let mut pcscds = Vec::new();
    let mut left = cards + cards % 2;
    let mut port = plan.first_port;
    while left > 0 {
        let n = left.min(MAX_READERS);
        pcscds.push(PrivatePcscd::start(port, n).unwrap());
        port += n as u16;
        left -= n;
    }

    // The keys, factory-fresh, plugged before Kleidia starts: Kleidia
    // trusts their attestation root (made by the first one).
    let mut keys = Vec::new();
    for i in 0..cards {
        let p = i / MAX_READERS;
        let reader = pcscds[p].readers[i % MAX_READERS].clone();
        let serial = plan.first_serial + i as u32;
        let key = VirtualYubiKey::plug_private(dir.path(), serial, FIRMWARE, &reader).unwrap();
        keys.push((serial, p, reader.name.clone(), key));
    }
    let roots = dir.path().join("attestation-roots.pem");
    std::fs::write(&roots, keys[0].3.attestation_root_pem().unwrap()).unwrap();
    let app = TestApp::builder()
        .license_service()
        .env(
            "KLEIDIA_ATTESTATION_ROOTS_FILE",
            &roots.display().to_string(),
        )
        .env("KLEIDIA_SERVER_METRICS_TOKEN", METRICS_TOKEN)
        .start()
        .await;

    // One agent per pcscd (a workstation with two keys plugged in).
    let mut agents = Vec::new();
    for (i, p) in pcscds.iter().enumerate() {
        let opts = AgentOptions {
            kleidia_url: app.base_url().to_string(),
            ticket_key: None,
            allow_virtual_readers: true,
        };
        let agent = TestAgent::start_with_env(
            opts,
            free_port(),
            dir.path().join(format!("agent-{i}")),
            dir.path().join(format!("agent-{i}.log")),
            &[p.env()],
        )
        .await
        .unwrap();
        agents.push(agent);
    }
    // Every key is seen by its agent (pcscd polls vpcd for the card).
    for (a, agent) in agents.iter().enumerate() {
        let want: Vec<u32> = keys.iter().filter(|k| k.1 == a).map(|k| k.0).collect();
        let want = &want;
        let seen = kleidia_tests::wait_until(Duration::from_secs(30), move || async move {
            let d = agent.discover().await;
            want.iter()
                .all(|s| d.yubikeys.iter().any(|k| k.serial == *s))
        })
        .await;
        if !seen {
            let logs: Vec<String> = keys
                .iter()
                .filter(|k| k.1 == a)
                .map(|k| k.3.log())
                .collect();
            panic!(
                "agent {a} does not see every key:\n{}\n--- pcscd ---\n{}\n--- keys ---\n{}",
                tail(&agent.log_text()),
                pcscds[a].log_text(),
                logs.join("\n")
            );
        }
    }

    eprintln!(
        "load: {cards} keys seen by {} agents ({:?})",
        agents.len(),
        started.elapsed()
    );
    // A person per key (the trial license allows 25 accounts: at most ten
    // owners, each with a session per key), with the agent of its pcscd
    // registered to that session.
    let mut seats = Vec::new();
    let mut owners: Vec<String> = Vec::new();
    for (i, (serial, p, reader, key)) in keys.into_iter().enumerate() {
        let o = i % 10;
        let username = format!("owner{o}");
        if owners.len() <= o {
            let u = app
                .create_user(&username, "user", "Owner", "owner-first-pw-1")
                .await;
            owners.push(u.password);
        }
        let player = Player::login(&app, &username, &owners[o], &agents[p])
            .await
            .unwrap();
        seats.push(Seat {
            serial,
            pcscd: p,
            reader,
            player,
            _key: key,
        });
    }
    let (enrolling, changing) = seats.split_at(plan.enrollments);

    // The keys whose PIN changes are enrolled first.
    let ready = spawn_all(changing.iter().map(|s| enroll(s, 0))).await;
    for (s, r) in changing.iter().zip(&ready) {
        assert!(r.is_ok(), "enroll {} before the load: {r:?}", s.serial);
    }

    // Browsing sessions: a few users, many sessions each, and admins.
    let admin_password = kleidia_tests::ADMIN_PASSWORD;
    let viewers = plan.sessions.div_ceil(20).max(1);
    let mut viewer_passwords = Vec::new();
    for v in 0..viewers {
        let u = app
            .create_user(&format!("viewer{v}"), "user", "Viewer", "viewer-first-pw-1")
            .await;
        viewer_passwords.push(u.password);
    }
    let mut browsers = Vec::new();
    for i in 0..plan.sessions {
        let b = Browser::new(app.base_url());
        let (user, password, admin) = if i % 10 == 0 {
            ("admin".to_string(), admin_password.to_string(), true)
        } else {
            let v = i % viewers;
            (format!("viewer{v}"), viewer_passwords[v].clone(), false)
        };
        let r = b.login(&user, &password).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "sign-in {i} as {user}");
        browsers.push((b, admin));
    }

    eprintln!(
        "load: {} sessions signed in, {} keys enrolled for the PIN changes ({:?})",
        plan.sessions,
        changing.len(),
        started.elapsed()
    );
    let load_started = Instant::now();
    // Everything at once.
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serials: Vec<u32> = seats.iter().map(|s| s.serial).collect();
    let mut browse_tasks = Vec::new();
    for (b, admin) in browsers {
        let seen = seen.clone();
        let stop = stop.clone();
        let serials = serials.clone();
        browse_tasks.push(tokio::spawn(async move {
            browse(b, admin, &serials, &seen, &stop).await
        }));
    }
    let per_card = plan.pin_changes.div_ceil(plan.pin_cards.max(1));
    let mut remaining = plan.pin_changes;
    let mut changes_of = Vec::new();
    for _ in changing {
        let n = per_card.min(remaining);
        remaining -= n;
        changes_of.push(n);
    }
    // How busy the server's PostgreSQL pool gets (printed for the record,
    // not asserted: a pool that runs out answers 5xx, which is).
    let pool_peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (url, stop, peak) = (app.url("/metrics"), stop.clone(), pool_peak.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::SeqCst) {
                if let Ok(r) = http.get(&url).bearer_auth(METRICS_TOKEN).send().await {
                    let text = r.text().await.unwrap_or_default();
                    if let Some(n) = pool_in_use(&text) {
                        peak.fetch_max(n, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let enrollments = spawn_all(enrolling.iter().map(|s| enroll(s, 0)));
    let changes = spawn_all(changing.iter().zip(&changes_of).map(|(s, n)| {
        let (player, serial, n) = (s.player.clone(), s.serial, *n);
        async move {
            let mut results = Vec::new();
            for k in 1..=n {
                let pin = pin_for(serial, k);
                results.push(player.change_pin(serial, Some(&pin)).await.map(|_| ()));
            }
            results
        }
    }));
    let (enrolled, changed) = tokio::join!(enrollments, changes);
    let load_time = load_started.elapsed();
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let mut answered_per_session = Vec::new();
    for t in browse_tasks {
        answered_per_session.push(t.await.unwrap());
    }

    eprintln!(
        "load: {} enrollments and {} PIN changes done in {load_time:?}, {} page loads, \
         at most {} PostgreSQL connections in use ({:?})",
        enrolling.len(),
        plan.pin_changes,
        seen.requests.load(Ordering::SeqCst),
        pool_peak.load(Ordering::SeqCst),
        started.elapsed()
    );
    // No operation failed, nothing answered 5xx.
    let mut failures = Vec::new();
    for (s, r) in enrolling.iter().zip(&enrolled) {
        if let Err(e) = r {
            failures.push(format!("enroll {}: {e:#}", s.serial));
        }
    }
    let changed: Vec<_> = changed.into_iter().flatten().collect();
    assert_eq!(changed.len(), plan.pin_changes);
    for r in &changed {
        if let Err(e) = r {
            failures.push(format!("PIN change: {e:#}"));
        }
    }
    let five = enrolled
        .iter()
        .chain(&changed)
        .filter(|r| {
            r.as_ref()
                .err()
                .and_then(play_error)
                .is_some_and(|p| p.status >= 500)
        })
        .count();
    assert!(failures.is_empty(), "{failures:#?}\n{}", tail(&app.log()));
    assert_eq!(five, 0);
    let idle = answered_per_session.iter().filter(|n| **n == 0).count();
    assert_eq!(idle, 0, "sessions that never got a page");
    assert_eq!(
        seen.server_errors.load(Ordering::SeqCst),
        0,
        "5xx while browsing"
    );
    assert_eq!(seen.failures.load(Ordering::SeqCst), 0, "failed page loads");

    // Nothing stuck pending; every device active and confirmed.
    let pool = app.db.pool().await.unwrap();
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM operations WHERE state = 'pending'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(pending, 0, "operations stuck pending");

    // No secret lost: what OpenBao holds opens every card.
    let mut escrows = Vec::new();
    for (i, s) in seats.iter().enumerate() {
        let dev = app.device(s.serial).await;
        assert_eq!(dev["device"]["state"], "active", "{dev}");
        let (_, version, _) = app.device_row(s.serial).await;
        let escrow = app.escrow(s.serial, version.unwrap() as u64).await;
        let last = if i < plan.enrollments {
            0
        } else {
            changes_of[i - plan.enrollments]
        };
        assert_eq!(
            escrow["pin"].as_str(),
            Some(pin_for(s.serial, last).as_str()),
            "{}: the escrowed PIN is the last one chosen",
            s.serial
        );
        escrows.push(escrow);
    }
    // ykman on every card, a few at a time (each a Python process: on a
    // busy 2-core machine one after the other takes minutes).
    let opened: Vec<(u32, anyhow::Result<()>)> = tokio::task::block_in_place(|| {
        let mut out = Vec::new();
        let work: Vec<_> = seats.iter().zip(&escrows).collect();
        for chunk in work.chunks(6) {
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|(s, escrow)| {
                        let pcscd = &pcscds[s.pcscd];
                        (
                            s.serial,
                            scope.spawn(move || pcscd.escrow_opens(&s.reader, escrow)),
                        )
                    })
                    .collect();
                for (serial, h) in handles {
                    out.push((serial, h.join().expect("ykman thread")));
                }
            });
        }
        out
    });
    // No secret in a log: not the server's (at debug level, through every
    // request of the load), not an agent's. The PINs chosen (every one) and
    // the escrowed PUK and management key, each as a whole token.
    let mut secrets: Vec<(String, String)> = Vec::new();
    for (i, (s, escrow)) in seats.iter().zip(&escrows).enumerate() {
        let last = if i < plan.enrollments {
            0
        } else {
            changes_of[i - plan.enrollments]
        };
        for k in 0..=last {
            secrets.push((format!("{} PIN #{k}", s.serial), pin_for(s.serial, k)));
        }
        for field in ["puk", "management_key"] {
            if let Some(v) = escrow[field].as_str() {
                secrets.push((format!("{} {field}", s.serial), v.to_string()));
            }
        }
    }
    let mut leaked = leaks(&app.log(), &secrets, "server");
    for (a, agent) in agents.iter().enumerate() {
        leaked.extend(leaks(&agent.log_text(), &secrets, &format!("agent {a}")));
    }
    assert!(leaked.is_empty(), "secrets in logs: {leaked:#?}");

    let lost: Vec<String> = opened
        .iter()
        .filter_map(|(serial, r)| r.as_ref().err().map(|e| format!("{serial}: {e:#}")))
        .collect();
    assert!(
        lost.is_empty(),
        "escrowed secrets that do not open the card: {lost:#?}"
    );
    let (ok, out) = app.audit_verify();
    assert!(ok, "audit verify: {out}");

    // The server agrees: no 5xx counted in its metrics (every route, also
    // the reports a player sends and does not wait for), and none logged
    // (the trace layer is outside everything, the session store included).
    let metrics = scrape_metrics(&app).await;
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("kleidia_http_requests_total{") && l.contains("status=\"5"))
        .collect();
    assert!(counted.is_empty(), "5xx in /metrics: {counted:#?}");
    let log = app.log();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("response failed"))
        .take(20)
        .collect();
    assert!(failed.is_empty(), "5xx in the server log: {failed:#?}");
    eprintln!(
        "load: checked ({:?}); slowest routes by mean latency:\n{}",
        started.elapsed(),
        slowest_routes(&metrics, 6)
    );
    drop(agents);
}

/// Which of `secrets` (label, value) occur in `log` as a whole token (not
/// inside a longer word or number, nor as a timestamp's fraction): the
/// labels, never the values.
fn leaks(log: &str, secrets: &[(String, String)], whose: &str) -> Vec<String> {
    let bytes = log.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric();
    secrets
        .iter()
        .filter(|(_, value)| {
            log.match_indices(value.as_str()).any(|(at, _)| {
                let before = at.checked_sub(1).map(|i| bytes[i]);
                let after = bytes.get(at + value.len()).copied();
                !before.is_some_and(|b| word(b) || b == b'.') && !after.is_some_and(word)
            })
        })
        .map(|(label, _)| format!("{label} in the {whose} log"))
        .collect()
}

/// The server's `/metrics` text.
async fn scrape_metrics(app: &TestApp) -> String {
    let r = reqwest::Client::new()
        .get(app.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET /metrics");
    r.text().await.unwrap()
}

/// `kleidia_db_pool_connections{state="in_use"}` in `metrics`.
fn pool_in_use(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kleidia_db_pool_connections{state=\"in_use\"} "))
        .and_then(|v| v.trim().parse().ok())
}

/// The `n` routes with the highest mean latency in `metrics`, one a line
/// (for the record in docs/reliability.md; nothing asserts on speed).
fn slowest_routes(metrics: &str, n: usize) -> String {
    let mut sums = std::collections::HashMap::<String, (f64, f64)>::new();
    for line in metrics.lines() {
        let (what, value) = match line.rsplit_once(' ') {
            Some((w, v)) => (w, v.parse::<f64>().unwrap_or(0.0)),
            None => continue,
        };
        let prefix = "kleidia_http_request_duration_seconds_";
        let Some(rest) = what.strip_prefix(prefix) else {
            continue;
        };
        if let Some(labels) = rest.strip_prefix("sum") {
            sums.entry(labels.to_string()).or_default().0 = value;
        } else if let Some(labels) = rest.strip_prefix("count") {
            sums.entry(labels.to_string()).or_default().1 = value;
        }
    }
    let mut rows: Vec<(f64, f64, String)> = sums
        .into_iter()
        .filter(|(_, (_, c))| *c > 0.0)
        .map(|(l, (s, c))| (s / c, c, l))
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    rows.iter()
        .take(n)
        .map(|(mean, count, labels)| format!("  {mean:.2} s mean over {count} {labels}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `k`th PIN of `serial` (0: the one chosen at enrollment): six
/// digits the PIN policy accepts (no equal neighbours, no run of three),
/// different for every (serial, k).
fn pin_for(serial: u32, k: usize) -> String {
    let mut x = u64::from(serial) * 1_000 + k as u64;
    loop {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let pin = format!("{:06}", (x >> 20) % 1_000_000);
        let b = pin.as_bytes();
        let step = |a: u8, c: u8| i16::from(c) - i16::from(a);
        let repeated = b.windows(2).any(|w| w[0] == w[1]);
        let run = b
            .windows(3)
            .any(|w| step(w[0], w[1]) == step(w[1], w[2]) && step(w[0], w[1]).abs() == 1);
        if !repeated && !run {
            return pin;
        }
    }
}

/// Pages a signed-in person looks at, again and again, until `stop`;
/// how many were answered.
async fn browse(
    b: Browser,
    admin: bool,
    serials: &[u32],
    seen: &Seen,
    stop: &std::sync::atomic::AtomicBool,
) -> u64 {
    let mut answered = 0u64;
    let mut pages: Vec<String> = vec![
        "/".into(),
        "/my/devices".into(),
        "/agent".into(),
        "/approvals".into(),
    ];
    if admin {
        pages.extend(["/devices".into(), "/audit".into(), "/users".into()]);
        pages.extend(serials.iter().take(5).map(|s| format!("/devices/{s}")));
    }
    let mut i = 0usize;
    loop {
        let path = &pages[i % pages.len()];
        i += 1;
        match b.http.get(b.url(path)).send().await {
            Ok(r) => {
                seen.requests.fetch_add(1, Ordering::SeqCst);
                answered += 1;
                if r.status().is_server_error() {
                    seen.server_errors.fetch_add(1, Ordering::SeqCst);
                    eprintln!("GET {path}: {}", r.status());
                } else if r.status() != StatusCode::OK
                    // A key being enrolled has no page until it is registered.
                    && !(r.status() == StatusCode::NOT_FOUND && path.starts_with("/devices/"))
                {
                    seen.failures.fetch_add(1, Ordering::SeqCst);
                    eprintln!("GET {path}: {}", r.status());
                }
                let _ = r.bytes().await;
            }
            Err(e) => {
                seen.failures.fetch_add(1, Ordering::SeqCst);
                eprintln!("GET {path}: {e}");
            }
        }
        if stop.load(Ordering::SeqCst) && i >= pages.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    answered
}

/// Enroll the seat's key with its `k`th PIN.
fn enroll(
    s: &Seat,
    k: usize,
) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
    let (player, serial) = (s.player.clone(), s.serial);
    async move { player.enroll(serial, &pin_for(serial, k)).await.map(|_| ()) }
}

/// Spawn every future at once; their results in order.
async fn spawn_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn tail(s: &str) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(80)..].join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slice_of_the_load() {
    run(Plan {
        sessions: 20,
        enrollments: 3,
        pin_changes: 4,
        pin_cards: 2,
        first_port: 18740,
        first_serial: 48100001,
    })
    .await;
}

/// `make load`: 200 sessions, 20 enrollments and 50 PIN changes at once.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the full load: `make load`"]
async fn full_load() {
    run(Plan {
        sessions: 200,
        enrollments: 20,
        pin_changes: 50,
        pin_cards: 10,
        first_port: 18700,
        first_serial: 48000001,
    })
    .await;
}

/// The log check finds a secret as a token, and not where it is only part
/// of a timestamp, a number or a hex string.
#[test]
fn a_secret_in_a_log_is_found_as_a_token() {
    let secrets = [("PIN".to_string(), "529371".to_string())];
    for hit in [
        "new_pin=529371",
        "{\"new_pin\":\"529371\"}",
        "PIN 529371\n",
        "529371",
    ] {
        assert_eq!(leaks(hit, &secrets, "x"), ["PIN in the x log"], "{hit}");
    }
    for miss in [
        "2026-11-30T13:47:40.529371Z",
        "id=15293712",
        "fingerprint=ab529371cd",
        "latency=5293",
    ] {
        assert!(leaks(miss, &secrets, "x").is_empty(), "{miss}");
    }
}
