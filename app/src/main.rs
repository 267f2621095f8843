use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    kleidia::cli::run(kleidia::cli::Cli::parse()).await
}
