//! Static files (docs/PROTOCOL.md, "The endpoint"): `document_root` under `/` and `{context}/`, with
//! validators and ranges, and nothing outside the root ever served.

mod support;

use std::path::Path;

use support::*;

/// A document root in a temp folder, with a secret next to it (outside the root).
struct Site {
    dir: tempfile::TempDir,
}

const PAGE: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz\n";
const SECRET: &[u8] = b"TOP SECRET, outside the document root\n";

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("root/page.txt"), PAGE);
        write(&dir.path().join("root/sub/deep.html"), b"<p>deep</p>");
        write(&dir.path().join("secret.txt"), SECRET);
        write(&dir.path().join("outside/inner.txt"), SECRET);
        write(&dir.path().join("outside/index.html"), SECRET);
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), dir.path().join("root/link.txt")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", dir.path().join("root/rel.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), dir.path().join("root/dirlink")).unwrap();
        Site { dir }
    }

    fn root(&self) -> String {
        self.dir.path().join("root").to_string_lossy().into_owned()
    }

    fn start(&self) -> Server {
        Server::start(&[("DOCUMENT_ROOT", &self.root())])
    }
}

fn media_type(r: &Response) -> String {
    let ct = r.header("content-type").unwrap_or_else(|| panic!("no content type: {:?}", r.headers));
    ct.split(';').next().unwrap().trim().to_ascii_lowercase()
}

fn assert_not_found(r: &Response, secret: &[u8], target: &str) {
    assert_eq!(r.status, 404, "{target}: {}", r.text());
    assert!(!r.body.windows(secret.len().min(12)).any(|w| w == &secret[..secret.len().min(12)]), "{target} leaked");
}

/// `GET /` and `GET /jWebSocket/` serve the shipped `static/index.html`.
#[test]
fn index_is_served_under_root_and_context() {
    let server = Server::start(&[]);
    let index = std::fs::read(repo().join("static/index.html")).unwrap();
    for target in ["/", "/jWebSocket/", "/index.html", "/jWebSocket/index.html"] {
        let r = get(server.addr, target);
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        assert_eq!(r.body, index, "{target}");
        assert_eq!(media_type(&r), "text/html", "{target}");
    }
}

/// A file of the document root is served under `/` and `/jWebSocket/` with `ETag`, `Last-Modified` and its length.
#[test]
fn files_are_served_with_validators() {
    let site = Site::new();
    let server = site.start();
    for target in ["/page.txt", "/jWebSocket/page.txt"] {
        let r = get(server.addr, target);
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        assert_eq!(r.body, PAGE.to_vec());
        assert_eq!(media_type(&r), "text/plain");
        assert_eq!(r.header("content-length"), Some(PAGE.len().to_string().as_str()));
        let etag = r.header("etag").expect("ETag").to_owned();
        let modified = r.header("last-modified").expect("Last-Modified").to_owned();
        assert!(etag.starts_with('"') || etag.starts_with("W/\""), "{etag}");
        // The validators work: unchanged file → 304 without a body (as browsers ask: both headers).
        let r = get_with(server.addr, target, &[("If-Modified-Since", &modified)]);
        assert_eq!(r.status, 304, "{target} If-Modified-Since");
        assert!(r.body.is_empty());
        let r = get_with(server.addr, target, &[("If-None-Match", &etag), ("If-Modified-Since", &modified)]);
        assert_eq!(r.status, 304, "{target} If-None-Match + If-Modified-Since");
        assert!(r.body.is_empty());
    }
    let r = get(server.addr, "/jWebSocket/sub/deep.html");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"<p>deep</p>"[..]));
    assert_eq!(media_type(&r), "text/html");
}

