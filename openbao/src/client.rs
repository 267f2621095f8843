//! The client: one HTTP connection pool, the current token behind a lock, and
//! the retry that turns "OpenBao forgot our token" into one re-login.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustify::clients::reqwest::Client as HttpClient;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Notify;
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::VaultClientSettings;

use crate::auth::{self, Lease};
use crate::config::{Auth, Config, Tls};
use crate::error::Error;

/// Kleidia's OpenBao client. Cheap to clone: clones share the connection
/// pool, the token and its renewal.
#[derive(Clone)]
pub struct OpenBao {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) addr: url::Url,
    http: HttpClient,
    settings: VaultClientSettings,
    pub(crate) auth: Auth,
    pub(crate) state: RwLock<TokenState>,
    /// One login at a time; callers that lost the race reuse the winner's token.
    login_lock: tokio::sync::Mutex<()>,
    /// Wakes the renewal task when the token changed under it.
    pub(crate) changed: Arc<Notify>,
    renewer: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut r) = self.renewer.lock() {
            if let Some(h) = r.take() {
                h.abort();
            }
        }
    }
}

/// The current token. `generation` counts logins, so a caller can tell
/// whether the token it was refused with is still the current one.
#[derive(Default)]
pub(crate) struct TokenState {
    pub(crate) token: Option<SecretString>,
    pub(crate) generation: u64,
    /// `None`: the token does not expire (or its lifetime is unknown).
    pub(crate) lease: Option<Lease>,
}

impl std::fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBao")
            .field("addr", &self.inner.addr.as_str())
            .field("auth", &self.inner.auth.method())
            .finish()
    }
}

/// One call's view of the client: the shared HTTP client and a snapshot of
/// the token. This is what vaultrs' functions run on.
pub(crate) struct Session {
    inner: Arc<Inner>,
    middle: EndpointMiddleware,
}

impl vaultrs::client::Client for Session {
    fn http(&self) -> &HttpClient {
        &self.inner.http
    }

    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }

    fn settings(&self) -> &VaultClientSettings {
        &self.inner.settings
    }

    fn set_token(&mut self, token: &str) {
        self.middle.token = token.to_string();
    }
}

impl Session {
    /// The server's address, for error messages.
    pub(crate) fn addr(&self) -> &str {
        self.inner.http.base.as_str()
    }
}

/// Errors of vaultrs and of its request layer, both mapped to [`Error`].
pub(crate) trait IntoError {
    fn into_error(self, addr: &str, path: &str) -> Error;
}

impl IntoError for vaultrs::error::ClientError {
    fn into_error(self, addr: &str, path: &str) -> Error {
        Error::from_client(addr, path, self)
    }
}

impl IntoError for rustify::errors::ClientError {
    fn into_error(self, addr: &str, path: &str) -> Error {
        Error::from_rest(addr, path, self)
    }
}

impl IntoError for Error {
    fn into_error(self, _: &str, _: &str) -> Error {
        self
    }
}

impl OpenBao {
    /// A client for `config`. Nothing is sent yet; with a login method a
    /// background task logs in and keeps the token fresh (it needs a Tokio
    /// runtime; without one, calls still log in on demand). See [`Self::connect`].
    pub fn new(config: Config) -> Result<Self, Error> {
        let reqwest = build_http(&config)?;
        let base = config.addr.as_str().trim_end_matches('/').to_string();
        let settings = VaultClientSettings {
            address: config.addr.clone(),
            ca_certs: Vec::new(),
            identity: None,
            timeout: Some(config.timeout),
            token: String::new(),
            verify: true,
            version: 1,
            wrapping: false,
            namespace: None,
        };
        let with_renewal = config.auth.can_log_in();
        // A fixed token is usable at once; its TTL is learnt by the first
        // (re)login, which the renewal task does right away.
        let state = match &config.auth {
            Auth::Token(t) => TokenState {
                token: Some(t.clone()),
                generation: 0,
                lease: None,
            },
            _ => TokenState::default(),
        };
        let bao = OpenBao {
            inner: Arc::new(Inner {
                addr: config.addr,
                http: HttpClient::new(&base, reqwest),
                settings,
                auth: config.auth,
                state: RwLock::new(state),
                login_lock: tokio::sync::Mutex::new(()),
                changed: Arc::new(Notify::new()),
                renewer: std::sync::Mutex::new(None),
            }),
        };
        if with_renewal {
            bao.start_renewal();
        }
        Ok(bao)
    }

    /// [`Self::new`], then log in once, so bad credentials or an unreachable
    /// OpenBao fail here rather than at the first secret operation.
    pub async fn connect(config: Config) -> Result<Self, Error> {
        let bao = Self::new(config)?;
        if bao.inner.auth.can_log_in() {
            bao.login().await?;
        }
        Ok(bao)
    }

    /// A client for the same server and TLS settings with a fixed token
    /// (a bootstrap token, a test's narrow token). No renewal, no re-login.
    pub fn with_token(&self, token: SecretString) -> Self {
        let inner = &self.inner;
        OpenBao {
            inner: Arc::new(Inner {
                addr: inner.addr.clone(),
                http: HttpClient::new(&inner.http.base, inner.http.http.clone()),
                settings: inner.settings.clone(),
                auth: Auth::Token(token.clone()),
                state: RwLock::new(TokenState {
                    token: Some(token),
                    generation: 1,
                    lease: None,
                }),
                login_lock: tokio::sync::Mutex::new(()),
                changed: Arc::new(Notify::new()),
                renewer: std::sync::Mutex::new(None),
            }),
        }
    }

    pub fn addr(&self) -> &url::Url {
        &self.inner.addr
    }

