//! The operators' web console (`--console-addr`): one page, embedded in the binary, that talks
//! gRPC-Web to our own Admin and Broker services on the same port. It can do nothing the API
//! does not allow: every click is an RPC the principal's token must be allowed to make.
//!
//! The page's files live in `src/console/assets` (plain HTML, CSS and JavaScript: no build
//! step) with one vendored library, protobufjs, rebuilt from its lockfile by
//! `scripts/console-vendor.sh`. The page parses our `.proto` files, served from here too, so it
//! always speaks the API this binary serves.

pub mod history;

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tonic::service::Routes;

/// Where the page and its files are served; requests under it need no credentials (they hold
/// no data) and no gRPC method lives there.
pub const ASSET_PREFIX: &str = "/console/";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// One embedded file: its path under the prefix, its type, and where it lives in the source.
macro_rules! asset {
    ($path:literal, $content_type:expr, $file:literal) => {
        Asset {
            path: concat!("/console/", $path),
            content_type: $content_type,
            body: include_bytes!($file),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("", HTML, "assets/index.html"),
    asset!("console.css", CSS, "assets/console.css"),
    asset!("grpc-web.js", JS, "assets/grpc-web.js"),
    asset!("charts.js", JS, "assets/charts.js"),
    asset!("console.js", JS, "assets/console.js"),
    asset!("protobuf.min.js", JS, "assets/protobuf.min.js"),
    asset!("uPlot.min.js", JS, "assets/uPlot.min.js"),
    asset!("uPlot.min.css", CSS, "assets/uPlot.min.css"),
    asset!("uPlot.LICENSE", TEXT, "assets/uPlot.LICENSE"),
    asset!("protobuf.LICENSE", TEXT, "assets/protobuf.LICENSE"),
    asset!(
        "proto/streamgate/v1/broker.proto",
        TEXT,
        "../../proto/streamgate/v1/broker.proto"
    ),
    asset!(
        "proto/streamgate/v1/subscription.proto",
        TEXT,
        "../../proto/streamgate/v1/subscription.proto"
    ),
    asset!(
        "proto/streamgate/v1/admin.proto",
        TEXT,
        "../../proto/streamgate/v1/admin.proto"
    ),
];

/// What the page may load and call: only this origin, no inline script or style. protobufjs
/// compiles each message's encoder from the served `.proto` files (`new Function`), hence
/// `'unsafe-eval'`: it only ever evaluates code built from our own descriptors, and parsing them
/// at run time means the page always speaks the API of the binary that serves it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes: its files under [`ASSET_PREFIX`] (and `/`, which leads there), and
/// `grpc` (our services) over gRPC-Web for every other request.
pub fn routes(grpc: Routes) -> Routes {
    // gRPC-Web only for the services: tonic-web answers 400 to a plain HTTP/1 GET.
    let grpc_web = grpc
        .into_axum_router()
        .layer(tonic_web::GrpcWebLayer::new());
    let router = axum::Router::new()
        .route("/", get(redirect_to_console))
        .route("/console", get(redirect_to_console))
        .route("/console/", get(serve_asset))
        .route("/console/{*file}", get(serve_asset))
        .fallback_service(grpc_web);
    Routes::from(router)
}

async fn redirect_to_console() -> Response {
    (
        StatusCode::FOUND,
        [(header::LOCATION, HeaderValue::from_static(ASSET_PREFIX))],
    )
        .into_response()
}

async fn serve_asset(uri: Uri) -> Response {
    let path = uri.path();
    let Some(asset) = ASSETS.iter().find(|asset| asset.path == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, HeaderValue::from_static(TEXT))],
            format!("no console file at {path}; the console is at {ASSET_PREFIX}\n"),
        )
            .into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            // The files change with the binary; a browser must not keep a stale page.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
        ],
        asset.body,
    )
        .into_response()
}
