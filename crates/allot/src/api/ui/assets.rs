//! The dashboard's static files, embedded in the binary: the vendored
//! htmx, its SSE extension and uPlot (`crates/allot/ui/vendor`, see its
//! `VENDOR.md`), and the dashboard's own script and style (`crates/allot/ui`).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "ui/"]
#[include = "*.js"]
#[include = "*.css"]
#[include = "vendor/*.js"]
#[include = "vendor/*.css"]
struct Files;

/// A file by its name (`htmx.min.js`, `app.js`): the dashboard's own first, then the vendored.
fn find(name: &str) -> Option<rust_embed::EmbeddedFile> {
    if name.contains('/') {
        return None;
    }
    Files::get(name).or_else(|| Files::get(&format!("vendor/{name}")))
}

/// `GET /ui/assets/{file}`.
pub(super) async fn serve(Path(file): Path<String>) -> Response {
    let Some(f) = find(&file) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let kind = if file.ends_with(".js") { "text/javascript; charset=utf-8" } else { "text/css; charset=utf-8" };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], f.data).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_asset_is_embedded_and_nothing_outside_the_folder_is_served() {
        for name in ["htmx.min.js", "htmx-ext-sse.min.js", "uPlot.iife.min.js", "uPlot.min.css", "app.js", "app.css"] {
            assert!(find(name).is_some_and(|f| !f.data.is_empty()), "{name} is not embedded");
        }
        for name in ["../Cargo.toml", "vendor/../../Cargo.toml", "VENDOR.md", "htmx.LICENSE"] {
            assert!(find(name).is_none(), "{name} is served");
        }
    }
}
