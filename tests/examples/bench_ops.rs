//! `make bench`'s load driver for the rows that need a workstation and a
//! card (scripts/bench.sh, issue 17): it plays the agent and the YubiKey in
//! software, with the harness the e2e tests use, against a running server.
//!
//!   bench_ops sign-csr BASE USER PASSWORD DB_URL BAO_ADDR BAO_TOKEN ROOT_PEM C N
//!       per request, untimed: authorise generate_csr (presence step), make a
//!       P-256 key, its CSR and its attestation under ROOT_PEM (the root the
//!       server trusts); timed: `POST /api/yubikey/{serial}/sign-csr`.
//!   bench_ops release BASE USER PASSWORD DB_URL BAO_ADDR BAO_TOKEN ROOT_PEM C N
//!       on enrolled devices (escrow version 1 in OpenBao): timed, the secret
//!       release: `POST …/operations` generate_csr (challenge) and
//!       `POST …/presence` (proof verify, escrow read, OAEP to the agent key,
//!       ticket).
//!
//!   bench_ops agent AGENT_BIN RAW_BIN N VPCD_PORT
//!       the agent rows, on a private pcscd (tests/src/readers.rs; vpcd on
//!       VPCD_PORT and the next) with a software YubiKey: start the agent
//!       binary AGENT_BIN, time exec to the first `/health` answer and to
//!       its key being ready (`/pubkey`), its RSS then, N PIN changes
//!       through the agent (`POST /piv/set-pin` with a ticket and both PINs
//!       RSA-OAEP encrypted to the agent key, as the server sends them;
//!       the ticket and encryption are made before the clock starts), its
//!       RSS after them, then the same N PIN changes with the raw `yubikey`
//!       crate (RAW_BIN, `kleidia-bench-card-raw`, same build profile).
//!       Prints one JSON line: {"start_health_ms", "start_key_ms",
//!       "rss_start_kib", "rss_after_kib", "agent": {…}, "raw": {…}}.
//!
//! C workers, one device each, N requests in all. Prints one JSON line:
//! {"mode", "c", "n", "failed", "mean_ms", "p99_ms", "per_s"} where per_s is
//! the completed requests per second of wall time over the timed calls
//! (C / mean latency). Measures; asserts nothing (a failed call is counted).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kleidia_tests::client::Api;
use kleidia_tests::pki::{attestation_chain, csr_asking_for_foreign_names};
use kleidia_tests::{authorize_with_card, Cards};
use kleidia_virtual_yubikey::attest::AttestationRoot;
use kleidia_virtual_yubikey::keys::{alg, PrivateKey};
use rand::rngs::OsRng;
use reqwest::StatusCode;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

struct Agent {
    api: Api,
    cards: Cards,
    fingerprint: String,
}

fn generate_csr() -> Value {
    json!({"operation": "generate_csr", "slot": "9a", "algorithm": "ecc_p256",
           "pin_policy": "once", "touch_policy": "never"})
}

async fn sign_csr_once(
    agent: &Agent,
    root: &AttestationRoot,
    serial: u32,
    dir: &std::path::Path,
) -> Result<f64> {
    let (s, op) = authorize_with_card(
        &agent.api,
        &agent.cards,
        &agent.fingerprint,
        serial,
        &generate_csr(),
    )
    .await;
    if s != StatusCode::CREATED {
        bail!("authorize: {s} {op}");
    }
    let key = PrivateKey::generate(alg::P256, &mut OsRng)?;
    let csr = csr_asking_for_foreign_names(&key, dir);
    let chain = attestation_chain(root, serial, &key, 2, 1);
    let body = json!({"operation_id": op["operation_id"], "csr_pem": csr,
                      "attestation_chain_pem": chain});
    let t0 = Instant::now();
    let (s, v) = agent.api.sign_csr(serial, &body).await;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    if !s.is_success() {
        bail!("sign-csr: {s} {v}");
    }
    Ok(ms)
}

