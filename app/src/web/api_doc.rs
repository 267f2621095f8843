//! What an `/api` route takes and answers, for `/api/openapi.json`
//! (`web::openapi`). Each route declares it next to its handler:
//!
//! ```ignore
//! RouteDef::post("/api/devices", CHANGERS, register)
//!     .takes::<RegisterDevice>()
//!     .gives::<DeviceRow>(201, "the registered device")
//! ```
//!
//! The schemas come from the Rust types themselves (`utoipa::ToSchema`,
//! derived on the request and response structs), so a field added to a
//! type is in the document without anyone editing it. Errors need no
//! declaration: every route may answer `{"error", "message"}`
//! ([`kleidia_protocol::ErrorBody`]) with a 4xx or 503.

use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, ToSchema};

/// Named schemas a body refers to (`#/components/schemas/…`).
pub type Components = Vec<(String, RefOr<Schema>)>;

/// A request or response body: its media type and schema.
#[derive(Clone, Copy)]
pub struct Body {
    pub content_type: &'static str,
    /// The body's schema; `components` adds what it refers to.
    pub schema: fn() -> RefOr<Schema>,
    pub components: fn(&mut Components),
}

fn named<T: ToSchema>(c: &mut Components) {
    c.push((T::name().into_owned(), T::schema()));
    T::schemas(c);
}

fn reference<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

fn array_of<T: ToSchema>() -> RefOr<Schema> {
    ArrayBuilder::new().items(reference::<T>()).into()
}

fn string() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).into()
}

fn object() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::Object).into()
}

fn nothing(_: &mut Components) {}

impl Body {
    /// A JSON object of type `T`.
    pub fn json<T: ToSchema>() -> Self {
        Body {
            content_type: "application/json",
            schema: reference::<T>,
            components: named::<T>,
        }
    }

    /// A JSON array of `T`.
    pub fn json_array<T: ToSchema>() -> Self {
        Body {
            content_type: "application/json",
            schema: array_of::<T>,
            components: named::<T>,
        }
    }

    /// Any JSON object (the OpenAPI document itself).
    pub fn any_json() -> Self {
        Body {
            content_type: "application/json",
            schema: object,
            components: nothing,
        }
    }

    /// Text of another media type (CSV, JSON lines).
    pub fn text(content_type: &'static str) -> Self {
        Body {
            content_type,
            schema: string,
            components: nothing,
        }
    }
}

/// One declared answer of a route.
#[derive(Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub description: &'static str,
    pub body: Option<Body>,
}

/// The query parameters of `T` (its `IntoParams` derive).
pub fn query_params<T: IntoParams>() -> Vec<Parameter> {
    T::into_params(|| Some(ParameterIn::Query))
}

/// What a route takes and answers. `request` is `Some(None)` for a route
/// declared to take no body ([`crate::web::RouteDef::takes_nothing`]).
#[derive(Clone, Default)]
pub struct ApiDoc {
    /// The query string's parameters ([`crate::web::RouteDef::query`]).
    pub query: Option<fn() -> Vec<Parameter>>,
    pub request: Option<Option<Body>>,
    pub answers: Vec<Answer>,
}

impl ApiDoc {
    /// Why this declaration is not complete for `method` (None: it is).
    pub fn missing(&self, method: &axum::http::Method) -> Option<&'static str> {
        use axum::http::Method;
        let has_body = [Method::POST, Method::PUT, Method::PATCH].contains(method);
        if has_body && self.request.is_none() {
            return Some(
                "no request body declared: add `.takes::<RequestType>()` \
                 (RequestType: the handler's JsonBody type, with \
                 `#[derive(utoipa::ToSchema)]`), or `.takes_nothing()`",
            );
        }
        if !self.answers.iter().any(|a| (200..300).contains(&a.status)) {
            return Some(
                "no success answer declared: add `.gives::<ResponseType>(200, \"what it is\")` \
                 (ResponseType: what the handler returns in Json, with \
                 `#[derive(utoipa::ToSchema)]`), `.gives_list::<T>(…)`, or \
                 `.gives_nothing(204, \"…\")`",
            );
        }
        None
    }
}
