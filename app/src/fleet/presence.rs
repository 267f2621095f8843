//! Proof of presence (issue 12 §2, DESIGN §7): a device's secret, current or
//! new, is released only to an agent whose card has just signed a server
//! nonce with the attested P-256 key in its retired slot 95, over the
//! operation id and the fingerprint of the agent key the secrets will be
//! encrypted to. A registered agent key alone proves nothing: anyone can
//! register one.
//!
//! Two steps: [`challenge`] records a single-use nonce (bound to the
//! operation, the device, the session and its agent key) and signs a
//! `prove_presence` ticket for the agent; [`verify`] consumes the challenge,
//! checks the card's signature against the key recorded on the device (or,
//! for a factory card, the attestation of the key it just generated, which
//! it then records), and only then hands out a [`Proven`] that the
//! operation code requires before it encrypts anything.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kleidia_protocol::agent::{
    presence_digest, PresenceProof, ProvePresenceParams, SignedRequest, PRESENCE_NONCE_LEN,
};
use kleidia_protocol::ticket::Operation;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{FromRow, PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::agent::{self, SessionKeyError};
use super::attestation;
use super::context::FleetContext;
use super::db::DeviceRow;
use super::operations::sign_ticket;
use super::policy::{PinPolicy, TouchPolicy};
use crate::audit::{self, AuditEvent};
use crate::auth::{ClientMeta, CurrentUser};
use crate::domain::Serial;

/// How long the card has to answer a challenge.
pub const CHALLENGE_LIFETIME_SECS: i64 = 60;

/// Operations that send the agent a secret (current or new) and so need a
/// fresh proof of presence. A wipe and an attestation send none.
pub fn needs_presence(op: Operation) -> bool {
    matches!(
        op,
        Operation::SetPin
            | Operation::SetPuk
            | Operation::UnblockPin
            | Operation::RotateManagementKey
            | Operation::GenerateCsr
            | Operation::ImportCertificate
    )
}

/// What the proof, once verified, unlocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A new operation (`POST …/operations`).
    Authorize,
    /// The ticket of an unconfirmed secret change, again.
    Resume,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Authorize => "authorize",
            Purpose::Resume => "resume",
        }
    }
}

/// The answer to an operation that needs presence first: what the page
/// posts to the agent (`agent_path`, `request`), then the agent's answer to
/// `POST /api/yubikey/{serial}/operations/{operation_id}/presence`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PresenceChallenge {
    pub presence_required: bool,
    pub challenge_id: Uuid,
    pub operation_id: Uuid,
    pub operation: Operation,
    pub serial: Serial,
    /// The card has no recorded presence key: the agent makes one.
    pub establish: bool,
    pub agent_path: &'static str,
    pub request: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// `POST /api/yubikey/{serial}/operations/{id}/presence`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct PresenceSubmission {
    pub challenge_id: Uuid,
    /// The agent's answer, unchanged.
    pub proof: PresenceProof,
    /// A PIN the person chose (set_pin, unblock_pin): never stored with the
    /// challenge, so it is sent again here.
    #[serde(default)]
    pub new_pin: Option<String>,
}

/// Presence proven for one operation, by the card, just now. Only
/// [`verify`] makes one.
#[derive(Debug)]
pub struct Proven {
    operation_id: Uuid,
    purpose: Purpose,
    request: Value,
    fingerprint: String,
}

