//! Command line: `kleidia [--config FILE] [--log-format text|json] <command>`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
use crate::vault::machine::{JwtSetup, MachineAuth};
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
        #[command(flatten)]
        machine: MachineArgs,
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
    // s4-fleet: expiry notices.
    /// Expiry notices (mail and webhook; `[notices]` settings).
    Notices {
        #[command(subcommand)]
        command: NoticesCommand,
    },
}

// s4-fleet: expiry notices.
#[derive(Debug, Subcommand)]
pub enum NoticesCommand {
    /// Send the notices now (what nobody was told this period yet) and
    /// print what was done as JSON. Skips when another replica is sending.
    Run,
}

/// The machine logins `kleidia bootstrap` sets up (AppRole always; JWT for
/// Kubernetes with `--jwt-pubkey`).
#[derive(Debug, clap::Args)]
pub struct MachineArgs {
    /// Lifetime of the services' tokens at login and after each renewal (seconds).
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// Age past which a token is no longer renewed and the service logs in again (seconds).
    #[arg(long, default_value_t = 86400)]
    pub token_max_ttl: u64,
    /// Write DIR/kleidia-app/{role_id,secret_id} and
    /// DIR/kleidia-license/{role_id,secret_id} (a new secret_id each run; 0600).
    #[arg(long, value_name = "DIR")]
    pub approle_out: Option<PathBuf>,
    /// PEM public key that signs the cluster's service-account tokens
    /// (repeatable); enables JWT auth with a role per service.
    #[arg(long, value_name = "FILE")]
    pub jwt_pubkey: Vec<PathBuf>,
    /// The `aud` of the projected service-account tokens.
    #[arg(long, default_value = "openbao")]
    pub jwt_audience: String,
    /// The tokens' `iss`, when it should be checked.
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// The app's service account, `system:serviceaccount:NS:NAME` (default: any).
    #[arg(long)]
    pub jwt_app_subject: Option<String>,
    /// The license service's service account (default: any).
    #[arg(long)]
    pub jwt_license_subject: Option<String>,
    /// Revoke the token bootstrap ran with once done, so no privileged
    /// token outlives the bootstrap.
    #[arg(long)]
    pub revoke_token: bool,
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
            machine,
        } => bootstrap(config, openbao_addr, openbao_token_file, machine).await,
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
        // s4-fleet: expiry notices.
        Command::Notices {
            command: NoticesCommand::Run,
        } => notices_run(config).await,
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

// s4-fleet: expiry notices.
async fn notices_run(config: Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database).await?;
    let report =
        crate::fleet::notices::run_once(&pool, &config, crate::fleet::notices::Trigger::Cli)
            .await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
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
    machine: MachineArgs,
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
    let jwt = if machine.jwt_pubkey.is_empty() {
        None
    } else {
        let mut pubkeys = Vec::new();
        for f in &machine.jwt_pubkey {
            pubkeys.push(
                std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?,
            );
        }
        Some(JwtSetup {
            pubkeys,
            audience: machine.jwt_audience,
            issuer: machine.jwt_issuer,
            app_subject: machine.jwt_app_subject,
            license_subject: machine.jwt_license_subject,
        })
    };
    let mut report = Bootstrap {
        bao: &bao,
        mounts: &config.openbao,
        public_url: &config.server.public_url,
    }
    .run()
    .await?;
    MachineAuth {
        token_ttl: Duration::from_secs(machine.token_ttl.max(1)),
        token_max_ttl: Duration::from_secs(machine.token_max_ttl.max(machine.token_ttl).max(1)),
        approle_out: machine.approle_out,
        jwt,
    }
    .run(&bao, &config.openbao, &mut report)
    .await?;
    print!("{}", report.render());
    if machine.revoke_token {
        bao.revoke_self().await?;
        println!("bootstrap: the bootstrap token is revoked");
    }
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
