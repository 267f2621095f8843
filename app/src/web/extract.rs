//! Extractors shared by the page handlers.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

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
