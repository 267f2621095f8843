//! HTTP clients for Kleidia: a cookie-aware "browser" that posts forms like
//! a same-origin page, and a JSON API client with a Bearer token. Neither
//! follows redirects. Their methods per endpoint are in `endpoints.rs`.

use std::sync::Arc;

use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::HeaderMap;
use reqwest::{redirect, Response, StatusCode};
use serde_json::Value;

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

    pub async fn put_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        Self::finish(self.req(reqwest::Method::PUT, path).json(body)).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        Self::finish(self.req(reqwest::Method::PATCH, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        Self::finish(self.req(reqwest::Method::DELETE, path)).await
    }
}
