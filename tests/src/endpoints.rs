//! One method per Kleidia endpoint the tests call: JSON endpoints on
//! [`Api`] (answers as `(StatusCode, Value)`, a non-JSON body as
//! `Value::String`), form and page endpoints on [`Browser`]. Queries are
//! passed as written (`"limit=7&after=p06"`), so tests can send bad ones.

use anyhow::{bail, Result};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::client::{Api, Browser};

/// `path` with `?query` unless the query is empty.
fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// Sign-in, sessions and the agent key of a session.
impl Api {
    /// `POST /api/auth/login`, keeping nothing (for refused sign-ins).
    pub async fn post_login(&self, username: &str, password: &str) -> (StatusCode, Value) {
        self.post_json(
            "/api/auth/login",
            &json!({"username": username, "password": password}),
        )
        .await
    }

    /// `POST /api/auth/login`; on success this client keeps the token and
    /// the session id.
    pub async fn login(&mut self, username: &str, password: &str) -> Result<Value> {
        let (s, v) = self.post_login(username, password).await;
        if s != StatusCode::OK {
            bail!("login {username}: {s} {v}");
        }
        self.token = v["token"].as_str().map(String::from);
        self.session_id = v["session_id"].as_str().map(String::from);
        Ok(v)
    }

    /// `GET /api/auth/me`
    pub async fn me(&self) -> (StatusCode, Value) {
        self.get("/api/auth/me").await
    }

    /// `POST /api/auth/password`: change this account's own password.
    pub async fn change_password(&self, current: &str, new: &str) -> (StatusCode, Value) {
        self.post_json(
            "/api/auth/password",
            &json!({"current": current, "new": new}),
        )
        .await
    }

    /// `POST /api/auth/logout`
    pub async fn logout(&self) -> (StatusCode, Value) {
        self.post_json("/api/auth/logout", &json!({})).await
    }

    /// `POST /api/session/{session_id}/register-agent`
    pub async fn register_agent(
        &self,
        session_id: &str,
        public_key_pem: &str,
    ) -> (StatusCode, Value) {
        self.post_json(
            &format!("/api/session/{session_id}/register-agent"),
            &json!({"public_key": public_key_pem}),
        )
        .await
    }

    /// `GET /api/agent/ticket-key`
    pub async fn ticket_key(&self) -> (StatusCode, Value) {
        self.get("/api/agent/ticket-key").await
    }
}

/// People, lockouts and the audit log.
impl Api {
    /// `POST /api/users`
    pub async fn create_user(&self, body: &Value) -> (StatusCode, Value) {
        self.post_json("/api/users", body).await
    }

    /// `GET /api/users?{query}`
    pub async fn users(&self, query: &str) -> (StatusCode, Value) {
        self.get(&with_query("/api/users", query)).await
    }

    /// `GET /api/users/{id}`
    pub async fn user(&self, id: &str) -> (StatusCode, Value) {
        self.get(&format!("/api/users/{id}")).await
    }

    /// `PATCH /api/users/{id}`
    pub async fn update_user(&self, id: &str, body: &Value) -> (StatusCode, Value) {
        self.patch_json(&format!("/api/users/{id}"), body).await
    }

    /// `POST /api/users/{id}/disable`
    pub async fn disable_user(&self, id: &str) -> (StatusCode, Value) {
        self.post_json(&format!("/api/users/{id}/disable"), &json!({}))
            .await
    }

    /// `POST /api/users/{id}/enable`
    pub async fn enable_user(&self, id: &str) -> (StatusCode, Value) {
        self.post_json(&format!("/api/users/{id}/enable"), &json!({}))
            .await
    }

    /// `GET /api/lockouts`
    pub async fn lockouts(&self) -> (StatusCode, Value) {
        self.get("/api/lockouts").await
    }

    /// `DELETE /api/lockouts/{scope}/{key}`
    pub async fn clear_lockout(&self, scope: &str, key: &str) -> (StatusCode, Value) {
        self.delete(&format!("/api/lockouts/{scope}/{key}")).await
    }

