use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kleidia_license::config::{Config, LogFormat, Overrides};
use kleidia_license::startup::{init_tracing, Application};
use kleidia_license::{keys, vendor};

/// Kleidia license service and vendor tool.
#[derive(Parser)]
#[command(name = "kleidia-license", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the license service (config: --config FILE, KLEIDIA_LICENSE_* env, flags).
    Serve {
        /// TOML config file.
        #[arg(long, env = "KLEIDIA_LICENSE_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address (default 127.0.0.1:8090).
        #[arg(long)]
        listen: Option<String>,
        /// OpenBao address (default http://127.0.0.1:8200).
        #[arg(long)]
        openbao_addr: Option<String>,
        /// Log format: text or json.
        #[arg(long, value_enum)]
        log_format: Option<CliLogFormat>,
    },
    /// Create a vendor key pair: DIR/vendor.key (private, 0600) and DIR/vendor.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a license for one installation and write it to a file.
    Issue {
        /// Vendor private key (PKCS#8 PEM), e.g. from `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The customer's installation id (GET /installation-id, or the license page).
        #[arg(long)]
        installation_id: String,
        /// Customer name, shown on the license page.
        #[arg(long)]
        customer: String,
        /// End of validity: YYYY-MM-DD (midnight UTC), RFC 3339, or @<unix seconds>.
        #[arg(long)]
        not_after: String,
        /// Issue time, same formats (default: now).
        #[arg(long)]
        issued: Option<String>,
        /// Most YubiKeys that may be enrolled (at least 1).
        #[arg(long)]
        max_devices: u32,
        /// Most user accounts (at least 1).
        #[arg(long)]
        max_users: u32,
        /// A feature flag; repeat for several.
        #[arg(long = "feature")]
        features: Vec<String>,
        /// License id (default: KL-<random>).
        #[arg(long)]
        license_id: Option<String>,
        /// Output file (must not exist).
        #[arg(long, default_value = "license.json")]
        out: PathBuf,
    },
    /// Print a license file and whether its signature verifies with the
    /// compiled-in vendor key (or --pubkey). Exit status 1 if it does not.
    Inspect {
        file: PathBuf,
        /// Check against this public key (SPKI PEM) instead of the compiled-in one.
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kleidia-license: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            openbao_addr,
            log_format,
        } => {
            let overrides = Overrides {
                listen,
                openbao_addr,
                log_format: log_format.map(|f| match f {
                    CliLogFormat::Text => LogFormat::Text,
                    CliLogFormat::Json => LogFormat::Json,
                }),
            };
            let cfg = Config::load(config.as_deref(), &overrides)?;
            init_tracing(cfg.log_format);
            let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
            rt.block_on(async {
                let app = Application::build(cfg).await?;
                app.run_until_stopped().await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { out } => {
            let (k, p) = keys::keygen(&out)?;
            println!(
                "private key: {} (keep it offline; it signs licenses)",
                k.display()
            );
            println!(
                "public key:  {} (build with KLEIDIA_LICENSE_PUBKEY_FILE={})",
                p.display(),
                p.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Issue {
            key,
            installation_id,
            customer,
            not_after,
            issued,
            max_devices,
            max_users,
            features,
            license_id,
            out,
        } => {
            let issued_at = match issued {
                Some(s) => vendor::parse_time(&s)?,
                None => time::OffsetDateTime::now_utc(),
            };
            let not_after = vendor::parse_time(&not_after)?;
            if not_after <= time::OffsetDateTime::now_utc() {
                eprintln!("warning: --not-after is in the past; the service will refuse this license as expired");
            }
            let payload = vendor::issue(
                &key,
                vendor::IssueRequest {
                    license_id,
                    customer,
                    installation_id,
                    issued_at,
                    not_after,
                    max_users,
                    max_devices,
                    features,
                },
                &out,
            )?;
            print!("{}", vendor::describe(&payload));
            println!("written to:      {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { file, pubkey } => {
            let (key, name) = match &pubkey {
                Some(p) => (keys::load_verifying_key(p)?, format!("key {}", p.display())),
                None => (
                    keys::vendor_key()?,
                    format!(
                        "compiled-in key {}{}",
                        keys::vendor_key_fingerprint(),
                        if keys::VENDOR_PUBKEY_IS_TEST {
                            ", the TEST key"
                        } else {
                            ""
                        }
                    ),
                ),
            };
            let i = vendor::inspect(&file, &key, &name)?;
            print!("{}", i.text);
            Ok(if i.verified {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
