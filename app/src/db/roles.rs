//! The owner/runtime role split.
//!
//! The role that owns a table can `ALTER TABLE … DISABLE TRIGGER` and
//! `TRUNCATE` it, so the role the server runs with must not own `audit_log`.
//! With `database.owner_url` set, migrations run as that owner and then grant
//! the runtime role of `database.url` exactly what the server needs: DML on
//! the ordinary tables, `SELECT, INSERT` on `audit_log`, `SELECT, UPDATE` on
//! `audit_head`, and no `TRUNCATE`, `TRIGGER` or `REFERENCES` anywhere.
//!
//! Without `owner_url` the one URL is both (development): migrations run with
//! it as before, and the server warns that it owns the audit log.

use anyhow::{bail, Context};
use secrecy::SecretString;
use sqlx::PgPool;

use super::{connect, connect_options, MIGRATOR};
use crate::config::DatabaseConfig;

/// Tables whose runtime grants are narrower than plain DML.
const AUDIT_LOG: &str = "audit_log";
const AUDIT_HEAD: &str = "audit_head";
const MIGRATIONS: &str = "_sqlx_migrations";

/// What `kleidia migrate` did.
#[derive(Debug)]
pub struct Migrated {
    pub applied_before: i64,
    pub applied_after: i64,
    /// The runtime role that was granted its rights (none in single-URL mode).
    pub granted_to: Option<String>,
}

/// The owner's configuration: `owner_url` in place of `url`, a small pool.
fn owner_config(cfg: &DatabaseConfig) -> Option<DatabaseConfig> {
    let owner = cfg.owner_url.clone()?;
    Some(DatabaseConfig {
        url: owner,
        url_file: None,
        owner_url: None,
        owner_url_file: None,
        max_connections: 2,
        ..cfg.clone()
    })
}

/// The user name in a PostgreSQL URL.
fn username(url: &SecretString, key: &str) -> anyhow::Result<String> {
    let cfg = DatabaseConfig {
        url: url.clone(),
        ..DatabaseConfig::default()
    };
    let opts = connect_options(&cfg).with_context(|| format!("{key} is not a valid URL"))?;
    Ok(opts.get_username().to_string())
}

/// Apply pending migrations as the owner (`owner_url`, else `url`) and, when
/// the two URLs name different roles, grant the runtime role its rights.
pub async fn migrate_as_owner(cfg: &DatabaseConfig) -> anyhow::Result<Migrated> {
    let (owner_cfg, runtime) = match owner_config(cfg) {
        Some(o) => {
            let owner = username(&o.url, "database.owner_url")?;
            let runtime = username(&cfg.url, "database.url")?;
            (o, (runtime != owner).then_some(runtime))
        }
        None => (cfg.clone(), None),
    };
    let pool = connect(&owner_cfg).await?;
    let res = async {
        if !may_migrate(&pool).await? {
            bail!(
                "the role of {} does not own the schema and cannot migrate it: \
                 run `kleidia migrate` with database.owner_url",
                if cfg.owner_url.is_some() {
                    "database.owner_url"
                } else {
                    "database.url"
                }
            );
        }
        let applied_before = applied_count(&pool).await;
        MIGRATOR
            .run(&pool)
            .await
            .context("applying database migrations")?;
        let applied_after = applied_count(&pool).await;
        if let Some(role) = &runtime {
            grant_runtime(&pool, role).await?;
        }
        Ok(Migrated {
            applied_before,
            applied_after,
            granted_to: runtime.clone(),
        })
    }
    .await;
    pool.close().await;
    res
}

/// `serve`: migrate as the owner when `owner_url` is set, then connect the
/// runtime pool and check the schema (or, single-URL, migrate with it).
pub async fn connect_and_migrate(cfg: &DatabaseConfig) -> anyhow::Result<PgPool> {
    if cfg.owner_url.is_some() {
        let m = migrate_as_owner(cfg).await?;
        if let Some(role) = &m.granted_to {
            tracing::info!(runtime_role = %role, "migrations applied as the owner role; runtime grants in place");
        }
    }
    let pool = connect(cfg).await?;
    super::migrate(&pool).await?;
    warn_if_runtime_owns_audit_log(&pool).await;
    Ok(pool)
}

