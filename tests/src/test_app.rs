//! [`TestApp`]: one Kleidia installation for a test, like zero2prod's
//! `spawn_app()`: `kleidia serve` on a fresh database with a first admin,
//! talking to the shared OpenBao or to one of its own, optionally with the
//! license service and a software attestation root. Its clients have one
//! method per endpoint (`endpoints.rs`).

use std::path::Path;
use std::process::Output;
use std::time::SystemTime;

use anyhow::{Context, Result};
use kleidia_protocol::ticket::{TicketKeyResponse, TicketVerifyingKey};
use kleidia_virtual_yubikey::attest::AttestationRoot;
use kleidia_virtual_yubikey::keys::PrivateKey;
use rand::rngs::OsRng;
use reqwest::StatusCode;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

use crate::app::{cli_create_user, kleidia_cli, AppOptions, KleidiaApp};
use crate::bao::{
    bootstrap_bao, bootstrapped_bao_for, run_bootstrap_env, shared_bao, shared_bao_ca, BaoClient,
    TestBao,
};
use crate::client::{Api, Browser};
use crate::license::{LicenseOptions, LicenseService, LicenseSpec};
use crate::pki::attestation_chain;
use crate::{free_port, runtime_url_for, unix_now, Person, TestDb};

/// The password of the `admin` every [`TestApp`] starts with.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpenBao {
    /// The test stack's server, with its token.
    Shared,
    /// A server of the test's own, laid out by `kleidia bootstrap`; the app
    /// gets a token with the `kleidia-app` policy only.
    Bootstrapped,
    /// A server of the test's own as it starts; the app gets the root token.
    Bare,
    /// A server of the test's own with raft storage (restartable, sealable:
    /// [`TestApp::openbao`]), laid out by `kleidia bootstrap`.
    Persistent,
}

/// Which database role `kleidia serve` runs as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DbRoles {
    /// The runtime role, migrating as the owner, when the stack has both
    /// (`DATABASE_RUNTIME_URL` from scripts/stack.sh); otherwise the owner.
    Auto,
    /// The runtime role, which the stack must have; the first admin is
    /// created through it too.
    Runtime,
    /// The owner's URL alone, as a development setup runs.
    Single,
}

/// What a [`TestApp`] runs with; `TestApp::builder()…start()`.
pub struct TestAppBuilder {
    openbao: OpenBao,
    db_roles: DbRoles,
    license_service: bool,
    attestation_root: bool,
    admin: bool,
    env: Vec<(String, String)>,
    https_ca: Option<Vec<u8>>,
    /// Log the app in with AppRole: (token TTL, max TTL) in seconds.
    approle: Option<(u64, u64)>,
    /// The test's own OpenBao serves TLS with a CA generated at start.
    openbao_tls: bool,
    /// The app reads a periodic token with this period (seconds) from
    /// `openbao.token_file`.
    token_file_period: Option<u64>,
    /// A PostgreSQL server of the test's own on this port.
    own_postgres: Option<u16>,
}

impl TestAppBuilder {
    /// An OpenBao of its own with raft storage, initialised and unsealed,
    /// bootstrapped: it can be restarted, sealed and unsealed
    /// ([`TestApp::openbao`]).
    pub fn persistent_openbao(mut self) -> Self {
        self.openbao = OpenBao::Persistent;
        self
    }

    /// The installation's database on a PostgreSQL server of the test's
    /// own, on loopback `port`, that the test can stop and start
    /// ([`TestApp::postgres`]); the stack's roles as on the shared one.
    pub fn own_postgres(mut self, port: u16) -> Self {
        self.own_postgres = Some(port);
        self
    }

    /// The app gets a renewable periodic token (`kleidia-app` and `default`
    /// policies, period `period` seconds) in a token file,
    /// `{dir}/openbao-token` (`KLEIDIA_OPENBAO_TOKEN_FILE`), as a
    /// development setup gives it. Needs an OpenBao of the test's own.
    pub fn periodic_token_file(mut self, period: u64) -> Self {
        if self.openbao == OpenBao::Shared {
            self.openbao = OpenBao::Bootstrapped;
        }
        self.token_file_period = Some(period);
        self
    }

