use super::*;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const SUBJECT: &str = "system:serviceaccount:kleidia:kleidia";
const AUDIENCE: &str = "openbao";

struct ServiceAccountKey {
    /// PKCS#1 DER, what jsonwebtoken signs with.
    private_der: Vec<u8>,
    public_pem: String,
}

fn cluster_key() -> ServiceAccountKey {
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    ServiceAccountKey {
        private_der: key.to_pkcs1_der().unwrap().as_bytes().to_vec(),
        public_pem: key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

/// A token shaped like a projected Kubernetes service-account token.
fn service_account_token(key: &ServiceAccountKey, aud: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": ISSUER,
        "sub": SUBJECT,
        "aud": [aud],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "kubernetes.io": {"namespace": "kleidia", "serviceaccount": {"name": "kleidia"}},
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("test-key".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_der(&key.private_der),
    )
    .unwrap()
}

async fn jwt_server(key: &ServiceAccountKey, ttl: Duration, max_ttl: Duration) -> DevBao {
    let bao = DevBao::start().await;
    let root = bao.root();
    assert!(root.enable_auth("jwt", "jwt").await.unwrap());
    assert!(
        !root.enable_auth("jwt", "jwt").await.unwrap(),
        "enabled twice"
    );
    root.write_jwt_config("jwt", std::slice::from_ref(&key.public_pem), Some(ISSUER))
        .await
        .unwrap();
    root.write_policy("team", TEAM_POLICY).await.unwrap();
    root.write_jwt_role(
        "jwt",
        "kleidia",
        &kleidia_openbao::JwtRole {
            bound_audiences: vec![AUDIENCE.into()],
            bound_subject: Some(SUBJECT.into()),
            user_claim: "sub".into(),
            token: TokenSpec {
                policies: vec!["team".into()],
                ttl,
                max_ttl,
            },
        },
    )
    .await
    .unwrap();
    root.kv2("secret")
        .write("team/p", &pins(5), None)
        .await
        .unwrap();
    bao
}

fn jwt_auth(token_file: std::path::PathBuf) -> Auth {
    Auth::Jwt {
        mount: "jwt".into(),
        role: "kleidia".into(),
        token_file,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_token_logs_in_and_keeps_working_across_expiries() {
    let key = cluster_key();
    let bao = jwt_server(&key, Duration::from_secs(3), Duration::from_secs(6)).await;
    let token_file = bao.file("sa-token", &service_account_token(&key, AUDIENCE));
    let app = OpenBao::connect(bao.config(jwt_auth(token_file.clone())))
        .await
        .unwrap();
    let info = app.token_info().await.unwrap();
    assert!(info.policies.contains(&"team".to_string()), "{info:?}");
    assert_eq!(
        app.kv2("secret")
            .read::<Pins>("team/p")
            .await
            .unwrap()
            .unwrap()
            .data,
        pins(5)
    );

    // The kubelet rotates the projected token; logins read the new one.
    std::fs::write(&token_file, service_account_token(&key, AUDIENCE)).unwrap();
    let seen = keep_reading(&app, "team/p", Duration::from_secs(14)).await;
    let (tokens, _) = tokens_and_longest_use(&seen);
    assert!(
        tokens >= 2,
        "only {tokens} token(s) in 14 s with max TTL 6 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_audience_or_signed_by_another_key_is_refused() {
    let key = cluster_key();
    let bao = jwt_server(&key, Duration::from_secs(60), Duration::from_secs(120)).await;

    let other_aud = bao.file("aud", &service_account_token(&key, "somebody-else"));
    let err = OpenBao::connect(bao.config(jwt_auth(other_aud)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Login { method: "jwt", .. }), "{err:?}");

    let stranger = cluster_key();
    let forged = bao.file("forged", &service_account_token(&stranger, AUDIENCE));
    let err = OpenBao::connect(bao.config(jwt_auth(forged)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Login { method: "jwt", .. }), "{err:?}");
}
