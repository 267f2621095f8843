//! The calls vaultrs has no (working) function for, made through vaultrs'
//! own request layer (a rustify `Endpoint` run with vaultrs' middleware, so
//! the token, API version and error mapping are the same as for every other
//! call). Kept in this one module:
//!
//! - `sys/health`: vaultrs 0.7's `ReadHealthResponse` requires fields OpenBao
//!   does not send (`performance_standby`), and only the status code matters;
//! - `auth/token/lookup-self`: vaultrs 0.7's `LookupTokenResponse` requires
//!   `issue_time` and `renewable`, which OpenBao leaves out for the root
//!   token of an initialised (non-dev) server, so that lookup failed there;
//! - public PKI files (`<mount>/ca`, `/crl`, `/ca_chain`, `…/pem`): not JSON;
//! - JSON on any path (`read`, `write`, `list`, `delete`) for endpoints that
//!   vaultrs' typed requests cannot express (PKI issuers, role fields such as
//!   `allowed_other_sans`, mount tuning, CRL auto-rebuild settings).

use rustify::endpoint::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use rustify::errors::ClientError as RestError;
use serde_json::Value;
use vaultrs::client::Client as _;

use crate::client::{OpenBao, Session};
use crate::error::Error;

/// One request: method, path (below `/v1/`), query, JSON body.
struct Raw {
    method: RequestMethod,
    path: String,
    query: Option<String>,
    body: Option<Vec<u8>>,
}

impl Endpoint for Raw {
    type Response = Value;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.path.clone()
    }

    fn method(&self) -> RequestMethod {
        self.method.clone()
    }

    fn query(&self) -> Result<Option<String>, RestError> {
        Ok(self.query.clone())
    }

    fn body(&self) -> Result<Option<Vec<u8>>, RestError> {
        Ok(self.body.clone())
    }
}

impl Raw {
    /// `path` may carry a query (`secret/data/x?version=3`).
    fn new(method: RequestMethod, path: &str, body: Option<&Value>) -> Self {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (path, None),
        };
        Raw {
            method,
            path: path.trim_matches('/').to_string(),
            query,
            body: body.map(|b| b.to_string().into_bytes()),
        }
    }

    async fn send(self, session: &Session) -> Result<Vec<u8>, RestError> {
        let result = self
            .with_middleware(session.middle())
            .exec(session.http())
            .await?;
        Ok(result.raw())
    }
}

fn parse(path: &str, body: &[u8]) -> Result<Value, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| Error::unexpected(path, e))
}

fn path_only(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

/// `auth/token/lookup-self`'s `data`, as far as Kleidia reads it; every
/// field may be missing.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct SelfLookup {
    #[serde(default)]
    pub(crate) accessor: String,
    #[serde(default)]
    pub(crate) policies: Vec<String>,
    /// Seconds left; 0 for a token that does not expire.
    #[serde(default)]
    pub(crate) ttl: u64,
    #[serde(default)]
    pub(crate) renewable: bool,
    #[serde(default)]
    pub(crate) display_name: String,
    /// `None` for a token that never expires; set, with `ttl` 0, for one
    /// that expires within the second.
    #[serde(default)]
    pub(crate) expire_time: Option<String>,
}

/// Look up the session's own token (`auth/token/lookup-self`).
pub(crate) async fn lookup_self(session: &Session) -> Result<SelfLookup, Error> {
    let path = "auth/token/lookup-self";
    let body = Raw::new(RequestMethod::GET, path, None)
        .send(session)
        .await
        .map_err(|e| Error::from_rest(session.addr(), path, e))?;
    let v = parse(path, &body)?;
    match v.get("data") {
        Some(data) if !data.is_null() => {
            serde_json::from_value(data.clone()).map_err(|e| Error::unexpected(path, e))
        }
        _ => Err(Error::unexpected(path, "no data in the answer")),
    }
}

/// An answer of [`OpenBao::post_public`], as OpenBao sent it.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub body: Vec<u8>,
}

/// `sys/health` as Kleidia reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ready,
    Sealed,
    Uninitialized,
    Standby,
}