    /// [`Self::persistent_openbao`] on `https://`: its certificate comes
    /// from a CA generated at start ([`TestBao::spawn_tls`]), and bootstrap,
    /// the app and the license service trust that CA through
    /// `openbao.ca_file` (`KLEIDIA_OPENBAO_CA_FILE`,
    /// `KLEIDIA_LICENSE_OPENBAO_CA_FILE`) and nothing else.
    pub fn tls_openbao(mut self) -> Self {
        self.openbao = OpenBao::Persistent;
        self.openbao_tls = true;
        self
    }

    /// The app logs in with AppRole (the files `kleidia bootstrap
    /// --approle-out` writes) instead of a token; its tokens live `ttl`
    /// seconds, renewed up to `max_ttl`. Needs an OpenBao of the test's own
    /// (implies [`Self::own_openbao`] unless a persistent one is asked for).
    pub fn approle(mut self, ttl: u64, max_ttl: u64) -> Self {
        if self.openbao != OpenBao::Persistent {
            self.openbao = OpenBao::Bootstrapped;
        }
        self.approle = Some((ttl, max_ttl));
        self
    }

    /// An OpenBao of its own, bootstrapped for this app's public URL (for
    /// tests that stop it, read the escrow, or sign certificates: the CA's
    /// OCSP and CRL URLs name this app).
    pub fn own_openbao(mut self) -> Self {
        self.openbao = OpenBao::Bootstrapped;
        self
    }

    /// An OpenBao of its own that nobody bootstrapped; the app uses its root token.
    pub fn bare_openbao(mut self) -> Self {
        self.openbao = OpenBao::Bare;
        self
    }

    /// The real license service (with a token that carries only the
    /// `kleidia-license` policy and an API token shared with the app), and
    /// no license status cache in the app. Implies [`Self::own_openbao`]
    /// unless a persistent or TLS one is asked for.
    pub fn license_service(mut self) -> Self {
        if self.openbao != OpenBao::Persistent {
            self.openbao = OpenBao::Bootstrapped;
        }
        self.license_service = true;
        self
    }

    /// A software attestation root the app trusts ([`TestApp::attestation`]).
    pub fn attestation_root(mut self) -> Self {
        self.attestation_root = true;
        self
    }

    /// Run as the database's runtime role (which must exist: the stack's
    /// `DATABASE_RUNTIME_URL`), migrating as the owner; the first admin is
    /// created through the runtime role as an operator would
    /// ([`TestApp::runtime_url`]).
    pub fn runtime_role(mut self) -> Self {
        self.db_roles = DbRoles::Runtime;
        self
    }

    /// Run with the owner's database URL alone, even when the stack has a
    /// runtime role.
    pub fn single_database_url(mut self) -> Self {
        self.db_roles = DbRoles::Single;
        self
    }

    /// Serve HTTPS with this certificate and key (PEM files, reloaded on
    /// SIGHUP: [`TestApp::sighup`]), issued by the CA `ca_pem` for
    /// 127.0.0.1; the public URL is https. Its clients are the test's own
    /// (`api()`/`browser()` do not trust the CA).
    pub fn https(mut self, cert_file: &Path, key_file: &Path, ca_pem: &[u8]) -> Self {
        self.env.extend([
            (
                "KLEIDIA_SERVER_TLS_CERT_FILE".into(),
                cert_file.display().to_string(),
            ),
            (
                "KLEIDIA_SERVER_TLS_KEY_FILE".into(),
                key_file.display().to_string(),
            ),
        ]);
        self.https_ca = Some(ca_pem.to_vec());
        self
    }

    /// No first admin.
    pub fn without_admin(mut self) -> Self {
        self.admin = false;
        self
    }

