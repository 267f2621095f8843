//! KV version 2: versioned secrets written with check-and-set.

use serde::de::DeserializeOwned;
use serde::Serialize;
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};

use crate::client::{IntoError as _, OpenBao};
use crate::error::Error;

/// One KV v2 mount. Cheap to create: `bao.kv2("secret")`.
#[derive(Debug, Clone)]
pub struct Kv2 {
    bao: OpenBao,
    mount: String,
}

/// A secret's data with the version it was read at (the `cas` for the next write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub data: T,
    pub version: u64,
    /// RFC 3339, as OpenBao writes it.
    pub created_time: String,
}

/// A secret's versions (dates only, never values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub current_version: u64,
    pub oldest_version: u64,
    /// Oldest first.
    pub versions: Vec<VersionMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMetadata {
    pub version: u64,
    /// RFC 3339.
    pub created_time: String,
    /// RFC 3339 when the version was (soft-)deleted.
    pub deletion_time: Option<String>,
    pub destroyed: bool,
}

/// How many times [`Kv2::get_or_create`] re-reads after losing a race.
const CREATE_ATTEMPTS: usize = 4;

impl OpenBao {
    pub fn kv2(&self, mount: &str) -> Kv2 {
        Kv2 {
            bao: self.clone(),
            mount: mount.trim_matches('/').to_string(),
        }
    }
}

impl Kv2 {
    pub fn mount(&self) -> &str {
        &self.mount
    }

    fn data_path(&self, path: &str) -> String {
        format!("{}/data/{path}", self.mount)
    }

    /// The latest version, or `None` when the secret does not exist or its
    /// latest version is deleted or destroyed.
    pub async fn read<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<Versioned<T>>, Error> {
        self.read_at(path, None).await
    }

    /// One version, or `None` when it does not exist, is deleted or destroyed.
    pub async fn read_version<T: DeserializeOwned>(
        &self,
        path: &str,
        version: u64,
    ) -> Result<Option<Versioned<T>>, Error> {
        self.read_at(path, Some(version)).await
    }

    async fn read_at<T: DeserializeOwned>(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<Versioned<T>>, Error> {
        let full = self.data_path(path);
        let mount = self.mount.as_str();
        let r = self
            .bao
            .call(&full, |s| {
                let full = &full;
                async move {
                    let request = ReadSecretRequest::builder()
                        .mount(mount)
                        .path(path)
                        .version(version)
                        .build()
                        .map_err(|e| Error::unexpected(full, e))?;
                    vaultrs::api::exec_with_result(&s, request)
                        .await
                        .map_err(|e| e.into_error(s.addr(), full))
                }
            })
            .await;
        let secret = match r {
            Ok(s) => s,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if secret.data.is_null() || secret.metadata.destroyed {
            return Ok(None);
        }
        let data = serde_json::from_value(secret.data).map_err(|e| Error::unexpected(&full, e))?;
        Ok(Some(Versioned {
            data,
            version: secret.metadata.version,
            created_time: secret.metadata.created_time,
        }))
    }

    /// Write a new version. With `cas: Some(v)` only if the latest version is
    /// still `v` (`Some(0)`: only if the secret does not exist yet), else
    /// [`Error::CasConflict`]. Returns the new version.
    pub async fn write<T: Serialize + Sync>(
        &self,
        path: &str,
        data: &T,
        cas: Option<u64>,
    ) -> Result<u64, Error> {
        let full = self.data_path(path);
        let cas = cas
            .map(|c| {
                u32::try_from(c)
                    .map(|cas| SetSecretRequestOptions { cas })
                    .map_err(|_| Error::unexpected(&full, format!("cas {c} out of range")))
            })
            .transpose()?;
        let mount = self.mount.as_str();
        let written = self
            .bao
            .call(&full, |s| {
                let cas = cas.clone();
                async move {
                    match cas {
                        Some(options) => {
                            vaultrs::kv2::set_with_options(&s, mount, path, data, options).await
                        }
                        None => vaultrs::kv2::set(&s, mount, path, data).await,
                    }
                }
            })
            .await?;
        Ok(written.version)
    }

    /// The secret as stored, creating it with `candidate` (check-and-set 0)
    /// when it does not exist. Replicas racing to create it all end up with
    /// the one value that won.
    pub async fn get_or_create<T>(&self, path: &str, candidate: &T) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned + Sync,
    {
        for _ in 0..CREATE_ATTEMPTS {
            if let Some(v) = self.read::<T>(path).await? {
                return Ok(v.data);
            }
            match self.write(path, candidate, Some(0)).await {
                // Someone else created it between our read and write.
                Ok(_) | Err(Error::CasConflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::unexpected(
            &self.data_path(path),
            "the secret is missing right after it was written",
        ))
    }

    /// The secret's versions, or `None` when it does not exist.
    pub async fn metadata(&self, path: &str) -> Result<Option<Metadata>, Error> {
        let full = format!("{}/metadata/{path}", self.mount);
        let mount = self.mount.as_str();
        let r = self
            .bao
            .call(&full, |s| async move {
                vaultrs::kv2::read_metadata(&s, mount, path).await
            })
            .await;
        let meta = match r {
            Ok(m) => m,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut versions: Vec<VersionMetadata> = meta
            .versions
            .into_iter()
            .filter_map(|(k, v)| {
                Some(VersionMetadata {
                    version: k.parse().ok()?,
                    created_time: v.created_time,
                    deletion_time: (!v.deletion_time.is_empty()).then_some(v.deletion_time),
                    destroyed: v.destroyed,
                })
            })
            .collect();
        versions.sort_by_key(|v| v.version);
        Ok(Some(Metadata {
            current_version: meta.current_version,
            oldest_version: meta.oldest_version,
            versions,
        }))
    }

    /// Keys below `path` (folders end in `/`); none when nothing is there.
    pub async fn list(&self, path: &str) -> Result<Vec<String>, Error> {
        let full = format!("{}/metadata/{path}", self.mount);
        let mount = self.mount.as_str();
        let r = self
            .bao
            .call(&full, |s| async move {
                vaultrs::kv2::list(&s, mount, path).await
            })
            .await;
        match r {
            Ok(keys) => Ok(keys),
            Err(Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}
