//! Harness for Kleidia's end-to-end tests: locate the workspace binaries,
//! give each test a fresh PostgreSQL database, start test-owned OpenBao dev
//! servers and the Kleidia processes on free ports, and stop them again.
//!
//! [`TestApp`] is one installation (`kleidia serve` on its own database,
//! optionally with its own OpenBao and license service); its clients
//! ([`client::Api`] with a Bearer token, [`client::Browser`] with cookies)
//! have one method per endpoint the tests call.
//!
//! The shared services come from `scripts/stack.sh` (run by `make test`), which
//! exports `DATABASE_URL`, `BAO_ADDR` and `BAO_TOKEN`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod agent;
pub mod app;
pub mod bao;
pub mod browser;
pub mod card;
pub mod client;
mod db;
mod endpoints;
pub mod ha;
pub mod jwt;
pub mod license;
pub mod oidc;
// s4-fleet: the SMTP server and webhook receiver of the notice tests.
pub mod mail;
mod person;
pub mod pki;
pub mod player;
mod process;
pub mod raft;
pub mod readers;
mod test_app;
pub mod tls;

pub use bao::{shared_bao, TestBao};
pub use db::{PrivatePostgres, TestDb};
pub use person::{
    authorize_with_card, is_presence_challenge, prove_presence, sign_presence, Cards, Person,
};
pub use process::{
    bin_path, clean_command, free_port, openssl, read_log, stack_var, unix_now, wait_until,
    workspace_root, ChildGuard,
};
pub use test_app::{NewUser, TestApp, TestAppBuilder, ADMIN_PASSWORD};
pub use tls::TestCa;

/// The runtime role's URL for a test database on the stack's PostgreSQL
/// (`DATABASE_RUNTIME_URL` from `scripts/stack.sh`), or `None` when the stack
/// has no role split or the database is elsewhere: the server then runs with
/// the one URL.
pub(crate) fn runtime_url_for(url: &str) -> Option<String> {
    let runtime = std::env::var("DATABASE_RUNTIME_URL").ok()?;
    let name = url.split('?').next()?.rsplit('/').next()?;
    let on_stack = db::replace_db_name(&std::env::var("DATABASE_URL").ok()?, name).ok()?;
    (on_stack == url).then(|| db::replace_db_name(&runtime, name).ok())?
}
