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
        use sqlx::Connection;
        let admin_url = stack_var("DATABASE_URL");
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
