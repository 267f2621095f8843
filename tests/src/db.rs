//! A fresh PostgreSQL database per test, on the test stack's server.

use anyhow::{bail, Context, Result};

use crate::stack_var;

/// A fresh, empty PostgreSQL database for one test, dropped when the value is
/// dropped (best effort; `scripts/test.sh` also drops leftovers at start).
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    pub async fn new() -> Result<Self> {
        Self::new_on(&stack_var("DATABASE_URL")).await
    }

    /// A fresh database on the server `admin_url` points at (a role that
    /// may create databases).
    pub async fn new_on(admin_url: &str) -> Result<Self> {
        use sqlx::Connection;
        let admin_url = admin_url.to_string();
        let name = format!("kt_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .context("connect to DATABASE_URL")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await.ok();
        let url = replace_db_name(&admin_url, &name)?;
        Ok(Self {
            name,
            url,
            admin_url,
        })
    }

    pub async fn pool(&self) -> Result<sqlx::PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await?)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Drop from a separate thread with its own runtime: Drop may run inside
        // or outside a tokio runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            }
        })
        .join();
    }
}

pub(crate) fn replace_db_name(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let Some(slash) = base.rfind('/') else {
        bail!("DATABASE_URL has no database name: {url}")
    };
    if base[..slash].ends_with('/') {
        bail!("DATABASE_URL has no database name");
    }
    let mut out = format!("{}/{}", &base[..slash], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

impl TestDb {
    /// `SELECT count(*) FROM <from_where>`, e.g. `count("devices")` or
    /// `count("audit_log WHERE action = 'login.ok'")`.
    pub async fn count(&self, from_where: &str) -> i64 {
        let pool = self.pool().await.expect("connect to the test database");
        let n = sqlx::query_scalar(&format!("SELECT count(*) FROM {from_where}"))
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("count {from_where}: {e}"));
        pool.close().await;
        n
    }
}

/// A PostgreSQL server of the test's own (`initdb` + `pg_ctl` as the
/// `postgres` user on a temporary directory, loopback `port`), with the
/// stack's two roles: `kleidia` (owner, may create databases) and
/// `kleidia_app` (runtime). A test can stop the server process itself
/// (the fault matrix's "PostgreSQL stopped") without touching the shared
/// one. Stopped when dropped.
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl PrivatePostgres {
    pub fn start_new(port: u16) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let me = Self { port, dir };
        let status = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(me.dir.path())
            .status()?;
        if !status.success() {
            bail!("chown the private PostgreSQL directory to postgres");
        }
        me.as_postgres(
            "initdb",
            &[
                "-D",
                &me.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        me.start()?;
        me.as_postgres(
            "psql",
            &[
                "-h",
                &me.socket_dir(),
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-qAt",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                "CREATE ROLE kleidia LOGIN CREATEDB PASSWORD 'kleidia'; \
                 CREATE ROLE kleidia_app LOGIN PASSWORD 'kleidia_app'; \
                 GRANT kleidia_app TO kleidia;",
            ],
        )?;
        Ok(me)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn socket_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> Result<()> {
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/{tool}"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("run {tool} as postgres"))?;
        if !out.status.success() {
            bail!(
                "{tool} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Start the server (again); returns once it takes connections.
    pub fn start(&self) -> Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.socket_dir()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-o", &opts, "-w", "start"],
        )
    }

    /// Stop the server process (`pg_ctl stop -m fast`: every session is
    /// ended, then the server exits).
    pub fn stop(&self) -> Result<()> {
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
    }

    /// The owner role's URL for database `name`.
    pub fn owner_url(&self, name: &str) -> String {
        format!("postgres://kleidia:kleidia@127.0.0.1:{}/{name}", self.port)
    }

    /// The runtime role's URL for database `name`.
    pub fn runtime_url(&self, name: &str) -> String {
        format!(
            "postgres://kleidia_app:kleidia_app@127.0.0.1:{}/{name}",
            self.port
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}