/// `If-None-Match` alone with the current `ETag` gets 304 (RFC 9110 13.1.2), as the served `ETag` promises.
#[test]
fn if_none_match_gets_304() {
    let site = Site::new();
    let server = site.start();
    let r = get(server.addr, "/page.txt");
    let etag = r.header("etag").expect("ETag").to_owned();
    let r = get_with(server.addr, "/page.txt", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    // A different tag still gets the file.
    let r = get_with(server.addr, "/page.txt", &[("If-None-Match", "\"other\"")]);
    assert_eq!((r.status, r.body.as_slice()), (200, PAGE));
}

/// A `Range` request gets 206 with exactly the requested slice and its `Content-Range`.
#[test]
fn range_requests_get_the_exact_slice() {
    let site = Site::new();
    let server = site.start();
    let len = PAGE.len();
    for target in ["/page.txt", "/jWebSocket/page.txt"] {
        let r = get_with(server.addr, target, &[("Range", "bytes=10-15")]);
        assert_eq!(r.status, 206, "{target}: {}", r.text());
        assert_eq!(r.body, PAGE[10..=15].to_vec());
        assert_eq!(r.header("content-range"), Some(format!("bytes 10-15/{len}").as_str()));
        assert_eq!(r.header("content-length"), Some("6"));
        // A suffix range: the last 5 bytes.
        let r = get_with(server.addr, target, &[("Range", "bytes=-5")]);
        assert_eq!(r.status, 206, "{target}");
        assert_eq!(r.body, PAGE[len - 5..].to_vec());
        // Open-ended.
        let r = get_with(server.addr, target, &[("Range", "bytes=30-")]);
        assert_eq!(r.status, 206, "{target}");
        assert_eq!(r.body, PAGE[30..].to_vec());
        // Past the end: 416.
        let r = get_with(server.addr, target, &[("Range", "bytes=1000-2000")]);
        assert_eq!(r.status, 416, "{target}");
    }
}

/// `..` in any spelling never leaves the document root: `/../Cargo.toml` and friends are 404.
#[test]
fn traversal_is_404() {
    let server = Server::start(&[]);
    let cargo = std::fs::read(repo().join("Cargo.toml")).unwrap();
    for target in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2E%2E/Cargo.toml",
        "/..%2fCargo.toml",
        "/%2e%2e%2fCargo.toml",
        "/jWebSocket/../Cargo.toml",
        "/jWebSocket/%2e%2e/Cargo.toml",
        "/jWebSocket/..%2FCargo.toml",
        "/static/../../Cargo.toml",
        "/..%5cCargo.toml",
        "/../../../../../../etc/passwd",
    ] {
        let r = get(server.addr, target);
        assert_not_found(&r, &cargo, target);
        assert!(!r.text().contains("[package]"), "{target} leaked Cargo.toml");
    }
    // The same with a temp root whose parent holds a secret.
    let site = Site::new();
    let server = site.start();
    for target in
        ["/../secret.txt", "/%2e%2e/secret.txt", "/jWebSocket/../secret.txt", "/jWebSocket/%2e%2e%2fsecret.txt"]
    {
        let r = get(server.addr, target);
        assert_not_found(&r, SECRET, target);
    }
}

/// A symlink inside the root that points outside it is 404, whether it is a file or a folder.
#[test]
fn symlink_out_of_the_root_is_404() {
    let site = Site::new();
    let server = site.start();
    assert!(Path::new(&site.root()).join("link.txt").exists());
    for target in [
        "/link.txt",
        "/jWebSocket/link.txt",
        "/rel.txt",
        "/jWebSocket/rel.txt",
        "/dirlink/inner.txt",
        "/jWebSocket/dirlink/inner.txt",
        "/dirlink/",
    ] {
        let r = get(server.addr, target);
        assert_not_found(&r, SECRET, target);
        let r = get_with(server.addr, target, &[("Range", "bytes=0-3")]);
        assert_not_found(&r, SECRET, target);
    }
}

/// A file that does not exist is 404.
#[test]
fn missing_is_404() {
    let site = Site::new();
    let server = site.start();
    for target in ["/nope.txt", "/jWebSocket/nope.txt", "/sub/nope.html", "/nope/", "/jWebSocket/nope/deeper"] {
        let r = get(server.addr, target);
        assert_eq!((r.status, r.text().as_str()), (404, "Not found!"), "{target}");
    }
}
