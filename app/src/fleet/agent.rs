//! The workstation agent's key on a session (DESIGN §6): registered by the
//! page after it found the agent, and what every secret sent to that agent is
//! encrypted to.

use kleidia_protocol::ticket::{parse_agent_public_key, AgentKeyError};
use rsa::RsaPublicKey;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::db::agent_keys;
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct RegisterAgent {
    /// PEM SubjectPublicKeyInfo of the agent's RSA key (≥ 3072 bits).
    pub public_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterAgentError {
    #[error("you can register an agent only with your own session")]
    NotOwnSession,
    #[error("public_key is too large")]
    TooLarge,
    #[error(transparent)]
    Key(#[from] AgentKeyError),
    /// The session ended meanwhile.
    #[error("the session no longer exists")]
    SessionGone,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Register the agent key on the caller's session; returns its fingerprint.
pub async fn register(
    db: &PgPool,
    u: &CurrentUser,
    meta: &ClientMeta,
    session: Uuid,
    body: RegisterAgent,
) -> Result<String, RegisterAgentError> {
    // Only ever the caller's own session: a key registered elsewhere would let
    // someone else's secrets be encrypted to it.
    if session != u.session_id {
        return Err(RegisterAgentError::NotOwnSession);
    }
    if body.public_key.len() > 8192 {
        return Err(RegisterAgentError::TooLarge);
    }
    let (_, fingerprint) = parse_agent_public_key(&body.public_key)?;
    let mut tx = db.begin().await?;
    if !agent_keys::register(&mut tx, session, body.public_key.trim(), &fingerprint).await? {
        return Err(RegisterAgentError::SessionGone);
    }
    audit::record(
        &mut tx,
        AuditEvent::new("agent.register")
            .actor(u)
            .from_client(meta)
            .target("session", session)
            .details(json!({"agent_key": fingerprint})),
    )
    .await?;
    tx.commit().await?;
    Ok(fingerprint)
}

#[derive(Debug, thiserror::Error)]
pub enum SessionKeyError {
    #[error("no workstation agent is registered with this session")]
    NotRegistered,
    #[error("stored agent key: {0}")]
    Unreadable(AgentKeyError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The agent key registered on the caller's session, and its fingerprint.
pub async fn session_key(
    db: &PgPool,
    u: &CurrentUser,
) -> Result<(RsaPublicKey, String), SessionKeyError> {
    let pem = agent_keys::public_key(db, u.session_id)
        .await?
        .ok_or(SessionKeyError::NotRegistered)?;
    parse_agent_public_key(&pem).map_err(SessionKeyError::Unreadable)
}
