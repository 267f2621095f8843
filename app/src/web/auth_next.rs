//! Where to go after signing in (`next=`): only a page this app serves,
//! written plainly, so that no browser can read the `Location` as another
//! site. Anything else goes to `/`.
//!
//! Browsers drop tabs and line breaks from URLs and read `\` as `/`, so
//! `/<TAB>/evil.example` or `/\evil.example` become `//evil.example`, a
//! link to another host. Rather than listing what is dangerous, the check
//! allows what is needed: a path of plain segments (`A-Z a-z 0-9 - . _ ~`,
//! no empty, `.` or `..` segment, no percent-encoding) that matches a
//! page route of the router, and an optional query of URL-safe bytes.

use std::sync::OnceLock;

use axum::http::Method;

/// The page to return to, or `/`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if is_local_page(n) => n.to_string(),
        _ => "/".into(),
    }
}

/// Route patterns (split into segments) that a browser may be sent back to:
/// the GET pages, without the API, assets, probes, PKI downloads and the
/// sign-in page itself.
fn pages() -> &'static [Vec<&'static str>] {
    static PAGES: OnceLock<Vec<Vec<&'static str>>> = OnceLock::new();
    PAGES.get_or_init(|| {
        super::route_table()
            .into_iter()
            .filter(|(m, p, _)| *m == Method::GET && is_page_route(p))
            .map(|(_, p, _)| p.trim_start_matches('/').split('/').collect())
            .collect()
    })
}

fn is_page_route(path: &str) -> bool {
    const NOT_PAGES: [&str; 7] = [
        "/api/", "/static/", "/pki/", "/login", "/healthz", "/readyz", "/metrics",
    ];
    path != "/" && !path.contains('*') && !NOT_PAGES.iter().any(|p| path.starts_with(p))
}

fn plain_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn query_byte(b: u8) -> bool {
    plain_segment_byte(b) || matches!(b, b'=' | b'&' | b'%' | b'+' | b',' | b':' | b'/')
}

fn is_local_page(n: &str) -> bool {
    if n.len() > 1024 {
        return false;
    }
    let (path, query) = match n.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (n, None),
    };
    if let Some(q) = query {
        if !q.bytes().all(query_byte) {
            return false;
        }
    }
    if path == "/" {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let plain = segs
        .iter()
        .all(|s| !s.is_empty() && *s != "." && *s != ".." && s.bytes().all(plain_segment_byte));
    plain
        && pages().iter().any(|p| {
            p.len() == segs.len()
                && p.iter()
                    .zip(&segs)
                    .all(|(pat, seg)| pat.starts_with('{') || pat == seg)
        })
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn pages_of_the_app_are_kept() {
        for n in [
            "/",
            "/users",
            "/users?q=x",
            "/users?q=a%20b&page=2",
            "/devices/12345678",
            "/account/password",
            "/audit?from=2026-01-01T00:00:00Z",
        ] {
            assert_eq!(safe_next(Some(n)), n);
        }
    }

    #[test]
    fn anything_a_browser_could_read_as_another_site_or_that_is_not_a_page_goes_home() {
        for n in [
            "",
            "users",
            "//evil.example",
            "///evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\nLocation: https://evil.example",
            "/\\evil.example",
            "/\\/evil.example",
            "\\\\evil.example",
            "/%2f%2fevil.example",
            "/%2F%2Fevil.example",
            "/%5cevil.example",
            "/%09/evil.example",
            "https://evil.example/",
            "HTTPS://evil.example/",
            "javascript:alert(1)",
            "/USERS",
            "/Users",
            "/users/",
            "/users/../..//evil.example",
            "/./users",
            "/users#x",
            "/users?q=\\evil",
            "/users?q=\t",
            "/login",
            "/login?next=//evil.example",
            "/api/users",
            "/metrics",
            "/static/app.js",
            "/no-such-page",
            "/devices/1/2",
            " /users",
            "/users\u{a0}",
        ] {
            assert_eq!(safe_next(Some(n)), "/", "{n:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
