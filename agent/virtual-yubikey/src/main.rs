//! `kleidia-virtual-yubikey`: a software YubiKey 5 for tests and the demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use kleidia_virtual_yubikey::attest::AttestationRoot;
use kleidia_virtual_yubikey::run::{self, Options, VPCD_BASE_PORT};
use kleidia_virtual_yubikey::state::Firmware;

/// A software YubiKey 5 (PIV, OATH) that plugs into pcscd through vsmartcard's vpcd.
/// FOR TESTS AND DEMOS ONLY: vpcd listens on all interfaces.
///
/// Signals: SIGUSR1 unplugs the key (state kept), SIGUSR2 plugs it back in,
/// SIGTERM or SIGINT unplugs it, saves the state and exits.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a test attestation root CA (key + certificate, PEM) at --out and
    /// print its certificate. An existing root is kept (and printed) unless --force.
    InitAttestationRoot {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing file (keys attested before will no longer verify).
        #[arg(long)]
        force: bool,
    },
    /// Print the certificate (PEM) of a test attestation root CA.
    PrintAttestationRoot {
        /// The root file (as written by init-attestation-root or on first start).
        #[arg(long, value_name = "FILE")]
        attestation_root: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Serial number of a new key (must match the state file if it exists).
    #[arg(long)]
    serial: Option<u32>,
    /// Firmware personality: 5.4.3 (3DES factory management key) or 5.7.1 (AES-192).
    #[arg(long)]
    firmware: Option<Firmware>,
    /// JSON state file; created in factory state if missing. Delete it to start over.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// vpcd reader index: 0 (`Virtual PCD 00 00`, port 35963) or 1 (`… 00 01`, 35964).
    #[arg(long, conflicts_with = "reader_port")]
    reader: Option<u8>,
    /// vpcd TCP port (alternative to --reader).
    #[arg(long)]
    reader_port: Option<u16>,
    /// Host where vpcd (inside pcscd) listens.
    #[arg(long, default_value = "127.0.0.1")]
    vpcd_host: String,
    /// Test attestation root CA (created if missing); default: attestation-root.pem beside --state.
    #[arg(long, value_name = "FILE", env = "KLEIDIA_VYK_ATTESTATION_ROOT")]
    attestation_root: Option<PathBuf>,
    /// Create the new key without the OATH application (as a key whose OATH
    /// application is disabled): SELECT of its AID answers "not found".
    #[arg(long)]
    without_oath: bool,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kleidia-virtual-yubikey: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::InitAttestationRoot { out, force }) => {
            let root = if out.exists() && !force {
                AttestationRoot::load(&out)?
            } else {
                let root = AttestationRoot::generate(SystemTime::now(), &mut rand::rngs::OsRng)?;
                root.save(&out)?;
                root
            };
            print!("{}", root.cert_pem()?);
            Ok(())
        }
        Some(Cmd::PrintAttestationRoot { attestation_root }) => {
            let root = AttestationRoot::load(&attestation_root).context(
                "no attestation root there yet: create it with init-attestation-root --out FILE",
            )?;
            print!("{}", root.cert_pem()?);
            Ok(())
        }
        None => {
            let a = cli.run;
            let Some(state) = a.state else {
                bail!("--state FILE is required (see --help)");
            };
            let vpcd_port = match (a.reader, a.reader_port) {
                (Some(r @ (0 | 1)), _) => VPCD_BASE_PORT + u16::from(r),
                (Some(r), _) => bail!("--reader {r}: vpcd has readers 0 and 1"),
                (None, Some(p)) => p,
                (None, None) => VPCD_BASE_PORT,
            };
            let attestation_root = a
                .attestation_root
                .unwrap_or_else(|| run::default_root_path(&state));
            run::run(Options {
                serial: a.serial,
                firmware: a.firmware,
                state,
                attestation_root,
                vpcd_host: a.vpcd_host,
                vpcd_port,
                without_oath: a.without_oath,
            })
        }
    }
}
