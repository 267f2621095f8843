//! `kleidia-bench-raw`: the raw engines `make bench` compares Kleidia with
//! (scripts/bench.sh, issue 17). Not part of a deployment.
//!
//!   kleidia-bench-raw page BIND DATABASE_URL
//!       a minimal axum + Askama server: `GET /devices` (same filters as
//!       Kleidia's) runs the same device query and renders the same rows
//!       with the same table template, in a bare page; no sign-in, no
//!       session, no middleware. The device-list row's raw figure.
//!   kleidia-bench-raw argon2 SECONDS THREADS
//!       Argon2id hashes/s with Kleidia's parameters (19 MiB, t=2, p=1) on
//!       THREADS threads: the sign-in row's raw figure. Prints one number.
//!   kleidia-bench-raw oaep N
//!       one secret RSA-OAEP encrypted to an RSA-3072 agent key, N times,
//!       with the function the server uses (`rsa` crate): milliseconds per
//!       encryption (a secret release sends each secret this way).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use argon2::password_hash::{PasswordHasher, SaltString};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kleidia::auth::password;
use kleidia::fleet::db::devices::{self, DeviceFilter, DeviceRow};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

#[derive(Template)]
#[template(
    source = "<!doctype html><html><head><title>Devices</title></head><body><main id=\"device-table\">{{ table|safe }}</main></body></html>",
    ext = "html"
)]
struct Page {
    table: String,
}

#[derive(Template)]
#[template(path = "devices_table_partial.html")]
struct Table {
    rows: Vec<DeviceRow>,
    next: Option<String>,
    export: Option<String>,
    /// The bulk-action link is for admins; the bench's page is a reader's.
    bulk: bool,
}

async fn list(State(db): State<PgPool>, Query(f): Query<DeviceFilter>) -> Response {
    let state = match f.state() {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let rows = match devices::search(&db, &f, state, None).await {
        Ok(r) => r,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let next = (rows.len() as i64 == f.limit())
        .then(|| rows.last().map(|d| format!("/devices?after={}", d.serial)))
        .flatten();
    let table = Table {
        rows,
        next,
        export: None,
        bulk: false,
    };
    match table.render().and_then(|table| Page { table }.render()) {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn page(bind: &str, db_url: &str) -> anyhow::Result<()> {
    let db = PgPoolOptions::new()
        .max_connections(20)
        .connect(db_url)
        .await
        .context("connect to PostgreSQL")?;
    let app = Router::new().route("/devices", get(list)).with_state(db);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("listen on {bind}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

fn argon2_rate(seconds: u64, threads: usize) -> anyhow::Result<f64> {
    let params = argon2::Params::new(
        password::M_COST_KIB,
        password::T_COST,
        password::P_COST,
        None,
    )
    .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let done = done.clone();
            let params = params.clone();
            std::thread::spawn(move || {
                let a2 = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
                while Instant::now() < until {
                    if a2.hash_password(b"bench-admin-password-1", &salt).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("an argon2 thread panicked"))?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Milliseconds per RSA-OAEP encryption of a PIN to an RSA-3072 key.
fn oaep_ms(n: u32) -> anyhow::Result<f64> {
    use kleidia_protocol::ticket::EncryptedSecret;
    let mut rng = rand::rngs::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 3072)?.to_public_key();
    let n = n.max(1);
    let start = Instant::now();
    for _ in 0..n {
        EncryptedSecret::encrypt(&key, b"271828", &mut rng)
            .map_err(|e| anyhow::anyhow!("RSA-OAEP: {e:?}"))?;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / f64::from(n))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["page", bind, db_url] => page(bind, db_url).await,
        ["argon2", seconds, threads] => {
            let rate = argon2_rate(seconds.parse()?, threads.parse()?)?;
            println!("{rate:.1}");
            Ok(())
        }
        ["oaep", n] => {
            println!("{:.3}", oaep_ms(n.parse()?)?);
            Ok(())
        }
        _ => bail!(
            "usage: kleidia-bench-raw page BIND DATABASE_URL | argon2 SECONDS THREADS | oaep N"
        ),
    }
}
