//! `kleidia-agent`: parse the configuration and run the agent.

use std::process::ExitCode;

use clap::Parser;
use kleidia_agent::config::{Cli, Config};
use kleidia_agent::startup::Application;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_cli(Cli::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kleidia-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let app = match Application::build(config).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kleidia-agent: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let st = app.state();
    tracing::info!(
        port = app.port(),
        kleidia_origin = %st.config.allowed_origin,
        allow_virtual_readers = st.config.allow_virtual_readers,
        "kleidia-agent listening on 127.0.0.1 and [::1]"
    );
    println!("kleidia-agent listening on http://127.0.0.1:{}", app.port());
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kleidia-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
