//! The document root, served under `/` and `{context}/` by hyper-staticfile (ranges,
//! `ETag`/`Last-Modified`, content types). `..` is removed by its path sanitiser; symlinks
//! that lead out of the root are refused here.

use std::path::Path;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_staticfile::{AcceptEncoding, ResolveResult, Resolver, ResponseBuilder};

use super::body::{full, text_response, Body};

pub struct StaticFiles {
    resolver: Resolver,
}

impl StaticFiles {
    pub fn new(root: &Path) -> StaticFiles {
        let root = root.to_path_buf();
        let mut resolver = Resolver::new(root.clone());
        resolver.set_rewrite(move |params| {
            let root = root.clone();
            async move {
                // Resolve symlinks and refuse anything that lands outside the root.
                let inside = match (root.canonicalize(), root.join(&params.path).canonicalize()) {
                    (Ok(r), Ok(p)) => p.starts_with(r),
                    _ => true, // missing: the resolver answers 404 itself
                };
                if inside {
                    Ok(params)
                } else {
                    Err(std::io::Error::new(std::io::ErrorKind::NotFound, "outside the document root"))
                }
            }
        });
        StaticFiles { resolver }
    }

    /// Serves `path` (relative to the mount point `mount`, which is "" or the context).
    pub async fn serve<B>(&self, req: &Request<B>, mount: &str, path: &str) -> Response<Body> {
        if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
            let mut resp = text_response(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed!");
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let result = match self.resolver.resolve_path(path, AcceptEncoding::none()).await {
            Ok(r) => r,
            Err(_) => ResolveResult::NotFound,
        };
        if matches!(result, ResolveResult::NotFound | ResolveResult::PermissionDenied) {
            return text_response(StatusCode::NOT_FOUND, "Not found!");
        }
        let built = ResponseBuilder::new().request(req).path(path).build(result);
        let Ok(resp) = built else {
            return text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error!");
        };
        let (mut parts, body) = resp.into_parts();
        // hyper-staticfile answers If-Modified-Since only; If-None-Match is answered here.
        if parts.status == StatusCode::OK
            && etag_matches(req.headers().get(header::IF_NONE_MATCH), parts.headers.get(header::ETAG))
        {
            parts.status = StatusCode::NOT_MODIFIED;
            parts.headers.remove(header::CONTENT_LENGTH);
            return Response::from_parts(parts, full(""));
        }
        if let Some(location) = parts.headers.get(header::LOCATION).and_then(|l| l.to_str().ok()) {
            if let Ok(v) = HeaderValue::from_str(&format!("{mount}{location}")) {
                parts.headers.insert(header::LOCATION, v);
            }
        }
        Response::from_parts(parts, body.boxed_unsync())
    }
}

/// Weak comparison of `If-None-Match` (a list, or `*`) with the response's `ETag`.
fn etag_matches(if_none_match: Option<&HeaderValue>, etag: Option<&HeaderValue>) -> bool {
    let (Some(wanted), Some(etag)) = (if_none_match.and_then(|v| v.to_str().ok()), etag.and_then(|v| v.to_str().ok()))
    else {
        return false;
    };
    let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    wanted.split(',').any(|t| t.trim() == "*" || weak(t) == weak(etag))
}
