//! HTTP clients for Kleidia's identity layer: a cookie-aware "browser" that
//! posts forms like a same-origin page, and a Bearer-token API client; plus
//! a helper that starts `kleidia serve` on a fresh database with a first
//! admin created through the CLI.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::HeaderMap;
use reqwest::{redirect, Response, StatusCode};
use serde_json::{json, Value};

use crate::app::{kleidia_command, AppOptions, KleidiaApp};
use crate::{shared_bao, TestDb};

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// `kleidia user create` with the password on stdin; returns stdout.
pub fn cli_create_user(db_url: &str, username: &str, role: &str, password: &str) -> Result<String> {
    let mut child = kleidia_command()
        .args([
            "user",
            "create",
            "--username",
            username,
            "--role",
            role,
            "--password-stdin",
        ])
        .env("KLEIDIA_DATABASE_URL", db_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "user create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A database, the shared OpenBao, and `kleidia serve` with an `admin`
/// (password [`ADMIN_PASSWORD`]).
pub struct Env {
    pub db: TestDb,
    pub app: KleidiaApp,
}

impl Env {
    pub async fn start(extra_env: &[(&str, &str)]) -> Result<Self> {
        let db = TestDb::new().await?;
        let app = Self::spawn_on(&db, extra_env).await?;
        cli_create_user(&db.url, "admin", "admin", ADMIN_PASSWORD)?;
        Ok(Self { db, app })
    }

    /// Another `kleidia serve` on the same database.
    pub async fn spawn_on(db: &TestDb, extra_env: &[(&str, &str)]) -> Result<KleidiaApp> {
        let (bao_addr, bao_token) = shared_bao();
        KleidiaApp::spawn(AppOptions {
            database_url: db.url.clone(),
            bao_addr,
            bao_token,
            env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.app.base_url)
    }

    pub fn api(&self) -> Api {
        Api::new(&self.app.base_url)
    }

    /// An admin API client, signed in.
    pub async fn admin_api(&self) -> Api {
        let mut a = self.api();
        a.login("admin", ADMIN_PASSWORD)
            .await
            .expect("admin API login");
        a
    }

    /// Create a user through the API as admin and give them `password`
    /// (the account is then ready, without a forced password change).
    pub async fn create_user(
        &self,
        username: &str,
        role: &str,
        display_name: &str,
        password: &str,
    ) -> Value {
        let admin = self.admin_api().await;
        let (s, v) = admin
            .post_json(
                "/api/users",
                &json!({"username": username, "role": role, "display_name": display_name, "password": password}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        // Passwords an admin chose must be changed at first sign-in; do it here.
        let b = Browser::new(&self.app.base_url);
        let r = b.login(username, password).await;
        assert_eq!(r.headers()["location"], "/account/password");
        let r = b
            .post_form(
                "/account/password",
                &[
                    ("current", password),
                    ("new", &format!("{password}-2")),
                    ("confirm", &format!("{password}-2")),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        v["user"].clone()
    }
}

/// A cookie-aware client that does not follow redirects and sends the
/// headers a same-origin page would (`Origin`, `Sec-Fetch-Site`).
pub struct Browser {
    pub http: reqwest::Client,
    pub jar: Arc<Jar>,
    pub base: String,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            http,
            jar,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn get_text(&self, path: &str) -> (StatusCode, HeaderMap, String) {
        let r = self.get(path).await;
        let s = r.status();
        let h = r.headers().clone();
        (s, h, r.text().await.unwrap_or_default())
    }

    /// A form POST from one of Kleidia's own pages.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url(path))
            .header("origin", &self.base)
            .header("sec-fetch-site", "same-origin")
            .form(form)
            .send()
            .await
            .expect("POST")
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.post_form("/login", &[("username", username), ("password", password)])
            .await
    }

    /// The `Cookie` header this browser would send to Kleidia.
    pub fn cookie_header(&self) -> Option<String> {
        let url = reqwest::Url::parse(&self.base).ok()?;
        self.jar
            .cookies(&url)
            .and_then(|v| v.to_str().ok().map(String::from))
    }

    /// Put a cookie into the jar as if a page had set it.
    pub fn set_cookie(&self, cookie: &str) {
        if let Ok(url) = reqwest::Url::parse(&self.base) {
            self.jar.add_cookie_str(cookie, &url);
        }
    }
}

/// A JSON API client with an optional Bearer token.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
    pub session_id: Option<String>,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(redirect::Policy::none())
                .build()
                .expect("client"),
            base: base.trim_end_matches('/').to_string(),
            token: None,
            session_id: None,
        }
    }

    pub fn with_token(base: &str, token: &str) -> Self {
        let mut a = Self::new(base);
        a.token = Some(token.to_string());
        a
    }

    pub async fn login(&mut self, username: &str, password: &str) -> Result<Value> {
        let (s, v) = self
            .post_json(
                "/api/auth/login",
                &json!({"username": username, "password": password}),
            )
            .await;
        if s != StatusCode::OK {
            bail!("login {username}: {s} {v}");
        }
        self.token = v["token"].as_str().map(String::from);
        self.session_id = v["session_id"].as_str().map(String::from);
        Ok(v)
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn finish(r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = r.send().await.expect("request");
        let s = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (
            s,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        Self::finish(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        Self::finish(self.req(reqwest::Method::POST, path).json(body)).await
    }

    /// POST a raw body (e.g. a license file as issued).
    pub async fn post_bytes(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        Self::finish(self.req(reqwest::Method::POST, path).body(body)).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        Self::finish(self.req(reqwest::Method::PATCH, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        Self::finish(self.req(reqwest::Method::DELETE, path)).await
    }
}

/// HMAC-SHA-256/512 over `data` (for forging tokens in tests).
pub fn hmac(alg: &str, key: &[u8], data: &[u8]) -> Vec<u8> {
    fn run<D: sha2::Digest + Clone>(block: usize, key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut k = if key.len() > block {
            D::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        k.resize(block, 0);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let mut inner = D::new();
        inner.update(&ipad);
        inner.update(data);
        let mut outer = D::new();
        outer.update(&opad);
        outer.update(inner.finalize());
        outer.finalize().to_vec()
    }
    match alg {
        "HS512" => run::<sha2::Sha512>(128, key, data),
        _ => run::<sha2::Sha256>(64, key, data),
    }
}

fn b64url(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT with this header and these claims, signed with HMAC `alg` (or
/// unsigned for `none`).
pub fn forge_jwt(alg: &str, key: &[u8], claims: &Value) -> String {
    let header = json!({"alg": alg, "typ": "JWT"});
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    if alg == "none" {
        return format!("{signing_input}.");
    }
    let sig = hmac(alg, key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&sig))
}

pub fn b64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        buf = (buf << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}
