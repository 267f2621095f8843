//! The one web error type. It never shows internals to the client: the cause
//! is logged, the client gets a stable code and a safe message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kleidia_protocol::ErrorBody;

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
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::error!(error = %e, "database unavailable");
                AppError::Unavailable("the database is unavailable; try again shortly".into())
            }
            e => AppError::Internal(e.into()),
        }
    }
}

impl From<BaoError> for AppError {
    fn from(e: BaoError) -> Self {
        if e.is_unavailable() {
            tracing::error!(error = %e, "OpenBao unavailable");
            AppError::Unavailable("the secret store (OpenBao) is unavailable; nothing was changed".into())
        } else {
            AppError::Internal(e.into())
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let AppError::Internal(e) = &self {
            tracing::error!(error = ?e, "internal error");
        }
        let body = ErrorBody {
            error: self.code().into(),
            message: self.public_message(),
        };
        (status, Json(body)).into_response()
    }
}
