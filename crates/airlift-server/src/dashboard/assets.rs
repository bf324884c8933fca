//! The dashboard's scripts and style, embedded in the binary, and the
//! security headers every dashboard response carries.

use axum::extract::{Path, Request};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// An embedded file: name in URLs, media type, bytes.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

/// The versioned htmx file's URL; pages link it by this name.
pub const HTMX: &str = "/ui/assets/htmx-2.0.11.min.js";
/// Our script.
pub const SCRIPT: &str = "/ui/assets/dashboard.js";
/// Our style sheet.
pub const STYLE: &str = "/ui/assets/dashboard.css";

const ASSETS: &[Asset] = &[
    Asset {
        name: "htmx-2.0.11.min.js",
        media_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/htmx-2.0.11.min.js"),
    },
    Asset {
        name: "dashboard.js",
        media_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/dashboard.js"),
    },
    Asset {
        name: "dashboard.css",
        media_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/dashboard.css"),
    },
];

/// `GET /ui/assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (CONTENT_TYPE, asset.media_type),
            // Our own files change with the binary, so they are revalidated;
            // a stale script after an upgrade would be worse than a request.
            (CACHE_CONTROL, "no-cache"),
        ],
        asset.bytes,
    )
        .into_response()
}

/// The policy: nothing from another origin, no inline script or style, no
/// framing, forms only to ourselves.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Adds the security headers to every dashboard response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if !headers.contains_key(CACHE_CONTROL) {
        // Pages show live data and who is signed in: never from a cache.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_linked_asset_is_embedded() {
        for url in [HTMX, SCRIPT, STYLE] {
            let name = url.trim_start_matches("/ui/assets/");
            assert!(
                ASSETS
                    .iter()
                    .any(|asset| asset.name == name && !asset.bytes.is_empty()),
                "{url} is linked but not embedded"
            );
        }
    }
}
