//! Command line: `kleidia [--config FILE] [--log-format text|json] <command>`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::SecretString;

use crate::config::{Config, LogFormat};
use crate::startup::{shutdown_signal, Application};
use crate::vault::bootstrap::Bootstrap;
use crate::vault::Bao;
use crate::{db, telemetry};

#[derive(Debug, Parser)]
#[command(name = "kleidia", version, about = "Kleidia: self-hosted YubiKey fleet management")]
pub struct Cli {
    /// TOML configuration file (defaults, then this file, then KLEIDIA_* variables).
    #[arg(long, global = true, env = "KLEIDIA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format; overrides `log.format`.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create or check the OpenBao mounts, CAs, roles and policies (idempotent).
    ///
    /// The token comes from `openbao.token`/`openbao.token_file`, or from the
    /// BAO_TOKEN environment variable; it needs rights on sys/ (a root token in dev).
    Bootstrap {
        /// OpenBao address; overrides `openbao.addr`.
        #[arg(long)]
        openbao_addr: Option<url::Url>,
        /// File holding the OpenBao token to bootstrap with.
        #[arg(long)]
        openbao_token_file: Option<PathBuf>,
    },
}

pub async fn run(cli: Cli) -> ExitCode {
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kleidia: {e}");
            return ExitCode::from(2);
        }
    };
    let format = cli.log_format.unwrap_or(config.log.format);
    telemetry::init(&config.log.level, format);
    let res = match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => migrate(config).await,
        Command::Bootstrap {
            openbao_addr,
            openbao_token_file,
        } => bootstrap(config, openbao_addr, openbao_token_file).await,
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kleidia failed");
            eprintln!("kleidia: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    tracing::info!(addr = %app.local_addr()?, public_url = %app.state().config.server.public_url, "Kleidia listening");
    app.run_until_stopped(shutdown_signal()).await
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database).await?;
    let before = applied_count(&pool).await;
    db::migrate(&pool).await?;
    let after = applied_count(&pool).await;
    println!(
        "migrate: {} applied now, {} in total",
        after.saturating_sub(before),
        after
    );
    Ok(())
}

async fn applied_count(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

async fn bootstrap(mut config: Config, addr: Option<url::Url>, token_file: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(a) = addr {
        config.openbao.addr = a;
    }
    let token = if let Some(f) = token_file {
        Some(SecretString::from(
            std::fs::read_to_string(&f)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?
                .trim()
                .to_string(),
        ))
    } else if let Some(t) = config.openbao.token.clone() {
        Some(t)
    } else {
        std::env::var("BAO_TOKEN").ok().map(SecretString::from)
    };
    let Some(token) = token else {
        anyhow::bail!("no OpenBao token: set openbao.token_file, KLEIDIA_OPENBAO_TOKEN or BAO_TOKEN");
    };
    let bao = Bao::new(config.openbao.addr.clone(), Some(token), config.openbao_timeout())?;
    println!("bootstrap: OpenBao at {}", config.openbao.addr);
    let report = Bootstrap {
        bao: &bao,
        mounts: &config.openbao,
        public_url: &config.server.public_url,
    }
    .run()
    .await?;
    print!("{}", report.render());
    Ok(())
}
