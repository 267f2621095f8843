//! Structured logging with `tracing`: human-readable text by default, JSON
//! lines for production (`--log-format json` or `log.format = "json"`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global subscriber. `RUST_LOG` wins over the configured level.
/// The OpenBao client library's own logging (vaultrs, rustify) is off unless
/// `RUST_LOG` names it: it would log request paths and bodies.
pub fn init(level: &str, format: LogFormat) {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| level.to_string());
    let filter = EnvFilter::try_new(kleidia_openbao::quiet_log_filter(&spec))
        .unwrap_or_else(|_| EnvFilter::new(kleidia_openbao::quiet_log_filter("info")));
    let registry = tracing_subscriber::registry().with(filter);
    let res = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // A second init (tests building several apps in one process) is harmless.
    let _ = res;
}