async fn release_once(agent: &Agent, serial: u32) -> Result<f64> {
    let t0 = Instant::now();
    let (s, v) = authorize_with_card(
        &agent.api,
        &agent.cards,
        &agent.fingerprint,
        serial,
        &generate_csr(),
    )
    .await;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    if s != StatusCode::CREATED || v["request"]["params"]["pin"].is_null() {
        bail!("release: {s} {v}");
    }
    Ok(ms)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn stats(mut times: Vec<f64>, failed: usize) -> Value {
    times.sort_by(f64::total_cmp);
    let mean = if times.is_empty() {
        0.0
    } else {
        times.iter().sum::<f64>() / times.len() as f64
    };
    let p50 = times.get(times.len() / 2).copied().unwrap_or(0.0);
    json!({"n": times.len(), "failed": failed, "mean_ms": mean, "p50_ms": p50})
}

/// The agent rows (see the module documentation).
async fn agent_rows(agent_bin: &str, raw_bin: &str, n: usize, vpcd_port: u16) -> Result<()> {
    use kleidia_protocol::agent::SetPinParams;
    use kleidia_tests::agent::{AgentOptions, TestAgent};
    use kleidia_tests::card::VirtualYubiKey;
    use kleidia_tests::readers::PrivatePcscd;

    const SERIAL: u32 = 32_170_100;
    let (pin_a, pin_b) = ("123456", "271828");
    let dir = tempfile::tempdir()?;
    let pcscd = PrivatePcscd::start(vpcd_port, 2)?;
    let _key = VirtualYubiKey::plug_private(dir.path(), SERIAL, "5.7.1", &pcscd.readers[0])?;
    let t0 = Instant::now();
    let (agent, _, health_after) = TestAgent::start_watching_health(
        Some(std::path::Path::new(agent_bin)),
        AgentOptions::default(),
        kleidia_tests::free_port(),
        dir.path().join("state"),
        dir.path().join("agent.log"),
        &[pcscd.env()],
    )
    .await?;
    let key_after = t0.elapsed();
    // The card is seen (pcscd polls vpcd for it) before anything is timed.
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while !agent
        .get("/discover")
        .await?
        .json::<Value>()
        .await?
        .to_string()
        .contains(&SERIAL.to_string())
    {
        if Instant::now() > deadline {
            bail!(
                "the agent does not see the software YubiKey:\n{}",
                agent.log_text()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let rss_start = rss_kib(agent.proc.pid());

    let (mut times, mut failed, mut last_error) = (Vec::new(), 0usize, String::new());
    for i in 0..n {
        let (from, to) = if i.is_multiple_of(2) {
            (pin_a, pin_b)
        } else {
            (pin_b, pin_a)
        };
        let p = SetPinParams {
            serial: SERIAL,
            current_pin: agent.encrypt(from.as_bytes()),
            new_pin: agent.encrypt(to.as_bytes()),
            settle: false,
        };
        let body = agent.signed(&p);
        let t = Instant::now();
        let r = agent.post("/piv/set-pin", &body).await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if r.status().is_success() {
            times.push(ms);
        } else {
            failed += 1;
            last_error = format!("{} {}", r.status(), r.text().await.unwrap_or_default());
            // Keep the PIN where the next call expects it.
            break;
        }
    }
    let rss_after = rss_kib(agent.proc.pid());
    let mut agent_stats = stats(times, failed);
    agent_stats["last_error"] = json!(last_error);
    drop(agent);

    // The same changes with the raw crate, from the PIN the agent left.
    let start_pin = if n.is_multiple_of(2) { pin_a } else { pin_b };
    let other = if start_pin == pin_a { pin_b } else { pin_a };
    let (k, v) = pcscd.env();
    let out = std::process::Command::new(raw_bin)
        .env(k, v)
        .args([
            "set-pin",
            &SERIAL.to_string(),
            &n.to_string(),
            start_pin,
            other,
        ])
        .output()
        .context("run the raw yubikey-crate driver")?;
    let raw: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        json!({"error": String::from_utf8_lossy(&out.stderr).chars().take(300).collect::<String>()})
    });
    println!(
        "{}",
        json!({"mode": "agent", "start_health_ms": health_after.as_secs_f64() * 1000.0,
               "start_key_ms": key_after.as_secs_f64() * 1000.0,
               "rss_start_kib": rss_start, "rss_after_kib": rss_after,
               "agent": agent_stats, "raw": raw})
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, agent_bin, raw_bin, n, port] = a.as_slice() {
        if mode == "agent" {
            return agent_rows(agent_bin, raw_bin, n.parse()?, port.parse()?).await;
        }
    }
    let [mode, base, user, password, db_url, bao_addr, bao_token, root_pem, c, n] = a.as_slice()
    else {
        bail!("usage: bench_ops sign-csr|release BASE USER PASSWORD DB_URL BAO_ADDR BAO_TOKEN ROOT_PEM C N");
    };
    let c: usize = c.parse()?;
    let n: usize = n.parse()?;
    let root = Arc::new(AttestationRoot::load(std::path::Path::new(root_pem))?);

    let mut api = Api::new(base);
    let me = api.login(user, password).await?;
    let user_id = me["user"]["id"].as_str().context("user id")?.to_string();
    let agent_key = RsaPrivateKey::new(&mut OsRng, 3072)?;
    let pem = agent_key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)?;
    let sid = api.session_id.clone().context("session id")?;
    let (s, reg) = api.register_agent(&sid, &pem).await;
    if s != StatusCode::OK {
        bail!("register agent: {s} {reg}");
    }
    let fingerprint = kleidia_protocol::ticket::agent_key_fingerprint(&agent_key.to_public_key())?;
    let agent = Arc::new(Agent {
        api,
        cards: Cards::new(db_url),
        fingerprint,
    });

    // One device per worker, owned by the signed-in user, put in the table
    // directly (the bench fleet is far beyond a TRIAL license, which would
    // refuse registering another); enrolled, with an escrowed version 1, for
    // the release mode.
    let first: u32 = if mode == "release" {
        9_300_000
    } else {
        9_200_000
    };
    let http = reqwest::Client::new();
    let db = sqlx::PgPool::connect(db_url).await?;
    let mut serials = Vec::new();
    for w in 0..c {
        let serial = first + w as u32 + 1000 * (c as u32);
        let release = mode == "release";
        sqlx::query(
            "INSERT INTO devices (serial, firmware, state, owner_id, secrets_version, enrolled_at) \
             VALUES ($1, '5.7.1', CASE WHEN $3 THEN 'active' ELSE 'registered' END, $2, \
                     CASE WHEN $3 THEN 1 END, CASE WHEN $3 THEN now() END)",
        )
        .bind(i64::from(serial))
        .bind(uuid::Uuid::parse_str(&user_id)?)
        .bind(release)
        .execute(&db)
        .await
        .with_context(|| format!("insert device {serial}"))?;
        if release {
            // An enrolled card has its presence key on record.
            agent.cards.record(serial).await;
            let r = http
                .post(format!("{bao_addr}/v1/yubikeys/data/{serial}/secrets"))
                .header("X-Vault-Token", bao_token)
                .json(&json!({"data": {"pin": "271828", "puk": "31415926",
                    "management_key": "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718",
                    "management_key_algorithm": "aes192"}}))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("escrow {serial}: {}", r.status());
            }
        }
        serials.push(serial);
    }
    db.close().await;

    let per_worker = n.div_ceil(c);
    let mut tasks = Vec::new();
    for serial in serials {
        let agent = agent.clone();
        let root = root.clone();
        let mode = mode.clone();
        tasks.push(tokio::spawn(async move {
            let dir = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => return (Vec::new(), per_worker, format!("temp dir: {e}")),
            };
            let mut times = Vec::new();
            let mut failed = 0usize;
            let mut last_error = String::new();
            for _ in 0..per_worker {
                let r = if mode == "release" {
                    release_once(&agent, serial).await
                } else {
                    sign_csr_once(&agent, &root, serial, dir.path()).await
                };
                match r {
                    Ok(ms) => times.push(ms),
                    Err(e) => {
                        failed += 1;
                        last_error = format!("{e:#}");
                    }
                }
            }
            (times, failed, last_error)
        }));
    }
    let mut times = Vec::new();
    let mut failed = 0;
    let mut last_error = String::new();
    for t in tasks {
        let (t, f, e) = t.await?;
        times.extend(t);
        failed += f;
        if !e.is_empty() {
            last_error = e;
        }
    }
    times.sort_by(f64::total_cmp);
    let mean = if times.is_empty() {
        0.0
    } else {
        times.iter().sum::<f64>() / times.len() as f64
    };
    let p99 = times
        .get(((times.len() as f64 * 0.99) as usize).min(times.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    let per_s = if mean > 0.0 {
        c as f64 * 1000.0 / mean
    } else {
        0.0
    };
    println!(
        "{}",
        json!({"mode": mode, "c": c, "n": times.len(), "failed": failed, "mean_ms": mean,
               "p99_ms": p99, "per_s": per_s, "last_error": last_error})
    );
    Ok(())
}
