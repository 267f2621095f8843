//! The OpenBao layout Kleidia needs (DESIGN §4), as data: the PIV signing
//! roles, the sign request the app sends through them, and the policies of
//! the app and the license service. `bootstrap` puts it in place.

use serde_json::{json, Value};

use crate::config::OpenBaoConfig;

/// Extended key usage OID for Microsoft smart card logon.
pub const OID_SMARTCARD_LOGON: &str = "1.3.6.1.4.1.311.20.2.2";
/// otherName OID for the Windows user principal name (UPN).
pub const OID_UPN: &str = "1.3.6.1.4.1.311.20.2.3";

/// Roles on the intermediate mount that sign PIV certificates. OpenBao roles
/// carry one key family each, so EC (P-256, P-384) and RSA (2048) keys get a
/// role each; Kleidia's own policy check picks the exact curve or size.
pub const ROLE_PIV_EC: &str = "piv-ec";
pub const ROLE_PIV_RSA: &str = "piv-rsa";

pub const POLICY_APP: &str = "kleidia-app";
pub const POLICY_LICENSE: &str = "kleidia-license";
/// The transit key that MACs the audit anchor.
pub const AUDIT_KEY: &str = "kleidia-audit";

/// Longest a PIV certificate may live; Kleidia's policy may ask for less.
pub const PIV_MAX_TTL: u64 = 365 * 24 * 3600;

/// The PIV signing roles. Names in the certificate come from Kleidia's request
/// (`common_name`, `alt_names`, `other_sans`), never from the CSR. In OpenBao
/// `exclude_cn_from_sans` is a parameter of the sign request, not of the role:
/// every sign call passes it (see [`piv_sign_request`]).
pub fn piv_roles() -> Vec<(&'static str, Value)> {
    let common = |key_type: &str, key_bits: u64, usage: &[&str]| {
        json!({
            "key_type": key_type,
            "key_bits": key_bits,
            "key_usage": usage,
            "ext_key_usage": ["ClientAuth"],
            "ext_key_usage_oids": [OID_SMARTCARD_LOGON],
            "use_csr_common_name": false,
            "use_csr_sans": false,
            // Kleidia's CN is a person's name, not a hostname or address.
            "cn_validations": ["disabled"],
            "allow_any_name": true,
            "allow_localhost": false,
            "enforce_hostnames": false,
            "allow_ip_sans": false,
            "allowed_uri_sans": [],
            "allowed_other_sans": [format!("{OID_UPN};UTF8:*")],
            "allow_wildcard_certificates": false,
            "server_flag": false,
            "client_flag": true,
            "code_signing_flag": false,
            "email_protection_flag": false,
            "basic_constraints_valid_for_non_ca": false,
            "require_cn": true,
            "ttl": PIV_MAX_TTL,
            "max_ttl": PIV_MAX_TTL,
            "no_store": false,
            "generate_lease": false,
        })
    };
    vec![
        (
            ROLE_PIV_EC,
            common("ec", 256, &["DigitalSignature", "KeyAgreement"]),
        ),
        (
            ROLE_PIV_RSA,
            common("rsa", 2048, &["DigitalSignature", "KeyEncipherment"]),
        ),
    ]
}

/// The body of a `pki_int/sign/<role>` request for a PIV certificate: the CSR
/// contributes only its public key.
pub fn piv_sign_request(
    csr_pem: &str,
    common_name: &str,
    emails: &[&str],
    upn: Option<&str>,
    ttl_secs: u64,
) -> Value {
    let mut body = json!({
        "csr": csr_pem,
        "common_name": common_name,
        "exclude_cn_from_sans": true,
        "format": "pem",
        "ttl": format!("{}s", ttl_secs.min(PIV_MAX_TTL)),
    });
    // `other_sans` is a list (one element, one name). OpenBao takes
    // `alt_names` only as a comma-separated string: the addresses are
    // checked before they get here (`EmailAddress::is_valid`, no comma can
    // pass), so each is exactly one name.
    if !emails.is_empty() {
        body["alt_names"] = json!(emails.join(","));
    }
    if let Some(u) = upn {
        body["other_sans"] = json!([format!("{OID_UPN};UTF8:{u}")]);
    }
    body
}

