//! The workstation agent: how to install it (`/agent`), registering its key
//! on the session (`/api/session/{session}/register-agent`), what the page
//! needs to find it (`/api/session/agent`), and the key its tickets are
//! checked with (`/api/agent/ticket-key`).

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse};
use axum::Json;
use kleidia_protocol::ticket::TicketKeyResponse;
use serde::Serialize;
use uuid::Uuid;

use super::extract::{parse_uuid, JsonBody};
use super::pages::{nav, render, Nav};
use super::RouteDef;
use crate::auth::{Access, ClientMeta, CurrentUser};
use crate::domain::Role;
use crate::error::AppError;
use crate::fleet::agent::{self, RegisterAgent};
use crate::fleet::db::agent_keys;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/agent", Access::SignedIn, agent_page),
        RouteDef::post(
            "/api/session/{session}/register-agent",
            Access::SignedIn,
            register_agent,
        )
        .takes::<RegisterAgent>()
        .gives::<AgentRegistered>(200, "the agent's key is registered on the session"),
        RouteDef::get("/api/session/agent", Access::SignedIn, session_agent)
            .gives::<SessionAgent>(200, "where the page finds the agent"),
        RouteDef::get("/api/agent/ticket-key", Access::Public, ticket_key)
            .gives::<TicketKeyResponse>(200, "the key the agent checks tickets with"),
    ]
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    me: Option<Nav>,
    public_url: String,
    agent_port: u16,
}

/// How to install and start the workstation agent for this server.
async fn agent_page(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Html<String>, AppError> {
    render(&AgentPage {
        me: nav(&me),
        public_url: state
            .config
            .server
            .public_url
            .origin()
            .ascii_serialization(),
        agent_port: state
            .config
            .agent
            .url
            .port_or_known_default()
            .unwrap_or(56123),
    })
}

async fn register_agent(
    State(state): State<AppState>,
    me: CurrentUser,
    meta: ClientMeta,
    Path(session): Path<String>,
    JsonBody(body): JsonBody<RegisterAgent>,
) -> Result<impl IntoResponse, AppError> {
    let sid = parse_uuid(&session, "session id")?;
    let fingerprint = agent::register(&state.db, &me, &meta, sid, body).await?;
    Ok(Json(AgentRegistered {
        status: "ok",
        agent_key_fingerprint: fingerprint,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct AgentRegistered {
    /// Always `ok`.
    status: &'static str,
    agent_key_fingerprint: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct SessionAgent {
    session_id: Uuid,
    /// Where the agent listens (`agent.url`).
    agent_url: String,
    /// The agent key registered on this session so far, if any.
    agent_key_fingerprint: Option<String>,
    role: Role,
}

/// What the page needs to find and register the agent: this session's id,
/// where the agent listens, and the fingerprint registered so far (a
/// different one at the agent means it restarted with a new key).
async fn session_agent(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<impl IntoResponse, AppError> {
    let fp = agent_keys::fingerprint(&state.db, me.session_id).await?;
    Ok(Json(SessionAgent {
        session_id: me.session_id,
        agent_url: state
            .config
            .agent
            .url
            .as_str()
            .trim_end_matches('/')
            .to_string(),
        agent_key_fingerprint: fp,
        role: me.role,
    }))
}

async fn ticket_key(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.fleet.ticket_key.verifying_key().response())
}
