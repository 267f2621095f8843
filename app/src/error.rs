//! The one web error type. It never shows internals to the client: the cause
//! is logged, the client gets a stable code and a safe message.
//!
//! `AppError` always renders JSON and tags the response with [`ErrorInfo`];
//! `web::error_pages::negotiate` turns tagged responses to requests outside
//! `/api` into what a browser needs (an error page, a toast, a redirect to
//! the sign-in page).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kleidia_protocol::ErrorBody;

use crate::audit::query::InvalidFilter;
use crate::db::users::InsertUserError;
use crate::domain::InvalidAccountField;
use crate::vault::BaoError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("sign in required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// 415: a body of a type the route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 413: a body over the route's limit.
    #[error("{0}")]
    TooLarge(String),
    /// A dependency (PostgreSQL, OpenBao, license service) is down.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::Unprocessable(_) => "unprocessable",
            AppError::TooManyRequests(_) => "too_many_requests",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::TooLarge(_) => "too_large",
            AppError::Unavailable(_) => "unavailable",
            AppError::Internal(_) => "internal",
        }
    }

    /// The message the client may see.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Internal(_) => "internal error; the server log has the details".into(),
            other => other.to_string(),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        if db_unavailable(&e) {
            tracing::error!(error = %e, "database unavailable");
            return AppError::Unavailable(
                "the database is unavailable; nothing was changed, try again shortly".into(),
            );
        }
        AppError::Internal(e.into())
    }
}

/// PostgreSQL is down or refusing connections (as opposed to a bad query):
/// connection, pool and I/O failures, and the SQLSTATE classes 08 (connection
/// exception), 53 (insufficient resources) and 57P (shutdown, cannot connect now).
fn db_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")),
        _ => false,
    }
}

/// What a secret operation answers (503) while OpenBao is sealed.
pub const SEALED_MESSAGE: &str =
    "the secret store (OpenBao) is sealed: secret operations are refused until an operator unseals it; nothing was changed";

impl From<BaoError> for AppError {
    fn from(e: BaoError) -> Self {
        if matches!(e, BaoError::Sealed) {
            tracing::error!("OpenBao is sealed");
            AppError::Unavailable(SEALED_MESSAGE.into())
        } else if e.is_unavailable() {
            tracing::error!(error = %e, "OpenBao unavailable");
            AppError::Unavailable(
                "the secret store (OpenBao) is unavailable; nothing was changed".into(),
            )
        } else {
            AppError::Internal(e.into())
        }
    }
}

impl From<InvalidAccountField> for AppError {
    fn from(e: InvalidAccountField) -> Self {
        AppError::Unprocessable(e.to_string())
    }
}

impl From<InvalidFilter> for AppError {
    fn from(e: InvalidFilter) -> Self {
        AppError::Unprocessable(e.to_string())
    }
}

impl From<InsertUserError> for AppError {
    fn from(e: InsertUserError) -> Self {
        match e {
            InsertUserError::UsernameTaken(_) => AppError::Conflict(e.to_string()),
            InsertUserError::Db(e) => e.into(),
        }
    }
}

/// Attached to every error response so `web::error_pages::negotiate` can
/// re-render it.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let AppError::Internal(e) = &self {
            tracing::error!(error = ?e, "internal error");
        }
        let info = ErrorInfo {
            status,
            code: self.code(),
            message: self.public_message(),
        };
        let body = ErrorBody {
            error: info.code.into(),
            message: info.message.clone(),
        };
        let mut resp = (status, Json(body)).into_response();
        resp.extensions_mut().insert(info);
        resp
    }
}
