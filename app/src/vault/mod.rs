//! A small OpenBao HTTP client: exactly the calls Kleidia makes, with the
//! token kept in a `SecretString` and OpenBao's error messages surfaced.

pub mod bootstrap;
pub mod kv;
pub mod layout;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum BaoError {
    #[error("OpenBao is unreachable at {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("OpenBao is sealed")]
    Sealed,
    #[error("OpenBao refused {method} {path}: permission denied")]
    Forbidden { method: String, path: String },
    #[error("OpenBao {method} {path} failed with {status}: {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("OpenBao returned an unexpected answer for {path}: {message}")]
    Unexpected { path: String, message: String },
}

impl BaoError {
    /// True when the cause is OpenBao itself being down or sealed (→ 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BaoError::Unreachable { .. } | BaoError::Sealed)
            || matches!(self, BaoError::Api { status, .. } if *status == 503)
    }
}

#[derive(Clone)]
pub struct Bao {
    http: reqwest::Client,
    addr: url::Url,
    token: Option<SecretString>,
}

impl std::fmt::Debug for Bao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bao")
            .field("addr", &self.addr.as_str())
            .finish()
    }
}

/// An answer of [`Bao::post_raw`], as OpenBao sent it.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub body: Vec<u8>,
}

/// Health as reported by `sys/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaoHealth {
    Ready,
    Sealed,
    Uninitialized,
    Standby,
}

impl Bao {
    pub fn new(
        addr: url::Url,
        token: Option<SecretString>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self { http, addr, token })
    }

    pub fn addr(&self) -> &url::Url {
        &self.addr
    }

    /// A client for the same server with another token.
    pub fn with_token(&self, token: SecretString) -> Self {
        Self {
            http: self.http.clone(),
            addr: self.addr.clone(),
            token: Some(token),
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/v1/{}",
            self.addr.as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), BaoError> {
        let mut req = self.http.request(method.clone(), self.url(path));
        if let Some(t) = &self.token {
            req = req.header("X-Vault-Token", t.expose_secret());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|source| BaoError::Unreachable {
            addr: self.addr.to_string(),
            source,
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|source| BaoError::Unreachable {
            addr: self.addr.to_string(),
            source,
        })?;
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, json))
    }

    fn api_error(method: &Method, path: &str, status: StatusCode, body: &Value) -> BaoError {
        if status == StatusCode::FORBIDDEN {
            return BaoError::Forbidden {
                method: method.to_string(),
                path: path.to_string(),
            };
        }
        let message = body
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        if status == StatusCode::SERVICE_UNAVAILABLE && message.contains("sealed") {
            return BaoError::Sealed;
        }
        BaoError::Api {
            method: method.to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            message,
        }
    }

    /// GET; `Ok(None)` on 404.
    pub async fn read(&self, path: &str) -> Result<Option<Value>, BaoError> {
        let (status, body) = self.send(Method::GET, path, None).await?;
        match status {
            s if s.is_success() => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(Self::api_error(&Method::GET, path, s, &body)),
        }
    }

    /// LIST; an empty list on 404.
    pub async fn list(&self, path: &str) -> Result<Vec<String>, BaoError> {
        let m = Method::from_bytes(b"LIST").map_err(|e| BaoError::Unexpected {
            path: path.into(),
            message: e.to_string(),
        })?;
        let (status, body) = self.send(m.clone(), path, None).await?;
        match status {
            s if s.is_success() => Ok(body
                .pointer("/data/keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()),
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            s => Err(Self::api_error(&m, path, s, &body)),
        }
    }

    /// POST with a JSON body; returns the response body (`Null` for 204).
    pub async fn write(&self, path: &str, body: &Value) -> Result<Value, BaoError> {
        let (status, resp) = self.send(Method::POST, path, Some(body)).await?;
        if status.is_success() {
            Ok(resp)
        } else {
            Err(Self::api_error(&Method::POST, path, status, &resp))
        }
    }

    pub async fn delete(&self, path: &str) -> Result<(), BaoError> {
        let (status, resp) = self.send(Method::DELETE, path, None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Self::api_error(&Method::DELETE, path, status, &resp))
        }
    }

    /// GET raw bytes (CA certificates, CRLs); `Ok(None)` on 404 or an empty body.
    pub async fn get_raw(&self, path: &str) -> Result<Option<Vec<u8>>, BaoError> {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|source| BaoError::Unreachable {
                addr: self.addr.to_string(),
                source,
            })?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let body = resp.bytes().await.map_err(|source| BaoError::Unreachable {
            addr: self.addr.to_string(),
            source,
        })?;
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(Self::api_error(&Method::GET, path, status, &v));
        }
        Ok((!body.is_empty()).then(|| body.to_vec()))
    }

    /// POST raw bytes to an unauthenticated endpoint (the OCSP responder) and
    /// hand back its answer uninterpreted, whatever the status, unless it is
    /// OpenBao's own JSON error (sealed, down, …), which maps to [`BaoError`].
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<RawAnswer, BaoError> {
        let resp = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|source| BaoError::Unreachable {
                addr: self.addr.to_string(),
                source,
            })?;
        let status = resp.status();
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let cache_control = header(reqwest::header::CACHE_CONTROL);
        let body = resp.bytes().await.map_err(|source| BaoError::Unreachable {
            addr: self.addr.to_string(),
            source,
        })?;
        if content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json"))
            && !status.is_success()
        {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(Self::api_error(&Method::POST, path, status, &v));
        }
        Ok(RawAnswer {
            status: status.as_u16(),
            content_type,
            cache_control,
            body: body.to_vec(),
        })
    }

    /// `sys/health` without a token; maps OpenBao's status codes.
    pub async fn health(&self) -> Result<BaoHealth, BaoError> {
        let url = self.url("sys/health");
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|source| BaoError::Unreachable {
                addr: self.addr.to_string(),
                source,
            })?;
        Ok(match resp.status().as_u16() {
            200 => BaoHealth::Ready,
            429 | 472 | 473 => BaoHealth::Standby,
            501 => BaoHealth::Uninitialized,
            503 => BaoHealth::Sealed,
            other => {
                return Err(BaoError::Unexpected {
                    path: "sys/health".into(),
                    message: format!("status {other}"),
                })
            }
        })
    }
}
