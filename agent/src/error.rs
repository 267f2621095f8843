//! The one error type of the HTTP layer: a status, a stable code and a
//! message that is safe to show. Internals are logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kleidia_protocol::agent::{codes, AgentErrorBody};
use kleidia_protocol::ticket::TicketError;

use crate::card::CardError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retries_left: Option<u8>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retries_left: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
    }

    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "internal error in the agent; see its log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = AgentErrorBody {
            error: self.code.to_string(),
            message: self.message,
            retries_left: self.retries_left,
        };
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

impl From<TicketError> for ApiError {
    fn from(e: TicketError) -> Self {
        let status = match e {
            TicketError::Malformed
            | TicketError::BadSignature
            | TicketError::Expired
            | TicketError::NotYetValid
            | TicketError::LifetimeTooLong => StatusCode::UNAUTHORIZED,
            TicketError::Replayed => StatusCode::CONFLICT,
            TicketError::BadKey => StatusCode::SERVICE_UNAVAILABLE,
            TicketError::WrongOperation(_)
            | TicketError::WrongSerial(_)
            | TicketError::WrongAgentKey
            | TicketError::ParamsMismatch => StatusCode::FORBIDDEN,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<CardError> for ApiError {
    fn from(e: CardError) -> Self {
        use CardError as C;
        let (status, code) = match &e {
            C::PcscUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, codes::PCSC_UNAVAILABLE),
            C::NoYubiKey => (StatusCode::NOT_FOUND, codes::NO_YUBIKEY),
            C::NotFound(_) => (StatusCode::NOT_FOUND, codes::YUBIKEY_NOT_FOUND),
            C::Removed => (StatusCode::CONFLICT, codes::YUBIKEY_REMOVED),
            C::WrongPin(_) => (StatusCode::FORBIDDEN, codes::WRONG_PIN),
            C::PinBlocked => (StatusCode::FORBIDDEN, codes::PIN_BLOCKED),
            C::WrongPuk(_) => (StatusCode::FORBIDDEN, codes::WRONG_PUK),
            C::PukBlocked => (StatusCode::FORBIDDEN, codes::PUK_BLOCKED),
            C::WrongManagementKey => (StatusCode::FORBIDDEN, codes::WRONG_MANAGEMENT_KEY),
            C::InvalidSecret(_) => (StatusCode::BAD_REQUEST, codes::INVALID_SECRET),
            C::Invalid(_) => (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST),
            C::NotSupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, codes::NOT_SUPPORTED),
            C::EmptySlot(_) => (StatusCode::UNPROCESSABLE_ENTITY, codes::EMPTY_SLOT),
            C::CertificateMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::CERTIFICATE_MISMATCH,
            ),
            C::ResetRefused => (StatusCode::CONFLICT, codes::RESET_REFUSED),
            C::NoPresenceKey => (StatusCode::CONFLICT, codes::NO_PRESENCE_KEY),
            C::Card(_) => (StatusCode::BAD_GATEWAY, codes::CARD_ERROR),
            C::OutcomeUnknown(_) => (StatusCode::BAD_GATEWAY, codes::OUTCOME_UNKNOWN),
            C::CannotSettle(_) => (StatusCode::CONFLICT, codes::CANNOT_SETTLE),
        };
        if matches!(e, C::Card(_) | C::PcscUnavailable(_) | C::OutcomeUnknown(_)) {
            tracing::warn!(error = %e, "YubiKey operation failed");
        }
        let retries_left = match e {
            C::WrongPin(n) | C::WrongPuk(n) => Some(n),
            _ => None,
        };
        Self {
            status,
            code,
            message: e.to_string(),
            retries_left,
        }
    }
}