/// Least privilege for the app: its own KV paths, the YubiKey escrow, signing
/// through the PIV roles and revocation. No `sys/`, no `sign-verbatim`, no
/// root CA, no license mount, no delete or destroy of escrowed versions.
pub fn app_policy(m: &OpenBaoConfig) -> String {
    let kv = &m.kv_mount;
    let app = &m.app_mount;
    let int = &m.pki_mount;
    let transit = &m.transit_mount;
    format!(
        r#"# Managed by `kleidia bootstrap`. Kleidia server (app) policy.
path "{kv}/data/*" {{
  capabilities = ["create", "read", "update"]
}}
path "{kv}/metadata/*" {{
  capabilities = ["read", "list"]
}}
path "{app}/data/kleidia/*" {{
  capabilities = ["create", "read", "update"]
}}
path "{app}/metadata/kleidia/*" {{
  capabilities = ["read", "list"]
}}
path "{int}/sign/{ROLE_PIV_EC}" {{
  capabilities = ["create", "update"]
}}
path "{int}/sign/{ROLE_PIV_RSA}" {{
  capabilities = ["create", "update"]
}}
path "{int}/revoke" {{
  capabilities = ["create", "update"]
}}
path "{int}/crl/rotate" {{
  capabilities = ["read"]
}}
path "{int}/cert/*" {{
  capabilities = ["read"]
}}
path "{int}/roles/*" {{
  capabilities = ["read"]
}}
# The audit anchor: MAC and check with the key, never read or export it.
path "{transit}/hmac/{AUDIT_KEY}" {{
  capabilities = ["update"]
}}
path "{transit}/verify/{AUDIT_KEY}" {{
  capabilities = ["update"]
}}
"#
    )
}

/// The license service: its own KV mount only.
pub fn license_policy(m: &OpenBaoConfig) -> String {
    let lic = &m.license_mount;
    format!(
        r#"# Managed by `kleidia bootstrap`. Kleidia license service policy.
path "{lic}/data/kleidia/*" {{
  capabilities = ["create", "read", "update"]
}}
path "{lic}/metadata/kleidia/*" {{
  capabilities = ["read", "list"]
}}
"#
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_app_policy_may_only_mac_and_verify_with_the_audit_key() {
        let p = app_policy(&OpenBaoConfig::default());
        assert!(p.contains("\"transit/hmac/kleidia-audit\""), "{p}");
        assert!(p.contains("\"transit/verify/kleidia-audit\""), "{p}");
        assert_eq!(p.matches("transit/").count(), 2, "{p}");
        for never in [
            "transit/keys",
            "transit/export",
            "transit/backup",
            "transit/*",
        ] {
            assert!(!p.contains(never), "{never} in {p}");
        }
    }

    #[test]
    fn the_app_policy_grants_nothing_under_sys_sign_verbatim_or_the_license_mount() {
        let p = app_policy(&OpenBaoConfig::default());
        assert!(!p.contains("\"sys/"), "{p}");
        assert!(!p.contains("sign-verbatim"), "{p}");
        assert!(!p.contains("\"license/"), "{p}");
        assert!(!p.contains("delete") && !p.contains("destroy") && !p.contains("sudo"));
    }

    #[test]
    fn piv_roles_never_take_names_from_the_csr() {
        for (_, r) in piv_roles() {
            assert_eq!(r["use_csr_common_name"], json!(false));
            assert_eq!(r["use_csr_sans"], json!(false));
            assert!(r["max_ttl"].as_u64().unwrap() <= PIV_MAX_TTL);
        }
    }
}
