//! Static assets, embedded in the binary so a deployment is one file.
//! htmx is vendored (no CDN); `agent.js` is the one hand-written script.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "htmx.min.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../static/htmx.min.js"),
    },
    Asset {
        name: "agent.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../static/agent.js"),
    },
    Asset {
        name: "app.css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../../../static/app.css"),
    },
    Asset {
        name: "favicon.ico",
        mime: "image/x-icon",
        body: include_bytes!("../../../static/favicon.ico"),
    },
];

pub async fn serve(Path(file): Path<String>) -> Response {
    asset(&file)
}

/// `/favicon.ico`, which browsers ask for whatever the page names.
pub async fn favicon() -> Response {
    asset("favicon.ico")
}

fn asset(file: &str) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.mime),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            a.body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