    /// `GET /api/audit?{query}`
    pub async fn audit(&self, query: &str) -> (StatusCode, Value) {
        self.get(&with_query("/api/audit", query)).await
    }
}

/// Devices, operations on them, certificates and the policy.
impl Api {
    /// `POST /api/devices`
    pub async fn register_device(&self, serial: u32, firmware: &str) -> (StatusCode, Value) {
        self.post_json(
            "/api/devices",
            &json!({"serial": serial, "firmware": firmware}),
        )
        .await
    }

    /// `POST /api/devices` in someone else's name (admins and helpdesk).
    pub async fn register_device_for(
        &self,
        serial: u32,
        firmware: &str,
        owner_id: &str,
    ) -> (StatusCode, Value) {
        self.post_json(
            "/api/devices",
            &json!({"serial": serial, "firmware": firmware, "owner_id": owner_id}),
        )
        .await
    }

    /// `PUT /api/devices/{serial}/owner`
    pub async fn assign_owner(&self, serial: u32, owner_id: Option<&str>) -> (StatusCode, Value) {
        self.put_json(
            &format!("/api/devices/{serial}/owner"),
            &json!({"owner_id": owner_id}),
        )
        .await
    }

    /// `GET /api/devices?{query}`
    pub async fn devices(&self, query: &str) -> (StatusCode, Value) {
        self.get(&with_query("/api/devices", query)).await
    }

    /// `GET /api/my/devices?{query}`
    pub async fn my_devices(&self, query: &str) -> (StatusCode, Value) {
        self.get(&with_query("/api/my/devices", query)).await
    }

    /// `GET /api/devices/{serial}`
    pub async fn device(&self, serial: u32) -> (StatusCode, Value) {
        self.get(&format!("/api/devices/{serial}")).await
    }

    /// `POST /api/devices/{serial}/state`
    pub async fn set_device_state(
        &self,
        serial: u32,
        state: &str,
        reason: &str,
    ) -> (StatusCode, Value) {
        self.post_json(
            &format!("/api/devices/{serial}/state"),
            &json!({"state": state, "reason": reason}),
        )
        .await
    }

    /// `POST /api/yubikey/{serial}/operations`
    pub async fn authorize(&self, serial: u32, body: &Value) -> (StatusCode, Value) {
        self.post_json(&format!("/api/yubikey/{serial}/operations"), body)
            .await
    }

    /// `POST /api/yubikey/{serial}/operations/{operation_id}/result`
    pub async fn report(
        &self,
        serial: u32,
        operation_id: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        self.post_json(
            &format!("/api/yubikey/{serial}/operations/{operation_id}/result"),
            body,
        )
        .await
    }

    /// `GET /api/yubikey/{serial}/secrets?operation_id=…`: the secrets of a
    /// pending operation again, under a new ticket.
    pub async fn secrets(&self, serial: u32, operation_id: &str) -> (StatusCode, Value) {
        self.get(&format!(
            "/api/yubikey/{serial}/secrets?operation_id={operation_id}"
        ))
        .await
    }

    /// `POST /api/yubikey/{serial}/sign-csr`
    pub async fn sign_csr(&self, serial: u32, body: &Value) -> (StatusCode, Value) {
        self.post_json(&format!("/api/yubikey/{serial}/sign-csr"), body)
            .await
    }

    /// `POST /api/certificates/{id}/revoke`
    pub async fn revoke_certificate(&self, id: &str, reason: &str) -> (StatusCode, Value) {
        self.post_json(
            &format!("/api/certificates/{id}/revoke"),
            &json!({"reason": reason}),
        )
        .await
    }

    /// `GET /api/certificate-approvals`
    pub async fn certificate_approvals(&self) -> (StatusCode, Value) {
        self.get("/api/certificate-approvals").await
    }

    /// `POST /api/certificate-approvals/{id}/approve`
    pub async fn approve_certificate(&self, id: &str) -> (StatusCode, Value) {
        self.post_json(
            &format!("/api/certificate-approvals/{id}/approve"),
            &json!({}),
        )
        .await
    }

