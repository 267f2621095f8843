//! The optional webhook: one JSON POST per run with everything not yet sent.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::Item;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL is a secret: only the status or the kind of failure is told.
    #[error("the webhook answered {0}")]
    Status(u16),
    #[error("the webhook could not be reached ({0})")]
    Transport(&'static str),
}

pub async fn post(
    url: &SecretString,
    timeout: Duration,
    period: i64,
    items: &[Item],
) -> Result<(), WebhookError> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|_| WebhookError::Transport("client"))?;
    let r = client
        .post(url.expose_secret())
        .json(&json!({"event": "kleidia.notices", "period": period, "items": items}))
        .send()
        .await
        // reqwest's error text carries the URL: not logged.
        .map_err(|e| {
            WebhookError::Transport(if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "request"
            })
        })?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(WebhookError::Status(r.status().as_u16()))
    }
}
