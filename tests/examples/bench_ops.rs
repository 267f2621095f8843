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

#[tokio::main]
async fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
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
