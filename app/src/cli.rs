//! Command line: `kleidia [--config FILE] [--log-format text|json] <command>`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::SecretString;

use crate::auth::accounts::{self, ChangedBy, NewAccount, NewPassword};
use crate::auth::password::Passwords;
use crate::config::{Config, LogFormat};
use crate::db::users;
use crate::domain::Role;
use crate::error::AppError;
use crate::startup::{shutdown_signal, Application};
use crate::vault::bootstrap::Bootstrap;
use crate::vault::Bao;
use crate::{db, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "kleidia",
    version,
    about = "Kleidia: self-hosted YubiKey fleet management"
)]
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
    /// Manage user accounts without a browser (the first admin).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. Give the password on standard input (`--password-stdin`)
    /// or let Kleidia generate a one-time password (`--generate-password`),
    /// which is then the only thing printed on standard output.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "user")]
        role: Role,
        /// Defaults to the username.
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(
            long,
            conflicts_with = "generate_password",
            required_unless_present = "generate_password"
        )]
        password_stdin: bool,
        /// Generate a one-time password, print it once; it must be changed at first sign-in.
        #[arg(long)]
        generate_password: bool,
    },
    /// Set a user's password (a forgotten admin password; `make demo` on an
    /// existing database). Ends the user's sessions; enables nothing.
    ResetPassword {
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(
            long,
            conflicts_with = "generate_password",
            required_unless_present = "generate_password"
        )]
        password_stdin: bool,
        /// Generate a one-time password, print it once; it must be changed at first sign-in.
        #[arg(long)]
        generate_password: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and the anchors in OpenBao (with `openbao.token`);
    /// names every altered, deleted, cut or re-hashed row and exits 1 if any.
    Verify,
    /// Anchor the chain head in OpenBao now (the server does it on its own).
    Anchor,
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
        Command::User {
            command:
                UserCommand::Create {
                    username,
                    role,
                    display_name,
                    email,
                    password_stdin: _,
                    generate_password,
                },
        } => {
            user_create(
                config,
                username,
                role,
                display_name,
                email,
                generate_password,
            )
            .await
        }
        Command::User {
            command:
                UserCommand::ResetPassword {
                    username,
                    password_stdin: _,
                    generate_password,
                },
        } => user_reset_password(config, username, generate_password).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => match audit_verify(config).await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Audit {
            command: AuditCommand::Anchor,
        } => crate::audit::anchor::command(&config).await,
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
    let m = db::roles::migrate_as_owner(&config.database).await?;
    println!(
        "migrate: {} applied now, {} in total",
        m.applied_after.saturating_sub(m.applied_before),
        m.applied_after
    );
    if let Some(role) = m.granted_to {
        println!("migrate: runtime role {role} granted its rights");
    }
    Ok(())
}

async fn bootstrap(
    mut config: Config,
    addr: Option<url::Url>,
    token_file: Option<PathBuf>,
) -> anyhow::Result<()> {
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
        anyhow::bail!(
            "no OpenBao token: set openbao.token_file, KLEIDIA_OPENBAO_TOKEN or BAO_TOKEN"
        );
    };
    let mut client = config.openbao.client_config();
    client.auth = kleidia_openbao::Auth::Token(token);
    let bao = Bao::new(client)?;
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

/// `Ok(true)` when the chain is intact and matches the anchors.
async fn audit_verify(config: Config) -> anyhow::Result<bool> {
    crate::audit::verify::command(&config).await
}

async fn user_create(
    config: Config,
    username: String,
    role: Role,
    display_name: Option<String>,
    email: Option<String>,
    generate: bool,
) -> anyhow::Result<()> {
    let password = new_password(generate)?;
    let pool = db::connect(&config.database).await?;
    db::migrate(&pool).await?;
    let created = accounts::create(
        &pool,
        &passwords().await?,
        ChangedBy::Cli,
        NewAccount {
            username,
            display_name,
            email,
            role,
            password,
            // A typed password is the admin's own; a generated one is changed
            // at the first sign-in.
            must_change_password: generate,
        },
    )
    .await
    .map_err(public)?;
    let row = created.user;
    eprintln!(
        "created user {} ({}) with id {}",
        row.username, row.role, row.id
    );
    show_once(created.one_time_password);
    Ok(())
}

async fn user_reset_password(
    config: Config,
    username: String,
    generate: bool,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.database).await?;
    db::migrate(&pool).await?;
    let Some(user) = users::by_username(&pool, &username).await? else {
        anyhow::bail!("there is no user {username:?}");
    };
    let password = new_password(generate)?;
    let reset = accounts::reset_password(
        &pool,
        &passwords().await?,
        ChangedBy::Cli,
        user.id,
        password,
        generate,
    )
    .await
    .map_err(public)?;
    eprintln!(
        "password of {} reset; {} session(s) ended",
        reset.user.username, reset.sessions_ended
    );
    if reset.user.disabled {
        eprintln!("note: the account is disabled; an admin can enable it");
    }
    show_once(reset.one_time_password);
    Ok(())
}

/// A refusal as the web words it; an internal error with its whole cause
/// (the operator at the console is the one who reads the log).
fn public(e: AppError) -> anyhow::Error {
    match e {
        AppError::Internal(e) => e,
        other => anyhow::anyhow!("{}", other.public_message()),
    }
}

async fn passwords() -> anyhow::Result<Passwords> {
    Passwords::new(1).await.map_err(public)
}

/// A generated password, or the first line of standard input.
fn new_password(generate: bool) -> anyhow::Result<NewPassword> {
    if generate {
        return Ok(NewPassword::Generate);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    Ok(NewPassword::Given(SecretString::from(pw)))
}

/// A generated password is the only thing on standard output.
fn show_once(one_time_password: Option<String>) {
    if let Some(password) = one_time_password {
        eprintln!("one-time password (shown once; it must be changed at the first sign-in):");
        println!("{password}");
    }
}
