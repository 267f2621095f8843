//! Short-lived JWTs for API clients.
//!
//! One algorithm, HS256: the tokens are issued and verified by Kleidia only
//! (every replica shares the key through OpenBao), so there is no third party
//! that would need a public key, and a symmetric key keeps the validation to
//! one family — `alg: none`, RS*/ES*/EdDSA and the other HMAC sizes are
//! refused. `exp`, `iat`, `iss`, `aud` and `sub` are required; `sid` names the
//! `user_sessions` row that must still exist, so logout and disabling the
//! account revoke a token at once.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::vault::{kv, Bao, BaoError};

/// Where the signing key lives in the app's KV v2 mount.
pub const KEY_PATH: &str = "kleidia/jwt";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user's id.
    pub sub: String,
    /// The `user_sessions` row this token belongs to.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid token")]
pub struct InvalidToken;

impl JwtKeys {
    pub fn new(secret: &[u8], issuer: String, audience: String, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer,
            audience,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user` on session `sid`, valid from `now` for the TTL.
    pub fn issue(
        &self,
        user: Uuid,
        sid: Uuid,
        now: OffsetDateTime,
    ) -> Result<(String, OffsetDateTime), jsonwebtoken::errors::Error> {
        let exp = now + self.ttl;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.to_string(),
            sid,
            iat: now.unix_timestamp(),
            exp: exp.unix_timestamp(),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, exp))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| {
                tracing::debug!(error = %e, "JWT refused");
                InvalidToken
            })
    }
}

/// The shared signing key: read from OpenBao, created (check-and-set) on the
/// very first start so every replica uses the same one.
pub async fn load_or_create_secret(bao: &Bao, mount: &str) -> Result<Vec<u8>, BaoError> {
    let mut fresh = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    let stored = kv::get_or_create(
        bao,
        mount,
        KEY_PATH,
        json!({"algorithm": "HS256", "key": STANDARD.encode(fresh)}),
    )
    .await?;
    let key = stored
        .get("key")
        .and_then(|k| k.as_str())
        .and_then(|k| STANDARD.decode(k).ok())
        .filter(|k| k.len() >= 32)
        .ok_or_else(|| BaoError::Unexpected {
            path: format!("{mount}/data/{KEY_PATH}"),
            message: "the JWT key is missing or shorter than 32 bytes".into(),
        })?;
    Ok(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(
            &[7u8; 32],
            "http://k.example".into(),
            "kleidia-api".into(),
            Duration::from_secs(600),
        )
    }

    fn forge(
        header: serde_json::Value,
        claims: serde_json::Value,
        key: &[u8],
        alg: Algorithm,
    ) -> String {
        let mut h = Header::new(alg);
        if let Some(t) = header.get("typ") {
            h.typ = t.as_str().map(String::from);
        }
        encode(&h, &claims, &EncodingKey::from_secret(key)).unwrap()
    }

    fn claims(now: i64) -> serde_json::Value {
        json!({"iss": "http://k.example", "aud": "kleidia-api", "sub": Uuid::nil().to_string(),
               "sid": Uuid::nil(), "iat": now, "exp": now + 600})
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let k = keys();
        let now = OffsetDateTime::now_utc();
        let sid = Uuid::new_v4();
        let (t, _) = k.issue(Uuid::nil(), sid, now).unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!(c.sid, sid);
        assert_eq!(c.aud, "kleidia-api");
    }

    #[test]
    fn tokens_with_another_algorithm_audience_issuer_or_past_expiry_are_refused() {
        let k = keys();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let ok = forge(json!({}), claims(now), &[7u8; 32], Algorithm::HS256);
        assert!(k.verify(&ok).is_ok(), "the control token must pass");
        assert!(k
            .verify(&forge(json!({}), claims(now), &[7u8; 32], Algorithm::HS512))
            .is_err());
        let mut c = claims(now);
        c["aud"] = json!("someone-else");
        assert!(k
            .verify(&forge(json!({}), c, &[7u8; 32], Algorithm::HS256))
            .is_err());
        let mut c = claims(now);
        c["iss"] = json!("http://evil.example");
        assert!(k
            .verify(&forge(json!({}), c, &[7u8; 32], Algorithm::HS256))
            .is_err());
        let mut c = claims(now - 7200);
        c["exp"] = json!(now - 3600);
        assert!(k
            .verify(&forge(json!({}), c, &[7u8; 32], Algorithm::HS256))
            .is_err());
        let mut c = claims(now);
        c.as_object_mut().unwrap().remove("iat");
        assert!(k
            .verify(&forge(json!({}), c, &[7u8; 32], Algorithm::HS256))
            .is_err());
        assert!(k
            .verify(&forge(json!({}), claims(now), &[8u8; 32], Algorithm::HS256))
            .is_err());
        // alg: none, unsigned.
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(claims(now))
        );
        assert!(k.verify(&none).is_err());
    }
}