    /// An extra `KLEIDIA_*` variable for `kleidia serve`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub async fn start(self) -> TestApp {
        self.try_start()
            .await
            .unwrap_or_else(|e| panic!("start the test installation: {e:#}"))
    }

    pub async fn try_start(self) -> Result<TestApp> {
        let dir = tempfile::tempdir()?;
        // The port first: `kleidia bootstrap` writes the app's public URL
        // into the CA's OCSP and CRL URLs.
        let port = free_port();
        let scheme = if self.https_ca.is_some() {
            "https"
        } else {
            "http"
        };
        let public_url = format!("{scheme}://127.0.0.1:{port}");
        let approle_dir = dir.path().join("approle");
        let approle_args: Vec<String> = match self.approle {
            Some((ttl, max)) => vec![
                "--approle-out".into(),
                approle_dir.display().to_string(),
                "--token-ttl".into(),
                ttl.to_string(),
                "--token-max-ttl".into(),
                max.to_string(),
            ],
            None => Vec::new(),
        };
        let approle_args: Vec<&str> = approle_args.iter().map(String::as_str).collect();
        let (bao, root_bao, app_bao_token) = match self.openbao {
            OpenBao::Shared => {
                let (addr, token) = shared_bao();
                let ca = shared_bao_ca()
                    .map(std::fs::read)
                    .transpose()
                    .context("read BAO_CACERT")?;
                (
                    None,
                    BaoClient::with_ca(&addr, &token, ca.as_deref()),
                    token,
                )
            }
            OpenBao::Bootstrapped if self.approle.is_some() => {
                let (bao, root) =
                    bootstrap_bao(TestBao::spawn().await?, &public_url, &approle_args).await?;
                (Some(bao), root, String::new())
            }
            OpenBao::Bootstrapped => {
                let (bao, root) = bootstrapped_bao_for(&public_url).await?;
                let token = root.token_with_policies(&["kleidia-app"]).await?;
                (Some(bao), root, token)
            }
            OpenBao::Persistent => {
                let bao = if self.openbao_tls {
                    TestBao::spawn_tls().await?
                } else {
                    TestBao::spawn_persistent().await?
                };
                let (bao, root) = bootstrap_bao(bao, &public_url, &approle_args).await?;
                let token = if self.approle.is_some() {
                    String::new()
                } else {
                    root.token_with_policies(&["kleidia-app"]).await?
                };
                (Some(bao), root, token)
            }
            OpenBao::Bare => {
                let bao = TestBao::spawn().await?;
                let root = BaoClient::new(&bao.addr, &bao.token);
                let token = bao.token.clone();
                (Some(bao), root, token)
            }
        };
        let mut env: Vec<(String, String)> = Vec::new();
        // The CA of an https:// OpenBao: the test's own, or the stack's
        // (`BAO_CACERT` from scripts/stack.sh with BAO_TLS=1).
        let bao_ca_file = match &bao {
            Some(b) => b.ca_file(),
            None => shared_bao_ca(),
        };
        if let Some(ca) = &bao_ca_file {
            env.push(("KLEIDIA_OPENBAO_CA_FILE".into(), ca.display().to_string()));
        }
        if let Some(period) = self.token_file_period {
            let token = root_bao.periodic_token(&["kleidia-app"], period).await?;
            let file = dir.path().join("openbao-token");
            std::fs::write(&file, format!("{token}\n"))?;
            env.push((
                "KLEIDIA_OPENBAO_TOKEN_FILE".into(),
                file.display().to_string(),
            ));
        }
        let mut license = None;
        let mut license_options = None;
        if self.license_service {
            let bao_token = root_bao.token_with_policies(&["kleidia-license"]).await?;
            let api_token = format!("license-api-{}", uuid::Uuid::new_v4().simple());
            let mut opts = LicenseOptions::new(&root_bao.addr, &bao_token).api_token(&api_token);
            if let Some(ca) = &bao_ca_file {
                opts = opts.env("KLEIDIA_LICENSE_OPENBAO_CA_FILE", &ca.display().to_string());
            }
            let svc = LicenseService::start(&opts)?.ready().await?;
            env.extend([
                ("KLEIDIA_LICENSE_URL".into(), svc.base.clone()),
                ("KLEIDIA_LICENSE_API_TOKEN".into(), api_token),
                ("KLEIDIA_LICENSE_CACHE_SECS".into(), "0".into()),
                ("KLEIDIA_LICENSE_TIMEOUT_SECS".into(), "2".into()),
            ]);
            license = Some(svc);
            license_options = Some(opts);
        }
        let mut attestation_root = None;
        if self.attestation_root {
            let root = AttestationRoot::generate(SystemTime::now(), &mut OsRng)?;
            let roots = dir.path().join("attestation-roots.pem");
            std::fs::write(&roots, root.cert_pem()?)?;
            env.push((
                "KLEIDIA_ATTESTATION_ROOTS_FILE".into(),
                roots.display().to_string(),
            ));
            attestation_root = Some(root);
        }
        if self.approle.is_some() {
            let app = approle_dir.join("kleidia-app");
            env.extend([
                ("KLEIDIA_OPENBAO_AUTH".into(), "approle".into()),
                (
                    "KLEIDIA_OPENBAO_ROLE_ID_FILE".into(),
                    app.join("role_id").display().to_string(),
                ),
                (
                    "KLEIDIA_OPENBAO_SECRET_ID_FILE".into(),
                    app.join("secret_id").display().to_string(),
                ),
            ]);
        }
        env.extend(self.env);
        let postgres = match self.own_postgres {
            Some(port) => Some(crate::PrivatePostgres::start_new(port)?),
            None => None,
        };
        let (db, runtime_url) = match &postgres {
            Some(pg) => {
                let db = TestDb::new_on(&pg.owner_url("postgres")).await?;
                let runtime = match self.db_roles {
                    DbRoles::Single => None,
                    _ => Some(pg.runtime_url(&db.name)),
                };
                (db, runtime)
            }
            None => {
                let db = TestDb::new().await?;
                let runtime = match self.db_roles {
                    DbRoles::Auto => runtime_url_for(&db.url),
                    DbRoles::Runtime => Some(runtime_url_for(&db.url).context(
                        "DATABASE_RUNTIME_URL is not set: .runtime_role() needs the runtime role from scripts/stack.sh",
                    )?),
                    DbRoles::Single => None,
                };
                (db, runtime)
            }
        };
        let mut options = app_options(
            port,
            &db,
            runtime_url.as_deref(),
            &root_bao,
            &app_bao_token,
            env.clone(),
        );
        options.https_ca = self.https_ca.clone();
        let server = KleidiaApp::spawn(options).await?;
        if self.admin {
            let url = match self.db_roles {
                DbRoles::Runtime => runtime_url.as_deref().unwrap_or(&db.url),
                _ => &db.url,
            };
            cli_create_user(url, "admin", "admin", ADMIN_PASSWORD)?;
        }
        let cards = crate::person::Cards::new(&db.url);
        Ok(TestApp {
            server,
            https_ca: self.https_ca,
            runtime_url,
            license,
            license_options,
            bao,
            root_bao,
            app_bao_token,
            db,
            attestation_root,
            env,
            dir,
            cards,
            postgres,
        })
    }
}

