//! Self-registration with the card present (issue 14 §6). A plain user may
//! register a YubiKey to themselves only by showing the card: the server
//! issues a presence challenge for it ([`challenge`]), the agent has the
//! card make its attested presence key (slot 95) and sign the nonce, and
//! [`verify`] takes the serial from that attestation, never from the request
//! body. Nobody can squat a serial they do not hold, and registration
//! answers tell a plain user nothing about cards they do not hold.
//!
//! The presence key made here is recorded on the new device row, so the
//! enrollment's first operation proves presence with it directly.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kleidia_protocol::agent::{
    presence_digest, PresenceProof, ProvePresenceParams, SignedRequest, PRESENCE_NONCE_LEN,
};
use kleidia_protocol::ticket::Operation;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::Signature;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{FromRow, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::agent::{self, SessionKeyError};
use super::context::FleetContext;
use super::operations::sign_ticket;
use super::presence::{attested_key, PresenceError, CHALLENGE_LIFETIME_SECS};
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser};
use crate::domain::Serial;

/// `POST /api/devices/claim`: the card the person says they hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct ClaimRequest {
    pub serial: Serial,
}

/// What the page posts to the agent (`agent_path`, `request`); the agent's
/// answer goes to `POST /api/devices` as `{challenge_id, proof}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClaimChallenge {
    pub challenge_id: Uuid,
    pub serial: Serial,
    pub agent_path: &'static str,
    pub request: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// The card's answer, with `POST /api/devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimProof {
    pub challenge_id: Uuid,
    pub proof: PresenceProof,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "registering a YubiKey to yourself needs the card: enroll it through the agent, \
         which sends the card's attestation (or ask an admin to register it for you)"
    )]
    NeedsCard,
    #[error("no registration challenge {0}")]
    NoChallenge(Uuid),
    #[error("that registration challenge was already used; start again")]
    Replayed,
    #[error("the registration challenge expired; start again")]
    Expired,
    #[error("the registration challenge was issued to another session")]
    OtherSession,
    #[error("the session's agent key changed since the challenge; start again")]
    AgentKeyChanged,
    #[error("the proof is signed over another agent key than this session's")]
    WrongAgentKey,
    #[error("the card's attestation names serial {attested}, the request {claimed}")]
    SerialMismatch { attested: Serial, claimed: Serial },
    #[error("the card's proof is refused: {0}")]
    Proof(String),
    #[error(transparent)]
    Agent(#[from] SessionKeyError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl ClaimError {
    /// A refusal (audited), as opposed to a failure of Kleidia itself.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, ClaimError::Internal(_) | ClaimError::Db(_))
    }
}

