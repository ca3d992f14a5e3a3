//! The stylesheet, the script and the icon, compiled into the binary. Each is served under a
//! name that carries a hash of its content, so browsers may keep it for a year
//! (`immutable`) and still never run a stale copy after an upgrade.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

pub struct Asset {
    stem: &'static str,
    ext: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    name: LazyLock<String>,
}

impl Asset {
    /// The path it is served under, e.g. `/assets/app.3f2a9c01d4.css`.
    pub fn path(&self) -> String {
        format!("/assets/{}", *self.name)
    }
}

macro_rules! asset {
    ($stem:literal, $ext:literal, $ct:literal) => {
        Asset {
            stem: $stem,
            ext: $ext,
            content_type: $ct,
            body: include_bytes!(concat!("../assets/", $stem, ".", $ext)),
            name: LazyLock::new(|| {
                let body = include_bytes!(concat!("../assets/", $stem, ".", $ext));
                format!("{}.{}.{}", $stem, &hex::encode(Sha256::digest(body))[..10], $ext)
            }),
        }
    };
}

pub static CSS: Asset = asset!("app", "css", "text/css; charset=utf-8");
pub static JS: Asset = asset!("app", "js", "text/javascript; charset=utf-8");
pub static FAVICON: Asset = asset!("favicon", "svg", "image/svg+xml");

static ALL: [&Asset; 3] = [&CSS, &JS, &FAVICON];

/// `GET /assets/{name}`: the asset whose current name this is; an old name is a 404.
pub async fn serve(Path(name): Path<String>) -> Response {
    match ALL.iter().find(|a| *a.name == name) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")], a.body)
            .into_response(),
        None => {
            let known = ALL.iter().any(|a| name.starts_with(a.stem) && name.ends_with(a.ext));
            let why = if known { "an older version of this file; reload the page" } else { "no such file" };
            (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")], why).into_response()
        }
    }
}