impl Proven {
    pub fn operation_id(&self) -> Uuid {
        self.operation_id
    }
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }
    /// The operation request recorded with the challenge (no PIN).
    pub fn request(&self) -> &Value {
        &self.request
    }
    /// The agent key the card signed over.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("no presence challenge {0} for this operation")]
    NoChallenge(Uuid),
    #[error("that presence challenge was already used; start the operation again")]
    Replayed,
    #[error("the presence challenge expired; start the operation again")]
    Expired,
    #[error("the presence challenge was issued to another session")]
    OtherSession,
    #[error("the presence challenge is for another operation or device")]
    WrongOperation,
    #[error("the session's agent key changed since the challenge; start the operation again")]
    AgentKeyChanged,
    #[error(
        "the proof is signed over another agent key than the one the secrets would be encrypted to"
    )]
    WrongAgentKey,
    #[error("the presence proof is malformed: {0}")]
    Malformed(&'static str),
    #[error("the presence signature does not verify against the device's presence key")]
    BadSignature,
    #[error("the presence key's attestation is refused: {0}")]
    Attestation(String),
    #[error("device {0} has no presence key recorded and no longer has its factory credentials: wipe it (PIV reset, which needs no secret) and enroll it again")]
    NotEstablished(Serial),
    #[error("a presence key was recorded for this device meanwhile; start the operation again")]
    EstablishedMeanwhile,
    #[error(transparent)]
    Agent(#[from] SessionKeyError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl PresenceError {
    /// A refusal (audited), as opposed to a failure of Kleidia itself.
    fn is_refusal(&self) -> bool {
        !matches!(self, PresenceError::Internal(_) | PresenceError::Db(_))
    }
}

#[derive(Debug, FromRow)]
struct ChallengeRow {
    operation_id: Uuid,
    device_serial: i64,
    purpose: String,
    request: Value,
    user_id: Uuid,
    session_id: Uuid,
    agent_key_fingerprint: String,
    nonce: Vec<u8>,
    establish: bool,
    expires_at: OffsetDateTime,
}

/// The DER SubjectPublicKeyInfo of the device's recorded presence key.
pub async fn presence_key(
    db: impl PgExecutor<'_>,
    serial: Serial,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let row: Option<(Option<Vec<u8>>,)> =
        sqlx::query_as("SELECT presence_public_key FROM devices WHERE serial = $1")
            .bind(serial.as_i64())
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|r| r.0))
}