/// Issue a registration challenge for the card `serial` to the session's
/// agent. Whether that serial is registered (and to whom) is not looked at:
/// the answer is the same for every serial.
pub async fn challenge(
    db: &PgPool,
    ctx: &FleetContext,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
) -> Result<ClaimChallenge, ClaimError> {
    let (_, fingerprint) = agent::session_key(db, u).await?;
    let mut nonce = [0u8; PRESENCE_NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let id = Uuid::new_v4();
    // The card makes a fresh presence key (factory management key) and
    // attests it: a card that holds one already was registered before and
    // is reset first.
    let params = serde_json::to_value(ProvePresenceParams {
        serial: serial.get(),
        nonce: B64.encode(nonce),
        operation_id: id.to_string(),
        establish: true,
    })
    .map_err(anyhow::Error::from)?;
    let ticket = sign_ticket(
        ctx,
        id,
        Operation::ProvePresence,
        serial,
        &fingerprint,
        &params,
    )?;
    let expires_at = ticket
        .expires_at
        .min(OffsetDateTime::now_utc() + time::Duration::seconds(CHALLENGE_LIFETIME_SECS));
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM registration_challenges WHERE expires_at < now() - interval '1 day'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO registration_challenges (id, serial, user_id, session_id, \
         agent_key_fingerprint, nonce, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(serial.as_i64())
    .bind(u.user_id)
    .bind(u.session_id)
    .bind(&fingerprint)
    .bind(&nonce[..])
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        AuditEvent::new("device.claim_challenge")
            .actor(u)
            .from_client(meta)
            .details(json!({"challenge_id": id, "serial": serial, "agent_key": fingerprint})),
    )
    .await?;
    tx.commit().await?;
    Ok(ClaimChallenge {
        challenge_id: id,
        serial,
        agent_path: Operation::ProvePresence.path(),
        request: json!(SignedRequest {
            ticket: ticket.ticket,
            params
        }),
        expires_at,
    })
}

#[derive(Debug, FromRow)]
struct ChallengeRow {
    serial: i64,
    user_id: Uuid,
    session_id: Uuid,
    agent_key_fingerprint: String,
    nonce: Vec<u8>,
    expires_at: OffsetDateTime,
}

/// A card shown just now: its serial (from the attestation) and its
/// presence key (DER SPKI), to record with the device.
#[derive(Debug)]
pub struct Shown {
    pub serial: Serial,
    pub presence_key: Vec<u8>,
    pub firmware: Option<String>,
}

/// Consume the challenge and check the card's proof. The serial is the one
/// the card's attestation names; a `claimed` serial in the request that
/// differs is refused.
pub async fn verify(
    db: &PgPool,
    ctx: &FleetContext,
    u: &CurrentUser,
    p: &ClaimProof,
    claimed: Option<Serial>,
) -> Result<Shown, ClaimError> {
    // Single use: the first proof posted consumes the challenge, right or wrong.
    let row: Option<ChallengeRow> = sqlx::query_as(
        "UPDATE registration_challenges SET used_at = now() WHERE id = $1 AND used_at IS NULL \
         RETURNING serial, user_id, session_id, agent_key_fingerprint, nonce, expires_at",
    )
    .bind(p.challenge_id)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        let exists: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM registration_challenges WHERE id = $1")
                .bind(p.challenge_id)
                .fetch_optional(db)
                .await?;
        return Err(match exists {
            Some(_) => ClaimError::Replayed,
            None => ClaimError::NoChallenge(p.challenge_id),
        });
    };
    if row.user_id != u.user_id || row.session_id != u.session_id {
        return Err(ClaimError::OtherSession);
    }
    if row.expires_at <= OffsetDateTime::now_utc() {
        return Err(ClaimError::Expired);
    }
    let (_, fingerprint) = agent::session_key(db, u).await?;
    if fingerprint != row.agent_key_fingerprint {
        return Err(ClaimError::AgentKeyChanged);
    }
    if p.proof.agent_key_fingerprint != row.agent_key_fingerprint {
        return Err(ClaimError::WrongAgentKey);
    }
    let serial = Serial::try_from(row.serial)
        .map_err(|_| anyhow::anyhow!("a registration challenge holds serial {}", row.serial))?;
    let signature = B64
        .decode(&p.proof.signature)
        .ok()
        .and_then(|der| Signature::from_der(&der).ok())
        .ok_or_else(|| {
            ClaimError::Proof("signature is not a base64 DER ECDSA P-256 signature".into())
        })?;
    // The attestation (slot 95 through f9 to the configured roots) must name
    // the card the agent was sent to, with a PIN- and touch-free P-256 key.
    let (key, spki, attested) = attested_key(ctx, serial, &p.proof).map_err(|e| match e {
        PresenceError::Attestation(m) => ClaimError::Proof(format!("attestation: {m}")),
        e => ClaimError::Proof(e.to_string()),
    })?;
    let attested_serial = Serial::try_from(i64::from(attested.serial))
        .map_err(|_| ClaimError::Proof("the attestation names no valid serial".into()))?;
    if let Some(claimed) = claimed.filter(|c| *c != attested_serial) {
        return Err(ClaimError::SerialMismatch {
            attested: attested_serial,
            claimed,
        });
    }
    let digest = presence_digest(&row.nonce, &p.challenge_id, &row.agent_key_fingerprint);
    key.verify_prehash(&digest, &signature).map_err(|_| {
        ClaimError::Proof("the signature does not verify against the attested key".into())
    })?;
    Ok(Shown {
        serial: attested_serial,
        presence_key: spki,
        firmware: attested.firmware.map(|(a, b, c)| format!("{a}.{b}.{c}")),
    })
}