    /// The configured login method (`token`, `approle`, `jwt`, `none`).
    pub fn auth_method(&self) -> &'static str {
        self.inner.auth.method()
    }

    /// Log in now (again), replacing the current token.
    pub async fn login(&self) -> Result<(), Error> {
        let generation = self.generation();
        self.relogin(generation).await
    }

    /// Seconds left on the current token as last learnt from OpenBao (at login
    /// or renewal); `None` for a token that does not expire or no token yet.
    pub fn token_ttl(&self) -> Option<Duration> {
        let state = self.read_state();
        state
            .lease
            .as_ref()
            .map(|l| l.expires_at().saturating_duration_since(Instant::now()))
    }

    pub(crate) fn addr_str(&self) -> &str {
        self.inner.http.base.as_str()
    }

    pub(crate) fn read_state(&self) -> std::sync::RwLockReadGuard<'_, TokenState> {
        // A panic while holding the lock cannot leave the token half-written
        // (every write replaces whole fields), so a poisoned lock is still usable.
        self.inner
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, TokenState> {
        self.inner
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.read_state().generation
    }

    /// A session with the current token (none for `Auth::None`), logging in
    /// first when there is no token yet.
    pub(crate) async fn session(&self) -> Result<(Session, u64), Error> {
        let (token, generation) = {
            let s = self.read_state();
            (s.token.clone(), s.generation)
        };
        let token = match token {
            Some(t) => Some(t),
            None if self.inner.auth.can_log_in() => {
                self.relogin(generation).await?;
                self.read_state().token.clone()
            }
            None => None,
        };
        let generation = self.generation();
        Ok((self.session_with(token.as_ref()), generation))
    }

    /// A session with no token: login endpoints and public files.
    pub(crate) fn anonymous(&self) -> Session {
        self.session_with(None)
    }

    pub(crate) fn session_with(&self, token: Option<&SecretString>) -> Session {
        Session {
            inner: self.inner.clone(),
            middle: EndpointMiddleware {
                token: token
                    .map(|t| t.expose_secret().to_string())
                    .unwrap_or_default(),
                version: "v1".into(),
                wrap: None,
                namespace: None,
            },
        }
    }

    /// Run `op` with the current token. When OpenBao answers 403 and the token
    /// itself turns out to be no longer valid (expired, revoked, or OpenBao
    /// lost it in a restart), log in again once and retry; a 403 for a valid
    /// token is a real denial and is returned as [`Error::PermissionDenied`].
    pub(crate) async fn call<T, E, F, Fut>(&self, path: &str, op: F) -> Result<T, Error>
    where
        E: IntoError,
        F: Fn(Session) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (session, generation) = self.session().await?;
        let err = match op(session).await {
            Ok(v) => return Ok(v),
            Err(e) => e.into_error(self.addr_str(), path),
        };
        if !matches!(err, Error::PermissionDenied { .. })
            || !self.inner.auth.can_refresh()
            || !self.token_was_rejected(generation).await
        {
            return Err(err);
        }
        tracing::info!(
            path,
            method = self.inner.auth.method(),
            "OpenBao no longer accepts the token; logging in again"
        );
        self.relogin(generation).await?;
        let (session, _) = self.session().await?;
        op(session)
            .await
            .map_err(|e| e.into_error(self.addr_str(), path))
    }

    /// Whether the token of `generation` is what OpenBao refused (rather
    /// than the path): true when it was already replaced, or when OpenBao
    /// also refuses to look the token itself up.
    async fn token_was_rejected(&self, generation: u64) -> bool {
        let token = {
            let s = self.read_state();
            if s.generation != generation {
                return true;
            }
            s.token.clone()
        };
        let session = self.session_with(token.as_ref());
        match crate::raw::lookup_self(&session).await {
            Ok(_) => false,
            Err(e) => matches!(e, Error::PermissionDenied { .. }),
        }
    }

    /// Log in unless someone already replaced the token of `generation`.
    pub(crate) async fn relogin(&self, generation: u64) -> Result<(), Error> {
        let _one_at_a_time = self.inner.login_lock.lock().await;
        if self.generation() != generation {
            return Ok(());
        }
        let fresh = auth::login(self).await?;
        {
            let mut s = self.write_state();
            s.token = Some(fresh.token);
            s.lease = fresh.lease;
            s.generation += 1;
        }
        self.inner.changed.notify_one();
        Ok(())
    }

    fn start_renewal(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "no Tokio runtime: the OpenBao token will not be renewed in the background"
            );
            return;
        };
        let task = handle.spawn(auth::renew_loop(
            Arc::downgrade(&self.inner),
            self.inner.changed.clone(),
        ));
        if let Ok(mut r) = self.inner.renewer.lock() {
            *r = Some(task.abort_handle());
        }
    }
}

/// reqwest on rustls, trusting `ca_file` (plus the system roots if asked)
/// or, without a CA file, the public roots built into the binary.
fn build_http(config: &Config) -> Result<reqwest::Client, Error> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(config.timeout)
        .connect_timeout(config.timeout);
    let Tls {
        ca_file,
        system_roots,
    } = &config.tls;
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read openbao CA file {}: {e}",
                path.display()
            ))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            Error::Config(format!(
                "openbao CA file {} is not PEM: {e}",
                path.display()
            ))
        })?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "openbao CA file {} holds no certificate",
                path.display()
            )));
        }
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if *system_roots {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!("while loading the system trust store: {e}");
        }
        if found.certs.is_empty() {
            return Err(Error::Config(
                "openbao: system_roots is set but the system trust store is empty".into(),
            ));
        }
        for der in found.certs {
            // A store can hold certificates rustls rejects; skip those.
            if let Ok(c) = reqwest::Certificate::from_der(&der) {
                b = b.add_root_certificate(c);
            }
        }
    }
    b.build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client for OpenBao: {e}")))
}
