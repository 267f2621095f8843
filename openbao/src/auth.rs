//! Logging in (AppRole, JWT, token file) and keeping the token alive: renew
//! at two thirds of its TTL, log in again when renewal fails, when the token
//! is not renewable, or when renewal stops extending it (max TTL reached).

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Notify;

use crate::client::{Inner, IntoError as _, OpenBao};
use crate::config::Auth;
use crate::error::Error;

/// Renewal and login retries back off between these bounds.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a task with nothing to renew looks again.
const IDLE_RECHECK: Duration = Duration::from_secs(300);

impl Auth {
    /// Whether this method yields a token at all.
    pub(crate) fn can_log_in(&self) -> bool {
        !matches!(self, Auth::None)
    }

    /// Whether logging in again can yield a different token.
    pub(crate) fn can_refresh(&self) -> bool {
        matches!(
            self,
            Auth::TokenFile(_) | Auth::AppRole { .. } | Auth::Jwt { .. }
        )
    }
}

/// What OpenBao said about the token's lifetime.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease {
    /// When `ttl` was learnt.
    pub(crate) obtained: Instant,
    pub(crate) ttl: Duration,
    pub(crate) renewable: bool,
    /// The TTL a renewal gives when max TTL is still far; a renewal that
    /// gives less has hit max TTL, and the next step is a new login.
    pub(crate) full_ttl: Duration,
}

impl Lease {
    fn new(ttl_secs: u64, renewable: bool) -> Option<Self> {
        // TTL 0: a token that never expires (root, or a periodic token's lookup).
        (ttl_secs > 0).then(|| {
            let ttl = Duration::from_secs(ttl_secs);
            Lease {
                obtained: Instant::now(),
                ttl,
                renewable,
                full_ttl: ttl,
            }
        })
    }

    pub(crate) fn expires_at(&self) -> Instant {
        self.obtained + self.ttl
    }

    /// Two thirds into the TTL: late enough not to renew constantly, early
    /// enough that a slow or briefly unavailable OpenBao leaves time to retry.
    fn refresh_at(&self) -> Instant {
        self.obtained + self.ttl * 2 / 3
    }

    fn capped(&self) -> bool {
        self.ttl < self.full_ttl
    }
}

pub(crate) struct Fresh {
    pub(crate) token: SecretString,
    pub(crate) lease: Option<Lease>,
}

fn read_secret(method: &'static str, what: &str, path: &Path) -> Result<SecretString, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Login {
        method,
        message: format!("cannot read the {what} file {}: {e}", path.display()),
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::Login {
            method,
            message: format!("the {what} file {} is empty", path.display()),
        });
    }
    Ok(SecretString::from(text.to_string()))
}

/// A refused login is a login error; OpenBao being down or sealed stays that.
fn login_error(method: &'static str, e: Error) -> Error {
    if e.is_unavailable() {
        e
    } else {
        Error::Login {
            method,
            message: e.to_string(),
        }
    }
}

/// Obtain a token with the configured method (files are read each time).
pub(crate) async fn login(bao: &OpenBao) -> Result<Fresh, Error> {
    let auth = &bao.inner.auth;
    let method = auth.method();
    let fresh = match auth {
        Auth::None => {
            return Err(Error::Config(
                "no OpenBao login method configured (openbao.auth)".into(),
            ))
        }
        Auth::Token(token) => token_lease(bao, token.clone()).await?,
        Auth::TokenFile(path) => {
            let token = read_secret(method, "token", path)?;
            token_lease(bao, token).await?
        }
        Auth::AppRole {
            mount,
            role_id_file,
            secret_id_file,
        } => {
            let role_id = read_secret(method, "role_id", role_id_file)?;
            let secret_id = read_secret(method, "secret_id", secret_id_file)?;
            let path = format!("auth/{mount}/login");
            let info = vaultrs::auth::approle::login(
                &bao.anonymous(),
                mount,
                role_id.expose_secret(),
                secret_id.expose_secret(),
            )
            .await
            .map_err(|e| login_error(method, e.into_error(bao.addr_str(), &path)))?;
            from_auth_info(info)
        }
        Auth::Jwt {
            mount,
            role,
            token_file,
        } => {
            let jwt = read_secret(method, "service-account token", token_file)?;
            let path = format!("auth/{mount}/login");
            let info = vaultrs::auth::oidc::login(
                &bao.anonymous(),
                mount,
                jwt.expose_secret(),
                Some(role.clone()),
            )
            .await
            .map_err(|e| login_error(method, e.into_error(bao.addr_str(), &path)))?;
            from_auth_info(info)
        }
    };
    match &fresh.lease {
        Some(l) => tracing::info!(
            method,
            ttl_secs = l.ttl.as_secs(),
            renewable = l.renewable,
            "logged in to OpenBao"
        ),
        None => tracing::info!(method, "logged in to OpenBao (token without expiry)"),
    }
    Ok(fresh)
}

