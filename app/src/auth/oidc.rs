//! OIDC sign-in (issue 18 §1): authorization code with PKCE, state and
//! nonce, discovery and JWKS rotation, through the `openidconnect` crate.
//!
//! - [`Oidc::start`] makes the authorization URL and the *pending sign-in*:
//!   state, nonce, PKCE verifier and where to go afterwards, sealed
//!   (AES-256-GCM, key in OpenBao at `kleidia/oidc`) into a short-lived
//!   `SameSite=Lax` cookie, so it is bound to this browser and never stored.
//! - [`Oidc::finish`] checks the callback: the cookie opens and is fresh, the
//!   `state` matches it, the code is exchanged with the PKCE verifier, and
//!   the id_token's signature (provider JWKS), issuer, audience, expiry and
//!   nonce are verified by `openidconnect`. A signature by a key the cached
//!   JWKS lacks fetches the provider's keys again (rotation), at most every
//!   `oidc.jwks_refresh_min_secs`. The groups claim maps to a role
//!   (`oidc.role_map`); nobody without a mapped group gets in, and nothing
//!   is created for them. The account is tied to `(issuer, sub)` and made at
//!   the first sign-in; a username already used by another account (the
//!   local break-glass admin, say) is refused, never taken over.
//! - Every refusal is audited (`login.failed`, `via: "oidc"`, a `reason`)
//!   when the browser carried a pending sign-in; a callback without one
//!   acts for nobody and is only logged.
//! - [`run_rechecks`] re-checks every OIDC session with the provider's token
//!   endpoint (refresh-token grant) at most `oidc.recheck_secs` after the
//!   sign-in or the last check (plus up to [`RECHECK_TICK_MAX`] for the
//!   loop's tick). A refused refresh (account disabled or removed at the
//!   provider, grant revoked) or a refreshed id_token without a mapped group
//!   ends the session (`session.ended_by_idp`). A provider that cannot be
//!   reached ends nothing: the check is tried again on the next tick, and the
//!   session still ends at its idle and absolute timeouts.
//! - Local accounts (the break-glass admin) keep signing in with their
//!   password whether or not the provider answers: nothing on that path
//!   talks to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreIdToken, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    SignatureVerificationError, TokenResponse,
};
use rand::RngCore;
use ring::aead;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::audit::{self, AuditEvent, ClientMeta};
use crate::config::{Config, OidcConfig};
use crate::db::oidc::{self as store, NewOidcUser};
use crate::db::sessions::{self, NewSession};
use crate::db::users::{self, UserRow};
use crate::domain::{DisplayName, EmailAddress, Role, SessionKind, Username};
use crate::error::AppError;
use crate::vault::{kv, Bao, BaoError};

/// Where the sealing key lives in the app's KV v2 mount.
pub const KEY_PATH: &str = "kleidia/oidc";
/// The pending sign-in cookie.
pub const PENDING_COOKIE: &str = "kleidia_oidc";
/// How long a started sign-in may take at the provider.
pub const PENDING_TTL_SECS: i64 = 600;
/// The re-check loop wakes at least this often.
pub const RECHECK_TICK_MAX: Duration = Duration::from_secs(15);

const AAD_PENDING: &[u8] = b"kleidia-oidc-pending-v1";
const AAD_REFRESH: &[u8] = b"kleidia-oidc-refresh-v1";

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// AES-256-GCM with a random nonce per message: `nonce ‖ ciphertext ‖ tag`.
struct Sealer(aead::LessSafeKey);

impl Sealer {
    fn new(key: &[u8]) -> Option<Self> {
        let k = aead::UnboundKey::new(&aead::AES_256_GCM, key).ok()?;
        Some(Self(aead::LessSafeKey::new(k)))
    }

    fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut n = [0u8; aead::NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut n);
        let mut buf = plain.to_vec();
        // Sealing in place only fails for messages of gigabytes.
        if self
            .0
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(n),
                aead::Aad::from(aad),
                &mut buf,
            )
            .is_err()
        {
            return Vec::new();
        }
        let mut out = n.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < aead::NONCE_LEN {
            return None;
        }
        let (n, ct) = sealed.split_at(aead::NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(n).ok()?;
        let mut buf = ct.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, aead::Aad::from(aad), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// The sealing key from OpenBao (made on first use, the same for every replica).
pub async fn load_key(bao: &Bao, mount: &str) -> Result<Vec<u8>, BaoError> {
    let mut fresh = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    let stored = kv::get_or_create(
        bao,
        mount,
        KEY_PATH,
        json!({"algorithm": "AES-256-GCM", "key": STANDARD.encode(fresh)}),
    )
    .await?;
    stored
        .get("key")
        .and_then(|k| k.as_str())
        .and_then(|k| STANDARD.decode(k).ok())
        .filter(|k| k.len() == 32)
        .ok_or_else(|| BaoError::Unexpected {
            path: format!("{mount}/data/{KEY_PATH}"),
            message: "the OIDC sealing key is missing or not 32 bytes".into(),
        })
}

/// What the pending sign-in cookie holds (sealed).
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    expires: i64,
}

/// The callback's query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// A refused sign-in: `reason` goes to the audit log, `message` to the person.
#[derive(Debug)]
pub struct Refused {
    pub reason: &'static str,
    pub message: &'static str,
    /// Whether the browser carried a pending sign-in (the refusal is audited).
    pub audited: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("sign-in refused: {}", .0.reason)]
    Refused(Refused),
    /// Discovery, JWKS or token endpoint unreachable.
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<sqlx::Error> for OidcError {
    fn from(e: sqlx::Error) -> Self {
        OidcError::App(e.into())
    }
}

pub struct SignedIn {
    pub user: UserRow,
    pub session_id: Uuid,
    pub next: String,
}

struct Discovered {
    client: Arc<Client>,
    fetched: Instant,
}

pub struct Oidc {
    cfg: OidcConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: reqwest::Client,
    sealer: Sealer,
    discovered: RwLock<Option<Discovered>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer.as_str())
            .finish_non_exhaustive()
    }
}

fn refused(reason: &'static str, message: &'static str) -> OidcError {
    OidcError::Refused(Refused {
        reason,
        message,
        audited: true,
    })
}

impl Oidc {
    /// `None` when `oidc.issuer` is unset. Talks to nobody: discovery
    /// happens at the first sign-in, so the app starts while the IdP is down.
    pub fn new(config: &Config, key: &[u8]) -> anyhow::Result<Option<Self>> {
        let cfg = &config.oidc;
        let Some(issuer) = &cfg.issuer else {
            return Ok(None);
        };
        // The issuer as configured, without the trailing slash `Url` adds to
        // a bare host (it must equal the id_token's `iss` exactly).
        let issuer_s = issuer.as_str();
        let issuer_s = if issuer.path() == "/" {
            issuer_s.trim_end_matches('/')
        } else {
            issuer_s
        };
        let redirect = config
            .server
            .public_url
            .join("auth/oidc/callback")
            .map_err(|e| anyhow::anyhow!("oidc redirect URI: {e}"))?;
        let http = reqwest::Client::builder()
            // openidconnect's advice against SSRF: never follow redirects.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(cfg.timeout_secs.max(1)))
            .build()?;
        Ok(Some(Self {
            cfg: cfg.clone(),
            issuer: IssuerUrl::new(issuer_s.to_string())?,
            redirect: RedirectUrl::from_url(redirect),
            http,
            sealer: Sealer::new(key)
                .ok_or_else(|| anyhow::anyhow!("the OIDC sealing key is not 32 bytes"))?,
            discovered: RwLock::new(None),
        }))
    }

