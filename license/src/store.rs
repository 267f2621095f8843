//! The service's state in OpenBao KV v2, under `<mount>/data/kleidia/…`:
//!
//! - `kleidia/installation`: installation id and creation time (= trial
//!   start), created once with `cas=0` so concurrent first starts agree;
//! - `kleidia/clock`: the latest time any replica has seen (high-water mark),
//!   only ever raised, with check-and-set;
//! - `kleidia/licenses`: every accepted upload, oldest first; the last one is
//!   the license in force. One document, so an upload is one atomic
//!   check-and-set write and history and current license cannot disagree.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::StatusCode;
use secrecy::{ExposeSecret as _, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "kleidia";
const CAS_RETRIES: usize = 16;
/// The high-water mark is written when it trails the clock by more than this.
const CLOCK_STEP_SECS: i64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Installation {
    pub installation_id: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Clock {
    pub high_water: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredLicense {
    /// The document exactly as uploaded.
    pub document: String,
    pub sha256: String,
    pub uploaded_at: i64,
    pub uploaded_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Licenses {
    pub entries: Vec<StoredLicense>,
}

#[derive(Clone)]
pub struct KvStore {
    http: reqwest::Client,
    addr: String,
    token: SecretString,
    mount: String,
}

enum CasWrite {
    Written,
    Conflict,
}

impl KvStore {
    pub fn new(addr: &str, token: SecretString, mount: &str, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("build HTTP client for OpenBao")?;
        Ok(Self {
            http,
            addr: addr.trim_end_matches('/').to_string(),
            token,
            mount: mount.to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{}/data/{PREFIX}/{path}", self.addr, self.mount)
    }

    /// Read a secret's data and version; `None` when it does not exist.
    async fn read<T: DeserializeOwned>(&self, path: &str) -> Result<Option<(T, u64)>> {
        let resp = self
            .http
            .get(self.url(path))
            .header("X-Vault-Token", self.token.expose_secret())
            .send()
            .await
            .with_context(|| format!("OpenBao unreachable at {}", self.addr))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            bail!(
                "OpenBao refused reading {}/{PREFIX}/{path}: {}",
                self.mount,
                bao_error(status, resp).await
            );
        }
        #[derive(Deserialize)]
        struct Outer<T> {
            data: Inner<T>,
        }
        #[derive(Deserialize)]
        struct Inner<T> {
            data: Option<T>,
            metadata: Meta,
        }
        #[derive(Deserialize)]
        struct Meta {
            version: u64,
        }
        let outer: Outer<T> = resp
            .json()
            .await
            .with_context(|| format!("unexpected OpenBao answer for {PREFIX}/{path}"))?;
        // A deleted (soft-deleted) latest version has no data.
        Ok(outer.data.data.map(|d| (d, outer.data.metadata.version)))
    }

    /// Write `data` if the secret is still at version `cas` (0: does not exist).
    async fn write_cas<T: Serialize>(&self, path: &str, data: &T, cas: u64) -> Result<CasWrite> {
        let body = serde_json::json!({ "options": { "cas": cas }, "data": data });
        let resp = self
            .http
            .post(self.url(path))
            .header("X-Vault-Token", self.token.expose_secret())
            .json(&body)
            .send()
            .await
            .with_context(|| format!("OpenBao unreachable at {}", self.addr))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(CasWrite::Written);
        }
        let msg = bao_error(status, resp).await;
        if status == StatusCode::BAD_REQUEST && msg.contains("check-and-set") {
            return Ok(CasWrite::Conflict);
        }
        if status == StatusCode::NOT_FOUND || msg.contains("no handler for route") {
            bail!(
                "OpenBao has no KV v2 mount {:?}: run `kleidia bootstrap`, or `bao secrets enable -path={} kv-v2`",
                self.mount,
                self.mount
            );
        }
        bail!(
            "OpenBao refused writing {}/{PREFIX}/{path}: {msg}",
            self.mount
        )
    }

    /// The installation, created on first call. Replicas starting together
    /// race on `cas=0`; the loser reads the winner's id.
    pub async fn installation(&self, candidate: Installation) -> Result<Installation> {
        for _ in 0..CAS_RETRIES {
            if let Some((inst, _)) = self.read::<Installation>("installation").await? {
                return Ok(inst);
            }
            match self.write_cas("installation", &candidate, 0).await? {
                CasWrite::Written => {
                    // Read back: a soft-deleted earlier version would make
                    // cas=0 fail, not succeed, so what we wrote is what is there.
                    if let Some((inst, _)) = self.read::<Installation>("installation").await? {
                        return Ok(inst);
                    }
                }
                CasWrite::Conflict => continue,
            }
        }
        Err(anyhow!(
            "could not create or read the installation id in OpenBao"
        ))
    }

    /// Raise the stored high-water mark to `now` when it is more than a
    /// minute behind (so a busy service does not write on every request);
    /// returns the stored value after the call (which may be later than `now`).
    pub async fn raise_clock(&self, now: i64) -> Result<i64> {
        for _ in 0..CAS_RETRIES {
            let (current, version) = match self.read::<Clock>("clock").await? {
                Some((c, v)) => (c.high_water, v),
                None => (i64::MIN, 0),
            };
            if current.saturating_add(CLOCK_STEP_SECS) >= now {
                return Ok(current);
            }
            match self
                .write_cas("clock", &Clock { high_water: now }, version)
                .await?
            {
                CasWrite::Written => return Ok(now),
                CasWrite::Conflict => continue,
            }
        }
        Err(anyhow!(
            "could not update the clock high-water mark in OpenBao"
        ))
    }

    pub async fn licenses(&self) -> Result<Licenses> {
        Ok(self
            .read::<Licenses>("licenses")
            .await?
            .map(|(l, _)| l)
            .unwrap_or_default())
    }

    /// Append an accepted license (one check-and-set write). Returns false,
    /// writing nothing, when `entry` is already the current license.
    pub async fn append_license(&self, entry: StoredLicense) -> Result<bool> {
        for _ in 0..CAS_RETRIES {
            let (mut list, version) = self.read::<Licenses>("licenses").await?.unwrap_or_default();
            if list.entries.last().map(|e| &e.sha256) == Some(&entry.sha256) {
                return Ok(false);
            }
            list.entries.push(entry.clone());
            match self.write_cas("licenses", &list, version).await? {
                CasWrite::Written => return Ok(true),
                CasWrite::Conflict => continue,
            }
        }
        Err(anyhow!(
            "could not store the license in OpenBao (too many concurrent writes)"
        ))
    }

    /// Whether OpenBao answers and the token can read our data.
    pub async fn ping(&self) -> Result<()> {
        self.read::<Installation>("installation").await.map(|_| ())
    }
}

async fn bao_error(status: StatusCode, resp: reqwest::Response) -> String {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<Errors>(&text) {
        Ok(e) if !e.errors.is_empty() => format!("{status}: {}", e.errors.join("; ")),
        _ => status.to_string(),
    }
}