impl OpenBao {
    /// GET `path` (below `/v1/`, may carry `?query`); the whole answer
    /// (`{"data": …, …}`), or `None` on 404.
    pub async fn read(&self, path: &str) -> Result<Option<Value>, Error> {
        let p = path_only(path);
        let r = self
            .call(p, |s| async move {
                Raw::new(RequestMethod::GET, path, None).send(&s).await
            })
            .await;
        match r {
            Ok(body) => parse(p, &body).map(Some),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// LIST `path`: the keys, or none on 404.
    pub async fn list(&self, path: &str) -> Result<Vec<String>, Error> {
        let r = self
            .call(path, |s| async move {
                Raw::new(RequestMethod::LIST, path, None).send(&s).await
            })
            .await;
        let body = match r {
            Ok(body) => parse(path, &body)?,
            Err(Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(body
            .pointer("/data/keys")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// POST `body` to `path`; the answer, `Null` when empty (204).
    pub async fn write(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let p = path_only(path);
        let body = self
            .call(p, |s| async move {
                Raw::new(RequestMethod::POST, path, Some(body))
                    .send(&s)
                    .await
            })
            .await?;
        parse(p, &body)
    }

    /// DELETE `path`; a missing path counts as deleted.
    pub async fn delete(&self, path: &str) -> Result<(), Error> {
        let r = self
            .call(path, |s| async move {
                Raw::new(RequestMethod::DELETE, path, None).send(&s).await
            })
            .await;
        match r {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// GET an unauthenticated endpoint's raw bytes without a token (CA
    /// certificates and CRLs: `pki/ca`, `pki/crl/pem`, …); `None` on 404 or
    /// an empty answer.
    pub async fn fetch_public(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let r = Raw::new(RequestMethod::GET, path, None)
            .send(&self.anonymous())
            .await
            .map_err(|e| Error::from_rest(self.addr_str(), path_only(path), e));
        match r {
            Ok(body) => Ok((!body.is_empty()).then_some(body)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// POST raw bytes to an unauthenticated endpoint (the PKI OCSP responder,
    /// `<mount>/ocsp`) without a token, through vaultrs' transport (same
    /// connection pool and TLS settings), and hand back its answer
    /// uninterpreted whatever the status, unless it is OpenBao's own JSON
    /// error (sealed, down, …), which maps to [`Error`].
    pub async fn post_public(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<RawAnswer, Error> {
        use rustify::client::Client as _;
        let p = path_only(path);
        let url = format!("{}/v1/{}", self.addr_str(), path.trim_start_matches('/'));
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(url)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| Error::unexpected(p, e))?;
        let session = self.anonymous();
        let response = session
            .http()
            .send(request)
            .await
            .map_err(|e| Error::from_rest(self.addr_str(), p, e))?;
        let header = |name: http::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let content_type = header(http::header::CONTENT_TYPE);
        let cache_control = header(http::header::CACHE_CONTROL);
        let status = response.status().as_u16();
        let body = response.into_body();
        if !(200..300).contains(&status)
            && content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json"))
        {
            let message = crate::error::error_message(std::str::from_utf8(&body).ok());
            return Err(Error::from_status(self.addr_str(), p, status, message));
        }
        Ok(RawAnswer {
            status,
            content_type,
            cache_control,
            body,
        })
    }

    /// `sys/health`, without a token.
    pub async fn health(&self) -> Result<Health, Error> {
        let path = "sys/health";
        let r = Raw::new(RequestMethod::GET, path, None)
            .send(&self.anonymous())
            .await;
        match r {
            Ok(_) => Ok(Health::Ready),
            Err(RestError::ServerResponseError { code, content }) => match code {
                429 | 472 | 473 => Ok(Health::Standby),
                501 => Ok(Health::Uninitialized),
                503 => Ok(Health::Sealed),
                _ => Err(Error::from_rest(
                    self.addr_str(),
                    path,
                    RestError::ServerResponseError { code, content },
                )),
            },
            Err(e) => Err(Error::from_rest(self.addr_str(), path, e)),
        }
    }

    /// `sys/leader`, without a token: the active node's API address as
    /// this node sees it, or `None` while no node is active (an election)
    /// or HA is off. A standby that knows its leader forwards every request
    /// to it, so a client talking to that standby is served.
    pub async fn leader(&self) -> Result<Option<String>, Error> {
        let path = "sys/leader";
        let body = Raw::new(RequestMethod::GET, path, None)
            .send(&self.anonymous())
            .await
            .map_err(|e| Error::from_rest(self.addr_str(), path, e))?;
        let v = parse(path, &body)?;
        Ok(v["leader_address"]
            .as_str()
            .filter(|a| !a.is_empty())
            .map(str::to_string))
    }
}