    pub fn display_name(&self) -> &str {
        &self.cfg.display_name
    }

    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    async fn discover(&self) -> Result<Arc<Client>, OidcError> {
        let meta = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| OidcError::Unreachable(format!("discovery: {e}")))?;
        let secret = self
            .cfg
            .client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.expose_secret().to_string()));
        let client = CoreClient::from_provider_metadata(
            meta,
            ClientId::new(self.cfg.client_id.clone()),
            secret,
        )
        .set_redirect_uri(self.redirect.clone());
        let client = Arc::new(client);
        *self.discovered.write().await = Some(Discovered {
            client: client.clone(),
            fetched: Instant::now(),
        });
        Ok(client)
    }

    /// The discovered client (discovery and JWKS fetched once, then cached).
    async fn client(&self) -> Result<Arc<Client>, OidcError> {
        if let Some(d) = self.discovered.read().await.as_ref() {
            return Ok(d.client.clone());
        }
        self.discover().await
    }

    /// After an id_token signed by an unknown key: the provider's keys
    /// again, unless they were fetched less than `jwks_refresh_min_secs` ago.
    async fn rediscover(&self) -> Result<Option<Arc<Client>>, OidcError> {
        let recent = self.discovered.read().await.as_ref().is_some_and(|d| {
            d.fetched.elapsed() < Duration::from_secs(self.cfg.jwks_refresh_min_secs)
        });
        if recent {
            return Ok(None);
        }
        tracing::info!(issuer = %self.issuer.as_str(), "id_token key not in the cached JWKS; fetching the provider's keys again");
        self.discover().await.map(Some)
    }

    /// The authorization URL and the sealed pending sign-in for the cookie.
    pub async fn start(&self, next: String) -> Result<(url::Url, String), OidcError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in &self.cfg.scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            next,
            expires: OffsetDateTime::now_utc().unix_timestamp() + PENDING_TTL_SECS,
        };
        let plain = serde_json::to_vec(&pending).map_err(|e| AppError::Internal(e.into()))?;
        let cookie = URL_SAFE_NO_PAD.encode(self.sealer.seal(AAD_PENDING, &plain));
        Ok((url, cookie))
    }

    fn open_pending(&self, cookie: Option<&str>) -> Option<Pending> {
        let sealed = URL_SAFE_NO_PAD.decode(cookie?).ok()?;
        let plain = self.sealer.open(AAD_PENDING, &sealed)?;
        serde_json::from_slice(&plain).ok()
    }

    /// Check the callback and sign the person in (a browser session).
    /// Refusals are audited here.
    pub async fn finish(
        &self,
        db: &PgPool,
        config: &Config,
        cookie: Option<&str>,
        cb: Callback,
        meta: &ClientMeta,
    ) -> Result<SignedIn, OidcError> {
        let Some(pending) = self.open_pending(cookie) else {
            tracing::warn!(
                "OIDC callback without a pending sign-in in this browser; refused, not audited"
            );
            return Err(OidcError::Refused(Refused {
                reason: "no_pending_sign_in",
                message: "This sign-in was not started in this browser, or it took too long. Start again.",
                audited: false,
            }));
        };
        match self.finish_pending(db, config, pending, cb, meta).await {
            Err(OidcError::Refused(r)) if r.audited => {
                audit_refusal(db, None, "(oidc)", r.reason, meta).await?;
                Err(OidcError::Refused(r))
            }
            Err(OidcError::Unreachable(e)) => {
                audit_refusal(db, None, "(oidc)", "idp_unreachable", meta).await?;
                Err(OidcError::Unreachable(e))
            }
            other => other,
        }
    }

    async fn finish_pending(
        &self,
        db: &PgPool,
        config: &Config,
        pending: Pending,
        cb: Callback,
        meta: &ClientMeta,
    ) -> Result<SignedIn, OidcError> {
        if pending.expires < OffsetDateTime::now_utc().unix_timestamp() {
            return Err(refused(
                "pending_sign_in_expired",
                "This sign-in took too long. Start again.",
            ));
        }
        // Digests compared, so the comparison's time tells nothing about the state.
        let digest = |s: &str| sha2::Sha256::digest(s.as_bytes());
        let state_ok = cb
            .state
            .as_deref()
            .is_some_and(|s| digest(s) == digest(&pending.state));
        if !state_ok {
            return Err(refused(
                "state_mismatch",
                "This answer from the identity provider does not belong to the sign-in started in this browser.",
            ));
        }
        if let Some(e) = &cb.error {
            tracing::info!(error = %e.chars().take(100).collect::<String>(), "the identity provider refused the sign-in");
            return Err(refused(
                "idp_refused",
                "The identity provider did not sign you in.",
            ));
        }
        let Some(code) = cb.code else {
            return Err(refused(
                "no_code",
                "The identity provider's answer has no authorization code.",
            ));
        };
        let client = self.client().await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| OidcError::Unreachable(format!("token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => {
                    tracing::warn!(error = %r.error(), "the token endpoint refused the code");
                    refused(
                        "code_refused",
                        "The identity provider refused this sign-in's code.",
                    )
                }
                e => OidcError::Unreachable(format!("token endpoint: {e}")),
            })?;
        let Some(id_token) = token.id_token() else {
            return Err(refused(
                "no_id_token",
                "The identity provider sent no id_token.",
            ));
        };
        let nonce = Nonce::new(pending.nonce);
        let claims = self.verify(&client, id_token, Some(&nonce)).await?;
        let refresh = token.refresh_token().map(|t| t.secret().clone());
        let signed_in = self
            .sign_in(db, config, &claims, refresh.as_deref(), meta)
            .await?;
        Ok(SignedIn {
            next: pending.next,
            ..signed_in
        })
    }

    /// Verify an id_token (signature by the provider's JWKS, fetched again
    /// once for an unknown key; issuer, audience, expiry; the nonce when
    /// given) and return its claims as JSON.
    async fn verify(
        &self,
        client: &Client,
        id_token: &CoreIdToken,
        nonce: Option<&Nonce>,
    ) -> Result<Value, OidcError> {
        let check = |c: &Client| {
            let verifier = c.id_token_verifier();
            match nonce {
                Some(n) => id_token.claims(&verifier, n).map(|_| ()),
                None => id_token
                    .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                    .map(|_| ()),
            }
        };
        let mut res = check(client);
        if matches!(
            res,
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey
            ))
        ) {
            if let Some(fresh) = self.rediscover().await? {
                res = check(&fresh);
            }
        }
        if let Err(e) = res {
            tracing::warn!(error = %e, "id_token refused");
            return Err(match e {
                ClaimsVerificationError::Expired(_) => refused(
                    "id_token_expired",
                    "The identity provider's token has expired.",
                ),
                ClaimsVerificationError::InvalidNonce(_) => refused(
                    "nonce_mismatch",
                    "The identity provider's token was not issued for this sign-in.",
                ),
                ClaimsVerificationError::SignatureVerification(_) => refused(
                    "bad_signature",
                    "The identity provider's token is not validly signed.",
                ),
                _ => refused(
                    "id_token_invalid",
                    "The identity provider's token is not valid for Kleidia.",
                ),
            });
        }
        // The payload of the token verified above, for the claims Kleidia
        // maps (groups, username) that the core claims type does not carry.
        let jwt = id_token.to_string();
        let payload = jwt
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
            .ok_or_else(|| {
                refused(
                    "id_token_invalid",
                    "The identity provider's token is malformed.",
                )
            })?;
        Ok(payload)
    }

    /// The role the groups in `claims` map to, if any.
    fn role_of(&self, claims: &Value) -> (Option<Role>, Vec<String>) {
        let groups: Vec<String> = match claims.get(&self.cfg.groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        let mapped: Vec<Role> = groups
            .iter()
            .filter_map(|g| self.cfg.role_map.get(g).copied())
            .collect();
        let role = Role::ALL.into_iter().find(|r| mapped.contains(r));
        (role, groups.into_iter().take(50).collect())
    }

    async fn sign_in(
        &self,
        db: &PgPool,
        config: &Config,
        claims: &Value,
        refresh_token: Option<&str>,
        meta: &ClientMeta,
    ) -> Result<SignedIn, OidcError> {
        let str_claim = |k: &str| claims.get(k).and_then(Value::as_str);
        let Some(sub) = str_claim("sub") else {
            return Err(refused(
                "id_token_invalid",
                "The identity provider's token names nobody.",
            ));
        };
        let wanted_name = str_claim(&self.cfg.username_claim).unwrap_or(sub);
        let (role, groups) = self.role_of(claims);
        let Some(role) = role else {
            audit_refusal_with(
                db,
                None,
                wanted_name,
                "no_mapped_group",
                json!({"groups": groups}),
                meta,
            )
            .await?;
            return Err(OidcError::Refused(Refused {
                reason: "no_mapped_group",
                message: "Your account at the identity provider is in no group that has access to Kleidia. Ask an administrator.",
                audited: false,
            }));
        };
        let display = str_claim("name")
            .and_then(|n| DisplayName::parse(n).ok())
            .or_else(|| DisplayName::parse(wanted_name).ok());
        let email = EmailAddress::parse_optional(str_claim("email"))
            .ok()
            .flatten();
        let issuer = self.issuer.as_str();

        let mut tx = db.begin().await?;
        let existing = store::by_identity_for_update(&mut tx, issuer, sub).await?;
        let (user, created) = match existing {
            Some(u) if u.disabled => {
                tx.rollback().await?;
                audit_refusal(db, Some(u.id), &u.username, "disabled", meta).await?;
                return Err(OidcError::Refused(Refused {
                    reason: "disabled",
                    message: "Your Kleidia account is disabled. Ask an administrator.",
                    audited: false,
                }));
            }
            Some(u) => {
                let display = display.unwrap_or_else(|| {
                    DisplayName::parse(&u.display_name).unwrap_or_else(|_| fallback_name())
                });
                store::update_from_idp(&mut *tx, u.id, role, &display, email.as_ref()).await?;
                (u, false)
            }
            None => {
                let Ok(username) = Username::parse(wanted_name) else {
                    tx.rollback().await?;
                    audit_refusal(db, None, wanted_name, "invalid_username", meta).await?;
                    return Err(OidcError::Refused(Refused {
                        reason: "invalid_username",
                        message: "Your name at the identity provider cannot be a Kleidia username. Ask an administrator.",
                        audited: false,
                    }));
                };
                let display = display.unwrap_or_else(fallback_name);
                let inserted = store::insert_user(
                    &mut tx,
                    NewOidcUser {
                        username: &username,
                        display_name: &display,
                        email: email.as_ref(),
                        role,
                        issuer,
                        subject: sub,
                    },
                )
                .await?;
                let Some(u) = inserted else {
                    tx.rollback().await?;
                    audit_refusal(db, None, username.as_str(), "username_taken", meta).await?;
                    return Err(OidcError::Refused(Refused {
                        reason: "username_taken",
                        message: "Another Kleidia account already has your username. Ask an administrator.",
                        audited: false,
                    }));
                };
                audit::record(
                    &mut tx,
                    AuditEvent::new("user.created")
                        .actor_named(Some(u.id), &u.username)
                        .target("user", u.id)
                        .details(json!({"via": "oidc", "role": role.as_str(), "groups": groups}))
                        .from_client(meta),
                )
                .await?;
                (u, true)
            }
        };
        if !created && user.role != role {
            audit::record(
                &mut tx,
                AuditEvent::new("user.role_changed")
                    .actor_named(Some(user.id), &user.username)
                    .target("user", user.id)
                    .details(json!({"via": "oidc", "from": user.role.as_str(),
                                    "to": role.as_str(), "groups": groups}))
                    .from_client(meta),
            )
            .await?;
        }
        users::record_login(&mut *tx, user.id).await?;
        let session_id = sessions::create(
            &mut *tx,
            NewSession {
                user_id: user.id,
                kind: SessionKind::Browser,
                idle: Duration::from_secs(config.session.idle_timeout_secs),
                absolute: Duration::from_secs(config.session.absolute_timeout_secs),
                ip: meta.ip.as_deref(),
                user_agent: meta.user_agent.as_deref(),
            },
        )
        .await?;
        let sealed = refresh_token.map(|t| self.sealer.seal(AAD_REFRESH, t.as_bytes()));
        store::insert_session(
            &mut *tx,
            session_id,
            user.id,
            sealed.as_deref(),
            self.cfg.recheck_secs,
        )
        .await?;
        audit::record(
            &mut tx,
            AuditEvent::new("login.ok")
                .actor_named(Some(user.id), &user.username)
                .target("session", session_id)
                .details(json!({"via": "oidc", "role": role.as_str(), "created": created}))
                .from_client(meta),
        )
        .await?;
        tx.commit().await?;
        let mut user = user;
        user.role = role;
        Ok(SignedIn {
            user,
            session_id,
            next: String::new(),
        })
    }

    /// Check the due OIDC sessions once. Returns how many ended.
    pub async fn recheck_due(&self, db: &PgPool) -> Result<u64, OidcError> {
        let mut ended = 0;
        for id in store::due(db, 200).await? {
            if self.recheck_one(db, id).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// `Ok(true)`: the session was ended.
    async fn recheck_one(&self, db: &PgPool, session_id: Uuid) -> Result<bool, OidcError> {
        let mut tx = db.begin().await?;
        let Some(row) = store::lock_due(&mut tx, session_id).await? else {
            return Ok(false);
        };
        let retry = RECHECK_TICK_MAX.as_secs().min(self.cfg.recheck_secs);
        let refresh = row
            .refresh_token
            .as_deref()
            .and_then(|s| self.sealer.open(AAD_REFRESH, s))
            .and_then(|p| String::from_utf8(p).ok());
        let Some(refresh) = refresh else {
            end_session(&mut tx, &row, "no_refresh_token", json!({})).await?;
            tx.commit().await?;
            return Ok(true);
        };
        let client = match self.client().await {
            Ok(c) => c,
            Err(OidcError::Unreachable(e)) => {
                tracing::warn!(error = %e, session = %session_id, "OIDC re-check postponed: the provider cannot be reached");
                store::checked(&mut *tx, session_id, None, retry).await?;
                tx.commit().await?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let rt = RefreshToken::new(refresh);
        let answer = match client.exchange_refresh_token(&rt) {
            Ok(req) => req.request_async(&self.http).await,
            Err(e) => {
                tracing::warn!(error = %e, "the provider has no token endpoint");
                store::checked(&mut *tx, session_id, None, retry).await?;
                tx.commit().await?;
                return Ok(false);
            }
        };
        let token = match answer {
            Ok(t) => t,
            Err(RequestTokenError::ServerResponse(r)) => {
                let error = match r.error() {
                    CoreErrorResponseType::InvalidGrant => "invalid_grant".to_string(),
                    other => other.to_string(),
                };
                end_session(
                    &mut tx,
                    &row,
                    "refresh_refused",
                    json!({"error": error.chars().take(64).collect::<String>()}),
                )
                .await?;
                tx.commit().await?;
                return Ok(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, session = %session_id, "OIDC re-check postponed: the token endpoint cannot be reached");
                store::checked(&mut *tx, session_id, None, retry).await?;
                tx.commit().await?;
                return Ok(false);
            }
        };
        if let Some(id_token) = token.id_token() {
            let claims = match self.verify(&client, id_token, None).await {
                Ok(c) => c,
                Err(OidcError::Refused(r)) => {
                    end_session(&mut tx, &row, r.reason, json!({})).await?;
                    tx.commit().await?;
                    return Ok(true);
                }
                Err(e) => return Err(e),
            };
            let sub = claims.get("sub").and_then(Value::as_str);
            if sub != row.oidc_subject.as_deref() {
                end_session(&mut tx, &row, "subject_changed", json!({})).await?;
                tx.commit().await?;
                return Ok(true);
            }
            let (role, groups) = self.role_of(&claims);
            match role {
                None => {
                    end_session(&mut tx, &row, "no_mapped_group", json!({"groups": groups}))
                        .await?;
                    tx.commit().await?;
                    return Ok(true);
                }
                Some(r) if r != row.role => {
                    store::set_role(&mut *tx, row.user_id, r).await?;
                    audit::record(
                        &mut tx,
                        AuditEvent::new("user.role_changed")
                            .actor_named(Some(row.user_id), &row.username)
                            .target("user", row.user_id)
                            .details(json!({"via": "oidc_recheck", "from": row.role.as_str(),
                                            "to": r.as_str(), "groups": groups})),
                    )
                    .await?;
                }
                Some(_) => {}
            }
        }
        let sealed = token
            .refresh_token()
            .map(|t| self.sealer.seal(AAD_REFRESH, t.secret().as_bytes()));
        store::checked(
            &mut *tx,
            session_id,
            sealed.as_deref(),
            self.cfg.recheck_secs,
        )
        .await?;
        tx.commit().await?;
        Ok(false)
    }
}

#[allow(clippy::expect_used)] // a literal that DisplayName accepts
fn fallback_name() -> DisplayName {
    DisplayName::parse("OIDC user").expect("literal display name is valid")
}

async fn end_session(
    tx: &mut sqlx::PgConnection,
    row: &store::DueSession,
    reason: &str,
    details: Value,
) -> Result<(), sqlx::Error> {
    sessions::delete(&mut *tx, row.session_id).await?;
    let mut d = json!({"reason": reason});
    if let (Some(m), Value::Object(extra)) = (d.as_object_mut(), details) {
        m.extend(extra);
    }
    audit::record(
        tx,
        AuditEvent::new("session.ended_by_idp")
            .actor_named(Some(row.user_id), &row.username)
            .target("session", row.session_id)
            .details(d),
    )
    .await?;
    tracing::info!(session = %row.session_id, user = %row.username, reason, "OIDC session ended after the re-check with the provider");
    Ok(())
}

async fn audit_refusal(
    db: &PgPool,
    user: Option<Uuid>,
    name: &str,
    reason: &str,
    meta: &ClientMeta,
) -> Result<(), sqlx::Error> {
    audit_refusal_with(db, user, name, reason, json!({}), meta).await
}

async fn audit_refusal_with(
    db: &PgPool,
    user: Option<Uuid>,
    name: &str,
    reason: &str,
    extra: Value,
    meta: &ClientMeta,
) -> Result<(), sqlx::Error> {
    let mut d = json!({"reason": reason, "via": "oidc"});
    if let (Some(m), Value::Object(extra)) = (d.as_object_mut(), extra) {
        m.extend(extra);
    }
    let name: String = name.chars().take(64).collect();
    audit::record_alone(
        db,
        AuditEvent::new("login.failed")
            .actor_named(user, &name)
            .details(d)
            .from_client(meta),
    )
    .await?;
    Ok(())
}

/// The background re-check of OIDC sessions (spawned by `startup`).
pub async fn run_rechecks(oidc: Arc<Oidc>, db: PgPool) {
    let every = Duration::from_secs(oidc.cfg.recheck_secs.max(1)).min(RECHECK_TICK_MAX);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match oidc.recheck_due(&db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "OIDC sessions ended by the provider"),
            Err(e) => tracing::warn!(error = %e, "OIDC session re-check failed"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_purpose_and_untouched() {
        let s = Sealer::new(&[7u8; 32]).unwrap();
        let sealed = s.seal(AAD_REFRESH, b"refresh-token-value");
        assert!(!sealed
            .windows(b"refresh-token-value".len())
            .any(|w| w == b"refresh-token-value"));
        assert_eq!(
            s.open(AAD_REFRESH, &sealed).unwrap(),
            b"refresh-token-value"
        );
        assert!(s.open(AAD_PENDING, &sealed).is_none());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(s.open(AAD_REFRESH, &bad).is_none());
        let other = Sealer::new(&[8u8; 32]).unwrap();
        assert!(other.open(AAD_REFRESH, &sealed).is_none());
        assert!(s.open(AAD_REFRESH, b"short").is_none());
    }

    #[test]
    fn the_first_mapped_role_in_privilege_order_wins_and_no_mapped_group_is_none() {
        let mut config = Config::default();
        config.oidc.issuer = Some(url::Url::parse("http://127.0.0.1:1").unwrap());
        config.oidc.role_map = [
            ("ops".to_string(), Role::Helpdesk),
            ("staff".to_string(), Role::User),
            ("root".to_string(), Role::Admin),
        ]
        .into_iter()
        .collect();
        let o = Oidc::new(&config, &[1u8; 32]).unwrap().unwrap();
        assert_eq!(o.issuer(), "http://127.0.0.1:1");
        let role = |v: Value| o.role_of(&v).0;
        assert_eq!(
            role(json!({"groups": ["staff", "ops"]})),
            Some(Role::Helpdesk)
        );
        assert_eq!(
            role(json!({"groups": ["root", "staff"]})),
            Some(Role::Admin)
        );
        assert_eq!(role(json!({"groups": "staff"})), Some(Role::User));
        assert_eq!(role(json!({"groups": ["Root", "other"]})), None);
        assert_eq!(role(json!({"groups": 5})), None);
        assert_eq!(role(json!({})), None);
    }
}
