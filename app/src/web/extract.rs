//! Extractors shared by the handlers.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::Json;
use uuid::Uuid;

use crate::error::AppError;

/// What htmx says about a request: `HX-Request` is set on every htmx call,
/// `HX-Boosted` on a boosted link or form that replaces the whole body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HxRequest {
    pub htmx: bool,
    pub boosted: bool,
}

impl HxRequest {
    /// A fragment swap: answer with the partial, not the full page. A boosted
    /// navigation wants the whole page.
    pub fn wants_partial(self) -> bool {
        self.htmx && !self.boosted
    }
}

impl<S: Send + Sync> FromRequestParts<S> for HxRequest {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}

impl HxRequest {
    pub fn from_headers(h: &axum::http::HeaderMap) -> Self {
        Self {
            htmx: h.contains_key("hx-request"),
            boosted: h.contains_key("hx-boosted"),
        }
    }
}

/// A JSON body with a clear 400/415/422 instead of axum's default text.
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(AppError::BadRequest(e.body_text())),
        }
    }
}

/// A UUID path segment or query value; `what` names it in the 400.
pub fn parse_uuid(s: &str, what: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(s).map_err(|_| AppError::BadRequest(format!("{what} must be a UUID")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn a_boosted_navigation_wants_the_whole_page() {
        let mut h = HeaderMap::new();
        assert!(!HxRequest::from_headers(&h).wants_partial());
        h.insert("hx-request", "true".parse().unwrap());
        assert!(HxRequest::from_headers(&h).wants_partial());
        h.insert("hx-boosted", "true".parse().unwrap());
        assert!(!HxRequest::from_headers(&h).wants_partial());
        assert!(HxRequest::from_headers(&h).htmx);
    }
}
