//! The public PKI documents, without login, cached briefly: the issuing CA
//! (`/pki/ca` DER, `/pki/ca.pem`), the chain (`/pki/ca_chain`, PEM,
//! intermediate then root), the CRL (`/pki/crl` DER, `/pki/crl.pem`), and the
//! root's certificate and CRL (`/pki/root/ca`, `/pki/root/crl`) that the
//! intermediate's own AIA and CDP point to; and the issuing CA's OCSP
//! responder (`/pki/ocsp`, RFC 6960), passed through to OpenBao's and named
//! in the AIA of every certificate Kleidia issues.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;

use super::RouteDef;
use crate::auth::Access;
use crate::error::AppError;
use crate::fleet::pki::Pki;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::get("/pki/ca", Access::Public, ca),
        RouteDef::get("/pki/ca.pem", Access::Public, ca_pem),
        RouteDef::get("/pki/ca_chain", Access::Public, ca_chain),
        RouteDef::get("/pki/crl", Access::Public, crl),
        RouteDef::get("/pki/crl.pem", Access::Public, crl_pem),
        RouteDef::get("/pki/root/ca", Access::Public, root_ca),
        RouteDef::get("/pki/root/crl", Access::Public, root_crl),
        RouteDef::get("/pki/ocsp/{*request}", Access::Public, ocsp_get),
        RouteDef::post("/pki/ocsp", Access::Public, ocsp_post),
    ]
}

enum Mount {
    Issuing,
    Root,
}

async fn serve(
    state: &AppState,
    mount: Mount,
    what: &str,
    mime: &'static str,
) -> Result<Response, AppError> {
    let pki = match mount {
        Mount::Issuing => state.pki(),
        Mount::Root => Pki {
            mount: &state.config.openbao.pki_root_mount,
            ..state.pki()
        },
    };
    let Some(mut body) = pki.document(what).await? else {
        return Ok((
            StatusCode::NOT_FOUND,
            "the CA is not set up (run kleidia bootstrap)",
        )
            .into_response());
    };
    // PEM documents end with a newline, as `openssl` writes them; OpenBao's
    // chain does not, and `cat chain.pem other.pem` would then glue two
    // armour lines together.
    if mime == "application/x-pem-file" && !body.is_empty() && !body.ends_with(b"\n") {
        body.push(b'\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "public, max-age=30"),
        ],
        body,
    )
        .into_response())
}

async fn ca(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Issuing, "ca", "application/pkix-cert").await
}
async fn ca_pem(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Issuing, "ca/pem", "application/x-pem-file").await
}
async fn ca_chain(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Issuing, "ca_chain", "application/x-pem-file").await
}
async fn crl(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Issuing, "crl", "application/pkix-crl").await
}
async fn crl_pem(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Issuing, "crl/pem", "application/x-pem-file").await
}
async fn root_ca(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Root, "ca", "application/pkix-cert").await
}
async fn root_crl(State(s): State<AppState>) -> Result<Response, AppError> {
    serve(&s, Mount::Root, "crl", "application/pkix-crl").await
}

/// The largest OCSP request passed on. A request for one certificate is
/// about 100 bytes; a signed one with its signer's chain a few kilobytes.
pub const OCSP_MAX_REQUEST: usize = 16 * 1024;

const OCSP_REQUEST: &str = "application/ocsp-request";
const OCSP_RESPONSE: &str = "application/ocsp-response";

/// Why Kleidia refuses an OCSP request before asking OpenBao. A request
/// that is well-formed DER but not an OCSP request gets OpenBao's own 400
/// with a `malformedRequest` OCSP response instead.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OcspRequestError {
    #[error("POST an OCSP request with Content-Type: application/ocsp-request")]
    ContentType,
    #[error("the OCSP request is empty")]
    Empty,
    #[error("the OCSP request is larger than {OCSP_MAX_REQUEST} bytes")]
    TooLarge,
    #[error("the OCSP request in the URL is longer than {OCSP_MAX_REQUEST} bytes")]
    UriTooLong,
    #[error("the OCSP request in the URL is neither base64 nor base64url")]
    NotBase64,
    #[error("the OCSP request is not a DER-encoded SEQUENCE")]
    NotDer,
}