/// `kleidia serve` on `port` with the runtime role's URL when there is one
/// (the owner's then only migrates), otherwise the owner's.
fn app_options(
    port: u16,
    db: &TestDb,
    runtime_url: Option<&str>,
    bao: &BaoClient,
    bao_token: &str,
    env: Vec<(String, String)>,
) -> AppOptions {
    AppOptions {
        port,
        database_url: runtime_url.unwrap_or(&db.url).to_string(),
        owner_url: runtime_url.map(|_| db.url.clone()),
        bao_addr: bao.addr.clone(),
        bao_token: bao_token.to_string(),
        env,
        https_ca: None,
    }
}

/// A user created by [`TestApp::create_user`], past the forced first
/// password change.
pub struct NewUser {
    pub id: String,
    /// As `POST /api/users` returned it.
    pub user: Value,
    /// What the user now signs in with.
    pub password: String,
}

/// One installation. Fields drop in order: the app before the services it uses.
pub struct TestApp {
    pub server: KleidiaApp,
    https_ca: Option<Vec<u8>>,
    runtime_url: Option<String>,
    license: Option<LicenseService>,
    license_options: Option<LicenseOptions>,
    bao: Option<TestBao>,
    root_bao: BaoClient,
    app_bao_token: String,
    pub db: TestDb,
    attestation_root: Option<AttestationRoot>,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    /// The cards the test plays (their presence keys).
    pub cards: crate::person::Cards,
    /// The PostgreSQL server of the test's own, if any (dropped last).
    postgres: Option<crate::PrivatePostgres>,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            openbao: OpenBao::Shared,
            db_roles: DbRoles::Auto,
            license_service: false,
            attestation_root: false,
            admin: true,
            env: Vec::new(),
            https_ca: None,
            approle: None,
            openbao_tls: false,
            token_file_period: None,
            own_postgres: None,
        }
    }

    /// The PostgreSQL server of the test's own
    /// ([`TestAppBuilder::own_postgres`]).
    pub fn postgres(&self) -> &crate::PrivatePostgres {
        self.postgres
            .as_ref()
            .expect("a PostgreSQL of the test's own (own_postgres)")
    }

    /// The plain installation: shared OpenBao, a first admin.
    pub async fn spawn() -> TestApp {
        Self::builder().start().await
    }

    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// SIGHUP to `kleidia serve` (reloads the TLS certificate and key).
    pub fn sighup(&self) {
        self.server.proc.signal(nix::sys::signal::Signal::SIGHUP);
    }

    /// What `kleidia serve` logged so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// A folder that lives as long as the installation.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An API client that is not signed in.
    pub fn api(&self) -> Api {
        Api::new(self.base_url())
    }

    /// A browser that is not signed in.
    pub fn browser(&self) -> Browser {
        Browser::new(self.base_url())
    }

    /// An admin API client, signed in.
    pub async fn admin_api(&self) -> Api {
        let mut a = self.api();
        a.login("admin", ADMIN_PASSWORD)
            .await
            .expect("admin API login");
        a
    }

    /// A browser with the admin signed in.
    pub async fn admin_browser(&self) -> Browser {
        let b = self.browser();
        let r = b.login("admin", ADMIN_PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "admin sign-in");
        b
    }

    /// A user created through the API by the admin with `password`, who
    /// then changed it (passwords an admin chose must be changed at first
    /// sign-in) to `{password}-2`.
    pub async fn create_user(
        &self,
        username: &str,
        role: &str,
        display_name: &str,
        password: &str,
    ) -> NewUser {
        let admin = self.admin_api().await;
        let (s, v) = admin
            .create_user(&json!({"username": username, "role": role, "display_name": display_name,
                                 "email": format!("{username}@corp.example"), "password": password}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "create user {username}: {v}");
        let b = self.browser();
        let r = b.login(username, password).await;
        assert_eq!(
            r.headers()["location"],
            "/account/password",
            "first sign-in of {username}"
        );
        let new = format!("{password}-2");
        let r = b.change_password(password, &new).await;
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "password change of {username}"
        );
        NewUser {
            id: v["user"]["id"].as_str().unwrap().to_string(),
            user: v["user"].clone(),
            password: new,
        }
    }

    /// A signed-in API user with an agent key (RSA 3072, played by the test)
    /// registered on their session.
    pub async fn person(&self, username: &str, role: &str, display_name: &str) -> Person {
        let admin = self.admin_api().await;
        let password = format!("{username}-long-password-1");
        let (s, v) = admin
            .create_user(&json!({"username": username, "role": role, "display_name": display_name,
                                 "email": format!("{username}@corp.example"), "password": password}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let user_id = v["user"]["id"].as_str().unwrap().to_string();
        let mut api = self.api();
        api.login(username, &password).await.unwrap();
        // The admin's password is a one-time password: until it is changed
        // the API answers nothing else.
        let (s, v) = api
            .change_password(&password, &format!("{password}-2"))
            .await;
        assert_eq!(
            s,
            StatusCode::NO_CONTENT,
            "password change of {username}: {v}"
        );
        let agent_key = RsaPrivateKey::new(&mut OsRng, 3072).unwrap();
        let person = Person {
            api,
            agent_key,
            user_id,
            cards: self.cards.clone(),
            registrar: admin,
        };
        let sid = person.session_id();
        let (s, v) = person
            .api
            .register_agent(&sid, &person.agent_key_pem())
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        person
    }

    /// Another `kleidia serve` on the same database and OpenBao, with the
    /// same settings plus `extra`.
    pub async fn spawn_another(&self, extra: &[(&str, &str)]) -> KleidiaApp {
        self.try_spawn_another(extra, &[])
            .await
            .expect("another kleidia serve")
    }

    /// [`Self::spawn_another`] without the variables named in `without`
    /// (e.g. `KLEIDIA_OPENBAO_CA_FILE`); an error with the log when it does
    /// not come up.
    pub async fn try_spawn_another(
        &self,
        extra: &[(&str, &str)],
        without: &[&str],
    ) -> Result<KleidiaApp> {
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|(k, _)| !without.contains(&k.as_str()))
            .cloned()
            .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut options = app_options(
            free_port(),
            &self.db,
            self.runtime_url.as_deref(),
            &self.root_bao,
            &self.app_bao_token,
            env,
        );
        options.https_ca = self.https_ca.clone();
        KleidiaApp::spawn(options).await
    }

    /// Stop `kleidia serve` (SIGTERM) and start it again on the same port,
    /// database, OpenBao and settings, as a restart or redeploy would.
    pub async fn restart_server(&mut self) -> Result<()> {
        self.server.proc.stop();
        self.start_server_again().await
    }

    /// Start `kleidia serve` again on the same port and settings after its
    /// process was stopped or killed.
    pub async fn start_server_again(&mut self) -> Result<()> {
        let mut options = app_options(
            self.server.port,
            &self.db,
            self.runtime_url.as_deref(),
            &self.root_bao,
            &self.app_bao_token,
            self.env.clone(),
        );
        options.https_ca = self.https_ca.clone();
        self.server = KleidiaApp::spawn(options).await?;
        Ok(())
    }

    /// The runtime role's database URL the server runs with (started with
    /// [`TestAppBuilder::runtime_role`], or on a stack with the role split).
    pub fn runtime_url(&self) -> &str {
        self.runtime_url
            .as_deref()
            .expect("the server runs with the owner's URL")
    }

    /// `kleidia ARGS…` on this installation's database.
    pub fn cli(&self, args: &[&str]) -> Output {
        kleidia_cli(&self.db.url, args)
    }

    /// `kleidia audit verify`: whether it passed, and what it printed.
    pub fn audit_verify(&self) -> (bool, String) {
        let out = self.cli(&["audit", "verify"]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `GET path` without signing in; the body as bytes (asserts success).
    pub async fn fetch(&self, path: &str) -> Vec<u8> {
        let r = reqwest::get(self.url(path)).await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.bytes().await.unwrap().to_vec()
    }

    /// The key the app's tickets verify with, as an agent fetches it.
    pub async fn ticket_verifying_key(&self) -> TicketVerifyingKey {
        let (s, v) = self.api().ticket_key().await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let r: TicketKeyResponse = serde_json::from_value(v).unwrap();
        TicketVerifyingKey::from_response(&r).unwrap()
    }

    /// `GET /api/devices/{serial}` as the admin (asserts 200).
    pub async fn device(&self, serial: u32) -> Value {
        let (s, v) = self.admin_api().await.device(serial).await;
        assert_eq!(s, StatusCode::OK, "GET /api/devices/{serial}: {v}");
        v
    }

    /// `details` of every audit row with `action`, oldest first.
    pub async fn audit_details(&self, action: &str) -> Vec<Value> {
        let pool = self.db.pool().await.unwrap();
        sqlx::query_scalar("SELECT details FROM audit_log WHERE action = $1 ORDER BY id")
            .bind(action)
            .fetch_all(&pool)
            .await
            .unwrap()
    }

    /// The device's row: (state, confirmed secrets version, owner id).
    pub async fn device_row(&self, serial: u32) -> (String, Option<i64>, Option<String>) {
        let pool = self.db.pool().await.unwrap();
        sqlx::query_as(
            "SELECT state, secrets_version, owner_id::text FROM devices WHERE serial = $1",
        )
        .bind(i64::from(serial))
        .fetch_one(&pool)
        .await
        .unwrap()
    }
}

/// OpenBao as the installation's own auditor sees it.
impl TestApp {
    /// A client with the root token (the stack's token when shared).
    pub fn root_bao(&self) -> &BaoClient {
        &self.root_bao
    }

    /// The token `kleidia serve` was given.
    pub fn app_bao_token(&self) -> &str {
        &self.app_bao_token
    }

    /// `kleidia bootstrap` again on this installation's own OpenBao, with
    /// its root token and the app's public URL: (exit success, stdout, stderr).
    pub fn bootstrap(&self) -> (bool, String, String) {
        assert!(
            self.bao.is_some(),
            "bootstrap needs an OpenBao of the test's own"
        );
        let ca_file = self
            .bao
            .as_ref()
            .and_then(TestBao::ca_file)
            .map(|p| p.display().to_string());
        let env: Vec<(&str, &str)> = ca_file
            .iter()
            .map(|f| ("KLEIDIA_OPENBAO_CA_FILE", f.as_str()))
            .collect();
        run_bootstrap_env(
            &self.root_bao.addr,
            &self.root_bao.token,
            self.base_url(),
            &[],
            &env,
        )
        .expect("run kleidia bootstrap")
    }

    /// Serial numbers of the certificates OpenBao's issuing CA has signed.
    pub async fn issued_in_openbao(&self) -> Vec<String> {
        let (s, v) = self
            .root_bao
            .call("LIST", "pki_int/certs", None)
            .await
            .unwrap();
        if s == StatusCode::NOT_FOUND {
            return Vec::new();
        }
        v["data"]["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("LIST pki_int/certs: {s} {v}"))
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    }

    /// This installation's own OpenBao (restart, seal, unseal).
    pub fn openbao(&mut self) -> &mut TestBao {
        self.bao
            .as_mut()
            .expect("an OpenBao of the test's own (own_openbao, persistent_openbao)")
    }

    /// Stop this installation's own OpenBao, as an outage would.
    pub fn stop_openbao(&mut self) {
        self.bao
            .as_mut()
            .expect("stop_openbao needs an OpenBao of the test's own")
            .proc
            .stop();
    }

    /// Version `version` of the escrowed secrets of `serial`.
    pub async fn escrow(&self, serial: u32, version: u64) -> Value {
        self.root_bao
            .get(&format!("yubikeys/data/{serial}/secrets?version={version}"))
            .await
            .unwrap()["data"]["data"]
            .clone()
    }

    /// The newest escrowed secrets of `serial`.
    pub async fn current_escrow(&self, serial: u32) -> Value {
        self.root_bao
            .get(&format!("yubikeys/data/{serial}/secrets"))
            .await
            .unwrap()["data"]["data"]
            .clone()
    }

    /// The newest escrow version of `serial` (0: nothing escrowed).
    pub async fn escrow_version(&self, serial: u32) -> u64 {
        self.root_bao
            .kv_version("yubikeys", &format!("{serial}/secrets"))
            .await
    }

    /// The software attestation root this installation trusts (for
    /// software YubiKeys made under it).
    pub fn attestation_root(&self) -> &AttestationRoot {
        self.attestation_root
            .as_ref()
            .expect("started without .attestation_root()")
    }

    /// A chain [slot attestation, device f9] for `key`, as a YubiKey with
    /// `serial` makes it under the root this installation trusts.
    pub fn attestation(&self, serial: u32, key: &PrivateKey, pin: u8, touch: u8) -> Vec<String> {
        attestation_chain(self.attestation_root(), serial, key, pin, touch)
    }
}

/// The license service of an installation started with `.license_service()`.
impl TestApp {
    fn license_options(&self) -> &LicenseOptions {
        self.license_options
            .as_ref()
            .expect("started without .license_service()")
    }

    /// The running license service.
    pub fn license_service(&self) -> &LicenseService {
        self.license
            .as_ref()
            .expect("the license service is stopped")
    }

    pub fn stop_license_service(&mut self) {
        if let Some(l) = self.license.take() {
            l.stop();
        }
    }

    /// Restart it on the same port and OpenBao, with `extra` variables.
    pub async fn restart_license_service(&mut self, extra: &[(&str, String)]) {
        self.stop_license_service();
        let mut opts = self.license_options().clone();
        for (k, v) in extra {
            opts = opts.env(k, v);
        }
        self.license = Some(opts.spawn().await);
    }

    /// A license file for this installation, signed with the TEST vendor
    /// key, issued a day ago.
    pub async fn issue_license(
        &self,
        license_id: &str,
        not_after: i64,
        max_users: u32,
        max_devices: u32,
    ) -> Vec<u8> {
        let installation = self.license_service().installation_id().await;
        let mut spec = LicenseSpec::new(license_id, &installation, not_after);
        spec.issued = unix_now() - crate::license::DAY;
        spec.max_users = max_users;
        spec.max_devices = max_devices;
        spec.features.clear();
        std::fs::read(spec.issue(self.dir())).unwrap()
    }

    /// Current KV version of the service's license list (0: nothing stored).
    pub async fn stored_licenses_version(&self) -> u64 {
        self.root_bao
            .kv_version("license", "kleidia/licenses")
            .await
    }
}
