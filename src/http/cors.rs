//! CORS: allowed origins (`domains`), the headers of an answer to an allowed origin, and
//! the answer to a preflight.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::{text_response, Body};

/// The response with the CORS headers for `origin` (an allowed one), if any.
pub(super) fn with_cors(mut resp: Response<Body>, origin: Option<HeaderValue>) -> Response<Body> {
    if let Some(origin) = origin {
        cors_headers(resp.headers_mut(), origin);
    }
    resp
}

fn cors_headers(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("X-Pollgate-Seq, X-Pollgate-Close-Reason"),
    );
}

/// The answer to a CORS preflight from an allowed origin (headers added by the caller).
pub(super) fn preflight(request_headers: &HeaderMap) -> Response<Body> {
    let mut resp = text_response(StatusCode::NO_CONTENT, "");
    let headers = resp.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    let allow = request_headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static("Content-Type, X-Pollgate-Connection"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow);
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    resp
}

/// Matches `text` against a pattern where `*` stands for any run of characters.
pub(super) fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_patterns() {
        assert!(glob_match("*", "http://evil.example"));
        assert!(glob_match("http*://localhost*", "https://localhost:8787"));
        assert!(glob_match("http*://*.jwebsocket.org", "http://www.jwebsocket.org"));
        assert!(!glob_match("http*://*.jwebsocket.org", "http://jwebsocket.org.evil.com"));
        assert!(!glob_match("http://a.com", "http://a.com.evil"));
    }
}