/// Issue a presence challenge for `operation_id` (`kind`) on `d`, for the
/// session's agent key `fingerprint`. `request` is the operation request
/// without any PIN.
#[allow(clippy::too_many_arguments)]
pub async fn challenge(
    db: &PgPool,
    ctx: &FleetContext,
    u: &CurrentUser,
    meta: &ClientMeta,
    d: &DeviceRow,
    purpose: Purpose,
    (operation_id, kind): (Uuid, Operation),
    request: Value,
    fingerprint: &str,
) -> Result<PresenceChallenge, PresenceError> {
    let serial = d.serial;
    let establish = presence_key(db, serial).await?.is_none();
    // A factory card proves itself with a key it makes with the factory
    // management key. A card whose credentials were changed before presence
    // keys existed cannot: releasing its management key to make one would
    // be exactly the release this check exists to prevent.
    if establish && d.secrets_version.is_some() {
        return Err(PresenceError::NotEstablished(serial));
    }
    let mut nonce = [0u8; PRESENCE_NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let id = Uuid::new_v4();
    let params = serde_json::to_value(ProvePresenceParams {
        serial: serial.get(),
        nonce: B64.encode(nonce),
        operation_id: operation_id.to_string(),
        establish,
    })
    .map_err(anyhow::Error::from)?;
    let ticket = sign_ticket(
        ctx,
        id,
        Operation::ProvePresence,
        serial,
        fingerprint,
        &params,
    )?;
    let expires_at = ticket
        .expires_at
        .min(OffsetDateTime::now_utc() + time::Duration::seconds(CHALLENGE_LIFETIME_SECS));
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO presence_challenges (id, operation_id, device_serial, purpose, kind, request, \
         user_id, session_id, agent_key_fingerprint, nonce, establish, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(id)
    .bind(operation_id)
    .bind(serial.as_i64())
    .bind(purpose.as_str())
    .bind(kind.as_str())
    .bind(&request)
    .bind(u.user_id)
    .bind(u.session_id)
    .bind(fingerprint)
    .bind(&nonce[..])
    .bind(establish)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        AuditEvent::new("presence.challenge")
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({
                "operation": kind.as_str(),
                "operation_id": operation_id,
                "challenge_id": id,
                "purpose": purpose.as_str(),
                "establish": establish,
                "agent_key": fingerprint,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(PresenceChallenge {
        presence_required: true,
        challenge_id: id,
        operation_id,
        operation: kind,
        serial,
        establish,
        agent_path: Operation::ProvePresence.path(),
        request: json!(SignedRequest {
            ticket: ticket.ticket,
            params
        }),
        expires_at,
    })
}

/// Consume the challenge and check the card's proof; a refusal is audited
/// (`presence.refused`) and releases nothing.
pub async fn verify(
    db: &PgPool,
    ctx: &FleetContext,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    operation_id: Uuid,
    sub: &PresenceSubmission,
) -> Result<Proven, PresenceError> {
    match check(db, ctx, u, serial, operation_id, sub).await {
        Ok((row, established)) => {
            let mut tx = db.begin().await?;
            if let Some(spki) = &established {
                let done = sqlx::query(
                    "UPDATE devices SET presence_public_key = $2, presence_established_at = now(), \
                     updated_at = now() WHERE serial = $1 AND presence_public_key IS NULL",
                )
                .bind(serial.as_i64())
                .bind(spki)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    drop(tx);
                    return Err(refused(
                        db,
                        u,
                        meta,
                        serial,
                        operation_id,
                        sub,
                        PresenceError::EstablishedMeanwhile,
                    )
                    .await);
                }
            }
            audit::record(
                &mut tx,
                AuditEvent::new("presence.verified")
                    .actor(u)
                    .from_client(meta)
                    .target("device", serial)
                    .details(json!({
                        "operation_id": operation_id,
                        "challenge_id": sub.challenge_id,
                        "agent_key": row.agent_key_fingerprint,
                        "established": established.is_some(),
                    })),
            )
            .await?;
            tx.commit().await?;
            let purpose = if row.purpose == "resume" {
                Purpose::Resume
            } else {
                Purpose::Authorize
            };
            Ok(Proven {
                operation_id: row.operation_id,
                purpose,
                request: row.request,
                fingerprint: row.agent_key_fingerprint,
            })
        }
        Err(e) => Err(refused(db, u, meta, serial, operation_id, sub, e).await),
    }
}

async fn refused(
    db: &PgPool,
    u: &CurrentUser,
    meta: &ClientMeta,
    serial: Serial,
    operation_id: Uuid,
    sub: &PresenceSubmission,
    e: PresenceError,
) -> PresenceError {
    if e.is_refusal() {
        let event = AuditEvent::new("presence.refused")
            .actor(u)
            .from_client(meta)
            .target("device", serial)
            .details(json!({
                "operation_id": operation_id,
                "challenge_id": sub.challenge_id,
                "reason": e.to_string(),
            }));
        if let Err(a) = audit::record_alone(db, event).await {
            tracing::error!(error = %a, "could not audit a refused presence proof");
        }
    }
    e
}

/// Everything [`verify`] checks; the challenge and, for a factory card, the
/// presence key to record (DER SPKI).
async fn check(
    db: &PgPool,
    ctx: &FleetContext,
    u: &CurrentUser,
    serial: Serial,
    operation_id: Uuid,
    sub: &PresenceSubmission,
) -> Result<(ChallengeRow, Option<Vec<u8>>), PresenceError> {
    // Single use: the first proof posted for a challenge consumes it, right
    // or wrong.
    let row: Option<ChallengeRow> = sqlx::query_as(
        "UPDATE presence_challenges SET used_at = now() WHERE id = $1 AND used_at IS NULL \
         RETURNING operation_id, device_serial, purpose, request, user_id, session_id, \
         agent_key_fingerprint, nonce, establish, expires_at",
    )
    .bind(sub.challenge_id)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        let exists: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM presence_challenges WHERE id = $1")
                .bind(sub.challenge_id)
                .fetch_optional(db)
                .await?;
        return Err(match exists {
            Some(_) => PresenceError::Replayed,
            None => PresenceError::NoChallenge(sub.challenge_id),
        });
    };
    if row.operation_id != operation_id || row.device_serial != serial.as_i64() {
        return Err(PresenceError::WrongOperation);
    }
    if row.user_id != u.user_id || row.session_id != u.session_id {
        return Err(PresenceError::OtherSession);
    }
    if row.expires_at <= OffsetDateTime::now_utc() {
        return Err(PresenceError::Expired);
    }
    let (_, fingerprint) = agent::session_key(db, u).await?;
    if fingerprint != row.agent_key_fingerprint {
        return Err(PresenceError::AgentKeyChanged);
    }
    if sub.proof.agent_key_fingerprint != row.agent_key_fingerprint {
        return Err(PresenceError::WrongAgentKey);
    }
    let signature = B64
        .decode(&sub.proof.signature)
        .ok()
        .and_then(|der| Signature::from_der(&der).ok())
        .ok_or(PresenceError::Malformed(
            "signature is not a base64 DER ECDSA P-256 signature",
        ))?;
    let (key, established) = if row.establish {
        let (key, spki, _) = attested_key(ctx, serial, &sub.proof)?;
        (key, Some(spki))
    } else {
        let spki = presence_key(db, serial)
            .await?
            .ok_or(PresenceError::NotEstablished(serial))?;
        let key = VerifyingKey::from_public_key_der(&spki)
            .map_err(|_| anyhow::anyhow!("the recorded presence key of {serial} does not parse"))?;
        (key, None)
    };
    let digest = presence_digest(&row.nonce, &row.operation_id, &row.agent_key_fingerprint);
    key.verify_prehash(&digest, &signature)
        .map_err(|_| PresenceError::BadSignature)?;
    Ok((row, established))
}

/// A factory card's new presence key: P-256, attested by the card with
/// this serial under the configured attestation roots, PIN and touch policy
/// never.
pub(super) fn attested_key(
    ctx: &FleetContext,
    serial: Serial,
    proof: &PresenceProof,
) -> Result<(VerifyingKey, Vec<u8>, attestation::Attested), PresenceError> {
    let (Some(pem), Some(chain)) = (&proof.public_key_pem, &proof.attestation_chain_pem) else {
        return Err(PresenceError::Malformed(
            "a new presence key needs public_key_pem and attestation_chain_pem",
        ));
    };
    let spki = pem_body(pem).ok_or(PresenceError::Malformed("public_key_pem is not PEM"))?;
    let key = VerifyingKey::from_public_key_der(&spki)
        .map_err(|_| PresenceError::Malformed("the presence key is not a P-256 public key"))?;
    if ctx.attestation_roots.0.is_empty() {
        return Err(PresenceError::Attestation(
            "no attestation roots are configured (attestation.roots_file)".into(),
        ));
    }
    let attested = attestation::verify(&ctx.attestation_roots, chain, serial.get(), &spki)
        .map_err(|e| PresenceError::Attestation(e.to_string()))?;
    if attested.pin_policy != Some(PinPolicy::Never)
        || attested.touch_policy != Some(TouchPolicy::Never)
    {
        return Err(PresenceError::Attestation(
            "a presence key must have PIN policy never and touch policy never".into(),
        ));
    }
    Ok((key, spki, attested))
}

/// The DER inside one PEM block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let b64: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    B64.decode(b64).ok()
}

/// Remove challenges that can no longer be answered, a day after their
/// expiry (the operations' expiry sweep calls it).
pub async fn prune(db: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM presence_challenges WHERE expires_at < now() - interval '1 day'")
        .execute(db)
        .await
        .map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_operations_that_send_a_secret_need_presence() {
        assert!(!needs_presence(Operation::Reset));
        assert!(!needs_presence(Operation::Attest));
        assert!(!needs_presence(Operation::ProvePresence));
        for op in [
            Operation::SetPin,
            Operation::SetPuk,
            Operation::UnblockPin,
            Operation::RotateManagementKey,
            Operation::GenerateCsr,
            Operation::ImportCertificate,
        ] {
            assert!(needs_presence(op), "{op:?}");
        }
    }

    #[test]
    fn a_pem_body_is_its_base64_der() {
        let pem = "-----BEGIN PUBLIC KEY-----\nAQID\n-----END PUBLIC KEY-----\n";
        assert_eq!(pem_body(pem).unwrap(), vec![1, 2, 3]);
        assert!(pem_body("-----BEGIN X-----\n!!\n-----END X-----").is_none());
    }
}