/// Whether the connected role may apply migrations: the schema is empty, or
/// it owns (or is a member of the owner of) the migrations table.
pub async fn may_migrate(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT pg_has_role(current_user, c.relowner, 'USAGE') \
                            FROM pg_class c WHERE c.oid = to_regclass('public._sqlx_migrations')), true)",
    )
    .fetch_one(pool)
    .await
}

/// For a role that may not migrate: every embedded migration must be applied.
pub async fn check_applied(pool: &PgPool) -> anyhow::Result<()> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .context("reading the applied migrations")?;
    let missing: Vec<_> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .filter(|m| applied.binary_search(&m.version).is_err())
        .collect();
    if let Some(first) = missing.first() {
        bail!(
            "{} database migration(s) are pending (first: {} {}) and the runtime role may not apply them: \
             run `kleidia migrate` with database.owner_url",
            missing.len(),
            first.version,
            first.description
        );
    }
    Ok(())
}

async fn warn_if_runtime_owns_audit_log(pool: &PgPool) {
    let owns: Result<Option<bool>, _> = sqlx::query_scalar(
        "SELECT pg_has_role(current_user, c.relowner, 'USAGE') \
           FROM pg_class c WHERE c.oid = to_regclass('public.audit_log')",
    )
    .fetch_one(pool)
    .await;
    if let Ok(Some(true)) = owns {
        tracing::warn!(
            "the database role of database.url owns audit_log (or is a superuser): it can disable \
             the append-only triggers. Run the server as a separate runtime role and migrations \
             with database.owner_url (docs/security.md, \"Audit log\")"
        );
    }
}

async fn applied_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// The advisory lock the runtime grants run under ("KLGRANT" in ASCII).
const GRANT_LOCK: i64 = 0x004b_4c47_5241_4e54;

/// The runtime role's rights, granted by the owner after every migration run
/// (idempotent), so tables added by later migrations are covered too.
async fn grant_runtime(pool: &PgPool, role: &str) -> anyhow::Result<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(pool)
            .await?;
    if !exists {
        bail!("the runtime role {role:?} of database.url does not exist; create it (LOGIN, no other attributes) first");
    }
    let r: String = sqlx::query_scalar("SELECT quote_ident($1)")
        .bind(role)
        .fetch_one(pool)
        .await?;
    let statements = [
        format!("GRANT USAGE ON SCHEMA public TO {r}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}"),
        format!("REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {r}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {r}"),
        format!("REVOKE ALL ON {AUDIT_LOG}, {AUDIT_HEAD}, {MIGRATIONS} FROM {r}"),
        format!("GRANT SELECT, INSERT ON {AUDIT_LOG} TO {r}"),
        format!("GRANT SELECT, UPDATE ON {AUDIT_HEAD} TO {r}"),
        format!("GRANT SELECT ON {MIGRATIONS} TO {r}"),
    ];
    let mut tx = pool.begin().await?;
    // Replicas starting at the same instant each grant: PostgreSQL refuses
    // concurrent GRANTs on one object ("tuple concurrently updated"), so
    // they take turns (the lock ends with the transaction).
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(GRANT_LOCK)
        .execute(&mut *tx)
        .await
        .context("waiting for another replica's grants")?;
    for s in &statements {
        sqlx::query(s)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("granting the runtime role: {s}"))?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn the_runtime_role_is_the_user_of_database_url() {
        let cfg = DatabaseConfig {
            url: SecretString::from("postgres://kleidia_app:pw@db/kleidia"),
            owner_url: Some(SecretString::from("postgres://kleidia:pw2@db/kleidia")),
            ..DatabaseConfig::default()
        };
        assert_eq!(username(&cfg.url, "x").unwrap(), "kleidia_app");
        let o = owner_config(&cfg).unwrap();
        assert_eq!(o.url.expose_secret(), "postgres://kleidia:pw2@db/kleidia");
        let single = DatabaseConfig::default();
        assert!(owner_config(&single).is_none());
    }
}
