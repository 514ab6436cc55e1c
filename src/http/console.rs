//! The web console (`server.console`): `GET /` and `GET /console/{file}` serve the files of
//! `console/` (plain HTML, CSS and JavaScript, no build step), compiled into the binary so that
//! it works air-gapped. Each file is gzipped once, on first use, and answered gzipped to
//! clients that accept it; an `ETag` (its SHA-256) makes a revalidation a bare 304, and
//! `Cache-Control: no-cache` makes every load revalidate, so an upgraded binary is never
//! served stale. A strict Content-Security-Policy allows nothing but this origin: no inline
//! script or style, no other host. The routes sit outside the API's guards: the files are the
//! same for everyone and hold no data; every API call the console makes carries its key.

use std::io::Write as _;
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::error::Code;

/// The console's policy: this origin only, no inline code, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The gzipped size of all the files together may not exceed this (issue 22's budget).
pub const BUDGET_GZIP_BYTES: usize = 500 * 1024;

/// The files, by name under `/console/` (`index.html` is also `/`).
const FILES: [(&str, &str, &[u8]); 4] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/app.css"),
    ),
    (
        "graph.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/graph.js"),
    ),
];

/// One served file (bodies as `Bytes`: a response shares them instead of copying).
pub struct Asset {
    pub name: &'static str,
    mime: &'static str,
    pub raw: Bytes,
    pub gzip: Bytes,
    etag: String,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, mime, raw)| Asset {
            name,
            mime,
            raw: Bytes::from_static(raw),
            gzip: gzip(raw),
            etag: format!("\"{}\"", &hex::encode(Sha256::digest(raw))[..32]),
        })
        .collect()
});

/// Every file, compressed (for the size budget and its report).
pub fn assets() -> &'static [Asset] {
    &ASSETS
}

fn gzip(raw: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(raw).expect("writing to memory");
    e.finish().expect("writing to memory").into()
}

/// The console's routes (mounted by [`super::router`] when `server.console` is on).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/console/{file}",
            get(|Path(f): Path<String>, h: HeaderMap| async move { serve(&f, &h) }),
        )
}

/// Whether the client takes gzip (`Accept-Encoding: gzip`, not `gzip;q=0`).
fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

fn serve(name: &str, req: &HeaderMap) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::new(Code::RouteNotFound, format!("no console file `{name}`"))
            .into_response();
    };
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag || t.trim() == "*"));
    let gz = accepts_gzip(req);
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if gz {
        a.gzip.clone().into_response()
    } else {
        a.raw.clone().into_response()
    };
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k, v: &str| {
        h.insert(k, HeaderValue::from_str(v).expect("ascii header"));
    };
    set(h, header::CONTENT_TYPE, a.mime);
    set(h, header::ETAG, &a.etag);
    set(h, header::CACHE_CONTROL, "no-cache");
    set(h, header::VARY, "accept-encoding");
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    if gz && !fresh {
        set(h, header::CONTENT_ENCODING, "gzip");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read as _;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_files_fit_the_budget_and_unzip_to_themselves() {
        let total: usize = assets().iter().map(|a| a.gzip.len()).sum();
        for a in assets() {
            let mut back = Vec::new();
            GzDecoder::new(&a.gzip[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back, a.raw, "{}", a.name);
            println!(
                "console/{}: {} bytes, {} gzipped",
                a.name,
                a.raw.len(),
                a.gzip.len()
            );
        }
        println!("console: {total} bytes gzipped (budget {BUDGET_GZIP_BYTES})");
        assert!(total <= BUDGET_GZIP_BYTES, "{total} bytes gzipped");
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_take_it() {
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1.0, GZIP;q=0.5"
        )])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "br")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
        let plain = serve("app.css", &HeaderMap::new());
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let zipped = serve("app.css", &headers(&[("accept-encoding", "gzip")]));
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(zipped.headers()[header::VARY], "accept-encoding");
    }

    #[test]
    fn a_matching_etag_is_a_bare_304_and_the_policy_is_always_sent() {
        let first = serve("index.html", &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        assert_eq!(first.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        let again = serve("index.html", &headers(&[("if-none-match", &etag)]));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let other = serve("index.html", &headers(&[("if-none-match", "\"stale\"")]));
        assert_eq!(other.status(), StatusCode::OK);
        assert_eq!(
            serve("nope.js", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