fn from_auth_info(info: vaultrs::api::AuthInfo) -> Fresh {
    Fresh {
        lease: Lease::new(info.lease_duration, info.renewable),
        token: SecretString::from(info.client_token),
    }
}

/// A given token's lifetime, from `lookup-self`. A token that may not look
/// itself up (no `default` policy) is used as is, without renewal.
async fn token_lease(bao: &OpenBao, token: SecretString) -> Result<Fresh, Error> {
    let session = bao.session_with(Some(&token));
    let lease = match crate::raw::lookup_self(&session).await {
        // Less than a second left (the TTL is rounded down to 0): renew at
        // once rather than take it for a token that never expires.
        Ok(info) if info.ttl == 0 && info.expire_time.is_some() => Some(Lease {
            obtained: Instant::now(),
            ttl: Duration::ZERO,
            renewable: info.renewable,
            full_ttl: Duration::ZERO,
        }),
        Ok(info) => Lease::new(info.ttl, info.renewable),
        Err(e) => match e {
            e if e.is_unavailable() => return Err(e),
            e => {
                tracing::warn!(
                    "cannot look up the OpenBao token's TTL, so it will not be renewed: {e}"
                );
                None
            }
        },
    };
    Ok(Fresh { token, lease })
}

impl OpenBao {
    /// Extend the current token (of `generation`) by its usual TTL.
    pub(crate) async fn renew(&self, generation: u64) -> Result<(), Error> {
        let token = {
            let s = self.read_state();
            if s.generation != generation {
                return Ok(());
            }
            s.token.clone()
        };
        let session = self.session_with(token.as_ref());
        let info = vaultrs::token::renew_self(&session, None)
            .await
            .map_err(|e| e.into_error(self.addr_str(), "auth/token/renew-self"))?;
        let mut s = self.write_state();
        if s.generation == generation {
            let full_ttl = s.lease.map(|l| l.full_ttl);
            s.lease = Lease::new(info.lease_duration, info.renewable).map(|mut l| {
                l.full_ttl = full_ttl.unwrap_or(l.ttl).max(l.ttl);
                l
            });
            tracing::debug!(ttl_secs = info.lease_duration, "renewed the OpenBao token");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Login,
    Renew,
    /// Nothing to do: a token without expiry, or one we cannot refresh.
    Idle,
}

fn plan(bao: &OpenBao) -> (Instant, Step, u64) {
    let now = Instant::now();
    let s = bao.read_state();
    let can_refresh = bao.inner.auth.can_refresh();
    match (&s.token, &s.lease) {
        (None, _) => (now, Step::Login, s.generation),
        // A fixed token not looked up yet: the "login" learns its TTL.
        (Some(_), None) if s.generation == 0 => (now, Step::Login, s.generation),
        (Some(_), None) => (now + IDLE_RECHECK, Step::Idle, s.generation),
        (Some(_), Some(l)) => {
            let step = if l.renewable && !l.capped() {
                Step::Renew
            } else if can_refresh {
                Step::Login
            } else {
                Step::Idle
            };
            let at = if step == Step::Idle {
                now + IDLE_RECHECK
            } else {
                l.refresh_at()
            };
            (at, step, s.generation)
        }
    }
}

/// The background task: sleeps until the next renewal or login is due, does
/// it, and backs off while OpenBao is unavailable. Holds only a weak
/// reference, so it ends with the last clone of the client.
pub(crate) async fn renew_loop(inner: Weak<Inner>, changed: Arc<Notify>) {
    let mut backoff = MIN_BACKOFF;
    let mut not_before: Option<Instant> = None;
    loop {
        let (at, step) = {
            let Some(inner) = inner.upgrade() else { return };
            let (at, step, _) = plan(&OpenBao { inner });
            (not_before.map_or(at, |nb| at.max(nb)), step)
        };
        if step == Step::Idle || at > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = changed.notified() => { not_before = None; continue; }
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let bao = OpenBao { inner };
        // The state may have moved on while we slept: plan again.
        let (at, step, generation) = plan(&bao);
        if step == Step::Idle || at > Instant::now() + Duration::from_millis(50) {
            continue;
        }
        let result = match step {
            Step::Renew => match bao.renew(generation).await {
                Err(e) if !e.is_unavailable() => {
                    tracing::info!("OpenBao refused to renew the token ({e}); logging in again");
                    bao.relogin(generation).await
                }
                r => r,
            },
            Step::Login => bao.relogin(generation).await,
            Step::Idle => Ok(()),
        };
        match result {
            Ok(()) => {
                backoff = MIN_BACKOFF;
                not_before = None;
            }
            Err(e) => {
                tracing::warn!(
                    retry_in_ms = backoff.as_millis() as u64,
                    "could not refresh the OpenBao token: {e}"
                );
                not_before = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
