//! Fleet-wide keys and trust anchors, loaded once at start and shared by
//! every request: the ticket signing key, the attestation roots and the
//! cache of the public PKI documents.

use kleidia_protocol::ticket::TicketSigningKey;
use rand::rngs::OsRng;
use serde_json::{json, Value};

use super::attestation::AttestationRoots;
use super::pki_cache::PkiCache;
use crate::vault::Bao;

pub struct FleetContext {
    pub ticket_key: TicketSigningKey,
    pub attestation_roots: AttestationRoots,
    pub pki_cache: PkiCache,
    /// How long a ticket is valid (`operations.ticket_lifetime_secs`).
    pub ticket_lifetime_secs: i64,
}

impl FleetContext {
    pub fn new(ticket_key: TicketSigningKey, attestation_roots: AttestationRoots) -> Self {
        Self {
            ticket_key,
            attestation_roots,
            pki_cache: PkiCache::default(),
            ticket_lifetime_secs: 90,
        }
    }

    /// Tickets valid for `secs` (at most the protocol's 120 s).
    pub fn with_ticket_lifetime(mut self, secs: u64) -> Self {
        self.ticket_lifetime_secs = i64::try_from(secs)
            .unwrap_or(i64::MAX)
            .min(kleidia_protocol::ticket::TICKET_MAX_LIFETIME_SECS);
        self
    }
}

/// The ticket signing key, shared by every replica through OpenBao
/// (`{app_mount}/data/kleidia/ticket-signing`), created at first start.
pub async fn load_ticket_key(bao: &Bao, app_mount: &str) -> anyhow::Result<TicketSigningKey> {
    use base64::Engine as _;
    let fresh = TicketSigningKey::generate(&mut OsRng);
    let seed = base64::engine::general_purpose::STANDARD.encode(*fresh.to_bytes());
    let stored = crate::vault::kv::get_or_create(
        bao,
        app_mount,
        "kleidia/ticket-signing",
        json!({"ed25519_seed": seed}),
    )
    .await
    .map_err(|e| anyhow::anyhow!("ticket signing key in OpenBao: {e}"))?;
    let b64 = stored
        .get("ed25519_seed")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("kleidia/ticket-signing has no ed25519_seed"))?;
    let raw = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| anyhow::anyhow!("kleidia/ticket-signing is not base64"))?,
    );
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("kleidia/ticket-signing is not 32 bytes"))?;
    Ok(TicketSigningKey::from_bytes(&bytes))
}