impl IntoResponse for OcspRequestError {
    fn into_response(self) -> Response {
        let status = match self {
            OcspRequestError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            OcspRequestError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            OcspRequestError::UriTooLong => StatusCode::URI_TOO_LONG,
            OcspRequestError::Empty | OcspRequestError::NotBase64 | OcspRequestError::NotDer => {
                StatusCode::BAD_REQUEST
            }
        };
        (
            status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// RFC 6960 A.1.1: `GET {url}/{url-encoding of base64 of the DER request}`.
/// The router has already percent-decoded the path; base64url and missing
/// padding are accepted too, since clients differ.
pub fn decode_get_request(encoded: &str) -> Result<Vec<u8>, OcspRequestError> {
    if encoded.is_empty() {
        return Err(OcspRequestError::Empty);
    }
    if encoded.len() > OCSP_MAX_REQUEST.div_ceil(3) * 4 {
        return Err(OcspRequestError::UriTooLong);
    }
    let standard: String = encoded
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            // A '+' that went through form decoding somewhere on the way.
            ' ' => '+',
            c => c,
        })
        .collect();
    let der = STANDARD_NO_PAD
        .decode(standard)
        .map_err(|_| OcspRequestError::NotBase64)?;
    check_der(der)
}

/// RFC 6960 A.1.1: `POST` with `Content-Type: application/ocsp-request` and
/// the DER request as the body.
pub fn check_post_request(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, OcspRequestError> {
    check_content_type(headers)?;
    check_der(body.to_vec())
}

fn check_content_type(headers: &HeaderMap) -> Result<(), OcspRequestError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(OCSP_REQUEST) {
        Ok(())
    } else {
        Err(OcspRequestError::ContentType)
    }
}

/// The outer shape of an OCSPRequest: one DER SEQUENCE spanning the input.
fn check_der(der: Vec<u8>) -> Result<Vec<u8>, OcspRequestError> {
    if der.is_empty() {
        return Err(OcspRequestError::Empty);
    }
    if der.len() > OCSP_MAX_REQUEST {
        return Err(OcspRequestError::TooLarge);
    }
    let [0x30, first, rest @ ..] = der.as_slice() else {
        return Err(OcspRequestError::NotDer);
    };
    let (len, content) = if first & 0x80 == 0 {
        (usize::from(*first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 2 || rest.len() < n {
            return Err(OcspRequestError::NotDer);
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if len != content.len() {
        return Err(OcspRequestError::NotDer);
    }
    Ok(der)
}

async fn ocsp_get(
    State(s): State<AppState>,
    Path(request): Path<String>,
) -> Result<Response, AppError> {
    match decode_get_request(&request) {
        Ok(der) => ocsp_forward(&s, der).await,
        Err(e) => Ok(e.into_response()),
    }
}

async fn ocsp_post(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    // Refuse a wrong type before reading the body; read at most the limit.
    if let Err(e) = check_content_type(&headers) {
        return Ok(e.into_response());
    }
    let Ok(body) = axum::body::to_bytes(body, OCSP_MAX_REQUEST).await else {
        return Ok(OcspRequestError::TooLarge.into_response());
    };
    match check_post_request(&headers, &body) {
        Ok(der) => ocsp_forward(&s, der).await,
        Err(e) => Ok(e.into_response()),
    }
}

/// OpenBao's answer as it is: status (200, or 4xx with a `malformedRequest`
/// / `unauthorized` OCSP response), type and caching, never cached here.
async fn ocsp_forward(s: &AppState, der: Vec<u8>) -> Result<Response, AppError> {
    let answer = s.pki().ocsp(der).await?;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .content_type
        .unwrap_or_else(|| OCSP_RESPONSE.to_string());
    let cache_control = answer.cache_control.unwrap_or_else(|| "no-store".into());
    Ok((
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache_control),
        ],
        answer.body,
    )
        .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::HeaderValue;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use super::*;

    /// `openssl ocsp -reqout` for one certificate, no nonce: it has `+` and
    /// `/` in standard base64, so the alphabets differ.
    const REQUEST: &str = "MFUwUzBRME8wTTAJBgUrDgMCGgUABBRZQ3jCGSdH57cgpshpcV72W+PpGwQUlolEls+HRoOSILpANk3dyj7rMgoCFBixG1vpBsjwJQPQLTJXCx/3Jxbi";

    fn der() -> Vec<u8> {
        STANDARD.decode(REQUEST).unwrap()
    }

    fn typed(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_get_request_decodes_from_base64_with_or_without_padding_and_from_base64url() {
        assert_eq!(decode_get_request(REQUEST).unwrap(), der());
        assert_eq!(
            decode_get_request(&URL_SAFE_NO_PAD.encode(der())).unwrap(),
            der()
        );
        assert_eq!(
            decode_get_request(&REQUEST.replace('+', " ")).unwrap(),
            der()
        );
        // SEQUENCE { NULL }: four bytes, so standard base64 pads it.
        assert_eq!(decode_get_request("MAIFAA==").unwrap(), [0x30, 2, 5, 0]);
        assert_eq!(decode_get_request("MAIFAA").unwrap(), [0x30, 2, 5, 0]);
    }

    #[test]
    fn bad_get_requests_are_refused_with_the_reason() {
        assert_eq!(decode_get_request(""), Err(OcspRequestError::Empty));
        assert_eq!(
            decode_get_request("not*base64!"),
            Err(OcspRequestError::NotBase64)
        );
        // Base64 of text, not of a DER SEQUENCE.
        assert_eq!(
            decode_get_request(&STANDARD.encode("hello ocsp")),
            Err(OcspRequestError::NotDer)
        );
        // A SEQUENCE whose length does not match the bytes sent.
        let mut cut = der();
        cut.pop();
        assert_eq!(
            decode_get_request(&STANDARD.encode(&cut)),
            Err(OcspRequestError::NotDer)
        );
        let long = "A".repeat(OCSP_MAX_REQUEST * 2);
        assert_eq!(decode_get_request(&long), Err(OcspRequestError::UriTooLong));
    }

    #[test]
    fn a_post_needs_the_ocsp_type_and_a_der_body_within_the_limit() {
        assert_eq!(
            check_post_request(&typed("application/ocsp-request"), &der()).unwrap(),
            der()
        );
        assert_eq!(
            check_post_request(&typed("Application/OCSP-Request; x=y"), &der()).unwrap(),
            der()
        );
        assert_eq!(
            check_post_request(&HeaderMap::new(), &der()),
            Err(OcspRequestError::ContentType)
        );
        assert_eq!(
            check_post_request(&typed("application/json"), &der()),
            Err(OcspRequestError::ContentType)
        );
        assert_eq!(
            check_post_request(&typed("application/ocsp-request"), b""),
            Err(OcspRequestError::Empty)
        );
        assert_eq!(
            check_post_request(&typed("application/ocsp-request"), b"garbage"),
            Err(OcspRequestError::NotDer)
        );
        let mut big = vec![0x30, 0x82, 0x40, 0x01];
        big.resize(4 + 0x4001, 0);
        assert_eq!(
            check_post_request(&typed("application/ocsp-request"), &big),
            Err(OcspRequestError::TooLarge)
        );
    }

    /// Through the real router (OpenBao is not contacted: every request here
    /// is refused before it would be).
    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn the_router_refuses_bad_ocsp_requests_with_a_clear_4xx(db: sqlx::PgPool) {
        use tower::ServiceExt;

        let router = crate::web::router(crate::web::rbac_tests::test_state(db).await);
        let send = |method: &str, uri: &str, content_type: Option<&str>, body: Vec<u8>| {
            let mut req = axum::http::Request::builder().method(method).uri(uri);
            if let Some(t) = content_type {
                req = req.header(header::CONTENT_TYPE, t);
            }
            router.clone().oneshot(req.body(Body::from(body)).unwrap())
        };
        let cases = [
            (
                send("GET", "/pki/ocsp/not*base64!", None, vec![]).await,
                400,
                "base64",
            ),
            (
                send(
                    "GET",
                    &format!("/pki/ocsp/{}", STANDARD.encode("hi")),
                    None,
                    vec![],
                )
                .await,
                400,
                "DER",
            ),
            (
                send("POST", "/pki/ocsp", Some("application/json"), der()).await,
                415,
                "application/ocsp-request",
            ),
            (
                send("POST", "/pki/ocsp", Some(OCSP_REQUEST), vec![]).await,
                400,
                "empty",
            ),
            (
                send(
                    "POST",
                    "/pki/ocsp",
                    Some(OCSP_REQUEST),
                    vec![0x30; OCSP_MAX_REQUEST + 1],
                )
                .await,
                413,
                "larger",
            ),
        ];
        for (resp, status, says) in cases {
            let resp = resp.unwrap();
            assert_eq!(resp.status().as_u16(), status);
            let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains(says), "{status}: {text}");
        }
    }

    #[test]
    fn refusals_are_plain_text_4xx() {
        for (e, status) in [
            (OcspRequestError::ContentType, 415),
            (OcspRequestError::Empty, 400),
            (OcspRequestError::NotBase64, 400),
            (OcspRequestError::NotDer, 400),
            (OcspRequestError::TooLarge, 413),
            (OcspRequestError::UriTooLong, 414),
        ] {
            let r = e.into_response();
            assert_eq!(r.status().as_u16(), status);
            assert!(r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain"));
        }
    }
}