    /// `POST /api/certificate-approvals/{id}/reject`
    pub async fn reject_certificate(&self, id: &str) -> (StatusCode, Value) {
        self.post_json(
            &format!("/api/certificate-approvals/{id}/reject"),
            &json!({}),
        )
        .await
    }

    /// `GET /api/settings/policy`
    pub async fn policy(&self) -> (StatusCode, Value) {
        self.get("/api/settings/policy").await
    }

    /// `PUT /api/settings/policy`
    pub async fn set_policy(&self, policy: &Value) -> (StatusCode, Value) {
        self.put_json("/api/settings/policy", policy).await
    }
}

/// The license, as the app shows and forwards it.
impl Api {
    /// `GET /api/license`
    pub async fn license(&self) -> (StatusCode, Value) {
        self.get("/api/license").await
    }

    /// `POST /api/license` with the file as issued.
    pub async fn upload_license(&self, file: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        self.post_bytes("/api/license", file).await
    }
}

/// Pages and forms.
impl Browser {
    /// `POST /login`
    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.post_form("/login", &[("username", username), ("password", password)])
            .await
    }

    /// `POST /login` with the page to return to.
    pub async fn login_to(&self, username: &str, password: &str, next: &str) -> Response {
        self.post_form(
            "/login",
            &[
                ("username", username),
                ("password", password),
                ("next", next),
            ],
        )
        .await
    }

    /// `GET /license`: the license page (asserts 200).
    pub async fn license_page(&self) -> String {
        let (s, _, html) = self.get_text("/license").await;
        assert_eq!(s, StatusCode::OK, "{html}");
        html
    }

    /// `POST /logout`
    pub async fn logout(&self) -> Response {
        self.post_form("/logout", &[]).await
    }

    /// `GET /api/auth/me` with this browser's session cookie.
    pub async fn me(&self) -> (StatusCode, Value) {
        let r = self.get("/api/auth/me").await;
        let s = r.status();
        let text = r.text().await.unwrap_or_default();
        (
            s,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `POST /account/password`
    pub async fn change_password(&self, current: &str, new: &str) -> Response {
        self.post_form(
            "/account/password",
            &[("current", current), ("new", new), ("confirm", new)],
        )
        .await
    }

    /// `POST /users`: the "new user" form.
    pub async fn create_user(
        &self,
        username: &str,
        display_name: &str,
        email: &str,
        role: &str,
    ) -> Response {
        self.post_form(
            "/users",
            &[
                ("username", username),
                ("display_name", display_name),
                ("email", email),
                ("role", role),
            ],
        )
        .await
    }

    /// `POST /users/{id}/reset-password`
    pub async fn reset_password(&self, id: &str) -> Response {
        self.post_form(&format!("/users/{id}/reset-password"), &[])
            .await
    }

    /// `GET path` as htmx asks for a fragment (`HX-Request`).
    pub async fn htmx_get(&self, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .header("hx-request", "true")
            .send()
            .await
            .expect("GET")
    }

    /// An htmx `POST path` from one of Kleidia's pages, without a form.
    pub async fn htmx_post(&self, path: &str) -> Response {
        self.http
            .post(self.url(path))
            .header("origin", &self.base)
            .header("hx-request", "true")
            .send()
            .await
            .expect("POST")
    }

    /// `POST /license`: the license page's upload form, as a browser sends
    /// it (multipart/form-data). Returns the status, the redirect target and
    /// the body.
    pub async fn upload_license(&self, file: &[u8]) -> (StatusCode, Option<String>, String) {
        let boundary = "----kleidia-test-boundary-7f3a";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"license.json\"\r\n\
                 Content-Type: application/json\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"license\"\r\n\r\n\r\n--{boundary}--\r\n")
                .as_bytes(),
        );
        let r = self
            .http
            .post(self.url("/license"))
            .header("origin", &self.base)
            .header("sec-fetch-site", "same-origin")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("POST /license");
        let s = r.status();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        (s, location, r.text().await.unwrap())
    }
}
