//! The service's state in OpenBao KV v2, under `<mount>/data/kleidia/…`:
//!
//! - `kleidia/installation`: installation id and creation time (= trial
//!   start), created once with `cas=0` so concurrent first starts agree;
//! - `kleidia/clock`: the latest time any replica has seen (high-water mark),
//!   only ever raised, with check-and-set;
//! - `kleidia/licenses`: every accepted upload, oldest first; the last one is
//!   the license in force. One document, so an upload is one atomic
//!   check-and-set write and history and current license cannot disagree.

use anyhow::{anyhow, bail, Context, Result};
use kleidia_openbao::{Error, Kv2, OpenBao};
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
    kv: Kv2,
}

enum CasWrite {
    Written,
    Conflict,
}

impl KvStore {
    /// The store on KV v2 mount `mount`, through the shared OpenBao client.
    pub fn new(bao: &OpenBao, mount: &str) -> Self {
        Self { kv: bao.kv2(mount) }
    }

    /// Read a secret's data and version; `None` when it does not exist.
    async fn read<T: DeserializeOwned>(&self, path: &str) -> Result<Option<(T, u64)>> {
        let full = format!("{PREFIX}/{path}");
        let found = self
            .kv
            .read::<T>(&full)
            .await
            .with_context(|| format!("reading {}/{full} in OpenBao", self.kv.mount()))?;
        // A deleted (soft-deleted) latest version reads as `None`.
        Ok(found.map(|v| (v.data, v.version)))
    }

    /// Write `data` if the secret is still at version `cas` (0: does not exist).
    async fn write_cas<T: Serialize + Sync>(
        &self,
        path: &str,
        data: &T,
        cas: u64,
    ) -> Result<CasWrite> {
        let full = format!("{PREFIX}/{path}");
        match self.kv.write(&full, data, Some(cas)).await {
            Ok(_) => Ok(CasWrite::Written),
            Err(Error::CasConflict { .. }) => Ok(CasWrite::Conflict),
            Err(Error::NotFound { .. }) => bail!(
                "OpenBao has no KV v2 mount {:?}: run `kleidia bootstrap`, or `bao secrets enable -path={} kv-v2`",
                self.kv.mount(),
                self.kv.mount()
            ),
            Err(Error::Other { message, .. }) if message.contains("no handler for route") => bail!(
                "OpenBao has no KV v2 mount {:?}: run `kleidia bootstrap`, or `bao secrets enable -path={} kv-v2`",
                self.kv.mount(),
                self.kv.mount()
            ),
            Err(e) => Err(anyhow!(e))
                .with_context(|| format!("writing {}/{full} in OpenBao", self.kv.mount())),
        }
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
