//! Vendor commands: `issue` and `inspect` (`keygen` is in `keys`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use ed25519_dalek::VerifyingKey;
use kleidia_protocol::license::{LicenseLimits, LicensePayload};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use crate::document::{self, DocumentError};
use crate::service::fmt_time;

/// Parse `2027-01-31` (midnight UTC at the start of that day), RFC 3339, or
/// `@<unix seconds>`.
pub fn parse_time(s: &str) -> Result<OffsetDateTime> {
    if let Some(secs) = s.strip_prefix('@') {
        let n: i64 = secs
            .parse()
            .with_context(|| format!("{s:?} is not @<unix seconds>"))?;
        return OffsetDateTime::from_unix_timestamp(n)
            .with_context(|| format!("{s:?} is out of range"));
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let d = Date::parse(s, format_description!("[year]-[month]-[day]"))
        .with_context(|| format!("{s:?} is neither YYYY-MM-DD nor RFC 3339"))?;
    Ok(d.midnight().assume_utc())
}

pub struct IssueRequest {
    pub license_id: Option<String>,
    pub customer: String,
    pub installation_id: String,
    pub issued_at: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub max_users: u32,
    pub max_devices: u32,
    pub features: Vec<String>,
}

/// Sign a license with the key in `key_file` and write it to `out`
/// (refusing to overwrite). Returns the payload.
pub fn issue(key_file: &Path, req: IssueRequest, out: &Path) -> Result<LicensePayload> {
    let key = crate::keys::load_signing_key(key_file)?;
    let mut features = req.features;
    features.sort();
    features.dedup();
    let payload = LicensePayload {
        license_id: req
            .license_id
            .unwrap_or_else(|| format!("KL-{}", uuid::Uuid::new_v4().simple())),
        customer: req.customer,
        installation_id: req.installation_id,
        issued_at: req.issued_at.unix_timestamp(),
        not_after: req.not_after.unix_timestamp(),
        limits: LicenseLimits {
            max_users: req.max_users,
            max_devices: req.max_devices,
        },
        features,
    };
    let text = document::sign(&payload, &key)?;
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("create {} (it must not exist yet)", out.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {}", out.display()))?;
    Ok(payload)
}

/// Human-readable description of a payload.
pub fn describe(p: &LicensePayload) -> String {
    let features = if p.features.is_empty() {
        "-".to_string()
    } else {
        p.features.join(", ")
    };
    format!(
        "license id:      {}\ncustomer:        {}\ninstallation id: {}\nissued:          {}\nnot after:       {}\nmax users:       {}\nmax devices:     {}\nfeatures:        {}\n",
        p.license_id,
        p.customer,
        p.installation_id,
        fmt_time(p.issued_at),
        fmt_time(p.not_after),
        p.limits.max_users,
        p.limits.max_devices,
        features
    )
}

/// What `inspect` found: the text to print and whether the signature verifies.
pub struct Inspection {
    pub text: String,
    pub verified: bool,
}

pub fn inspect(file: &Path, key: &VerifyingKey, key_name: &str) -> Result<Inspection> {
    let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let payload = match document::peek_unverified(&bytes) {
        Ok(p) => p,
        Err(e) => bail!("{}: {e}", file.display()),
    };
    let mut text = describe(&payload);
    text.push_str(&format!(
        "payload json:    {}\n",
        serde_json::to_string(&payload)?
    ));
    let verified = match document::verify(&bytes, key) {
        Ok(_) => {
            text.push_str(&format!("signature:       VALID ({key_name})\n"));
            true
        }
        Err(DocumentError::BadSignature) => {
            text.push_str(&format!(
                "signature:       DOES NOT VERIFY ({key_name}): altered, or signed by another key\n"
            ));
            false
        }
        Err(e) => {
            text.push_str(&format!("signature:       not checked: {e}\n"));
            false
        }
    };
    Ok(Inspection { text, verified })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_as_utc_midnight_or_rfc3339() {
        assert_eq!(
            parse_time("2027-01-31").unwrap().unix_timestamp(),
            1_801_353_600
        );
        assert_eq!(
            parse_time("2027-01-31T12:00:00+01:00")
                .unwrap()
                .unix_timestamp(),
            1_801_353_600 + 11 * 3600
        );
        assert_eq!(
            parse_time("@1801353600").unwrap().unix_timestamp(),
            1_801_353_600
        );
        assert!(parse_time("31/01/2027").is_err());
        assert!(parse_time("@soon").is_err());
    }

    #[test]
    fn an_issued_file_inspects_as_valid_with_its_key_and_not_with_another() {
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = crate::keys::keygen(&dir.path().join("a")).unwrap();
        let (_, other) = crate::keys::keygen(&dir.path().join("b")).unwrap();
        let out = dir.path().join("lic.json");
        let req = IssueRequest {
            license_id: Some("L-7".into()),
            customer: "Acme".into(),
            installation_id: "inst".into(),
            issued_at: parse_time("2026-01-01").unwrap(),
            not_after: parse_time("2027-01-01").unwrap(),
            max_users: 3,
            max_devices: 4,
            features: vec!["b".into(), "a".into(), "b".into()],
        };
        let payload = issue(&k, req, &out).unwrap();
        assert_eq!(payload.features, vec!["a".to_string(), "b".to_string()]);
        let good = crate::keys::load_verifying_key(&p).unwrap();
        let i = inspect(&out, &good, "test").unwrap();
        assert!(i.verified, "{}", i.text);
        assert!(i.text.contains("Acme") && i.text.contains("max devices:     4"));
        let bad = crate::keys::load_verifying_key(&other).unwrap();
        let i = inspect(&out, &bad, "test").unwrap();
        assert!(!i.verified);
        assert!(i.text.contains("DOES NOT VERIFY"));
    }

    #[test]
    fn issuing_never_overwrites_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let (k, _) = crate::keys::keygen(dir.path()).unwrap();
        let out = dir.path().join("lic.json");
        std::fs::write(&out, "keep").unwrap();
        let req = IssueRequest {
            license_id: None,
            customer: "Acme".into(),
            installation_id: "inst".into(),
            issued_at: parse_time("2026-01-01").unwrap(),
            not_after: parse_time("2027-01-01").unwrap(),
            max_users: 1,
            max_devices: 1,
            features: vec![],
        };
        assert!(issue(&k, req, &out).is_err());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep");
    }
}
