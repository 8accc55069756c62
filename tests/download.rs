//! The `download` action of docs/PROTOCOL.md ("download"): parameters, rights, aliases, the confinement of
//! every path to its alias root, safe headers and streaming of large files.

mod support;

use support::*;

const NS_FS: &str = "org.jwebsocket.plugins.filesystem";

/// The exact token-level error body of a download (A.4, A.5).
fn fs_error(msg: &str) -> String {
    serde_json::json!({
        "type": "response",
        "code": -1,
        "msg": msg,
        "utid": -1,
        "ns": NS_FS,
        "reqType": "load",
    })
    .to_string()
}

/// A client that is open and logged in as `user` (password = user name, the demo accounts).
fn logged_in(server: &Server, user: &str) -> Client {
    let c = server.client();
    c.open();
    let r = c.login(user, user);
    assert_eq!(r["code"], 0, "login: {r}");
    c
}

/// Asserts a download refused with the token-level error `msg` (200, JSON).
fn assert_refused(r: &Response, msg: &str) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), fs_error(msg));
    assert!(r.header("content-disposition").is_none(), "an error is no attachment: {:?}", r.headers);
}

/// The media type of a response without parameters (`text/plain; charset=…` → `text/plain`).
fn media_type(r: &Response) -> String {
    let ct = r.header("content-type").unwrap_or_else(|| panic!("no content type: {:?}", r.headers));
    ct.split(';').next().unwrap().trim().to_ascii_lowercase()
}

/// A download without `filename` (or with an empty one) is refused with 400 `Missing filename parameter!`.
#[test]
fn missing_filename_is_400() {
    let server = Server::start(&[]);
    let c = logged_in(&server, "guest");
    for q in ["action=download", "action=download&filename=", "action=download&alias=publicDir"] {
        let r = c.get(q);
        assert_eq!((r.status, r.text().as_str()), (400, "Missing filename parameter!"), "{q}");
    }
}

/// Without login a download answers 200 with the JSON `access denied` error of the filesystem plugin.
#[test]
fn not_logged_in_is_access_denied() {
    let server = Server::start(&[]);
    write(&server.fs_root().join("public/open.txt"), b"public");
    let c = server.client();
    c.open();
    for q in ["action=download&filename=open.txt", "action=download&filename=open.txt&alias=publicDir"] {
        let r = c.get(q);
        assert_refused(&r, "access denied");
        assert_eq!(r.json()["ns"], NS_FS);
        assert_eq!(r.json()["reqType"], "load");
    }
}

/// The default alias is the user's own private folder; the file comes back byte-exact with its headers.
#[test]
fn downloads_from_the_private_dir_by_default() {
    let server = Server::start(&[]);
    let content = b"hello guest\r\nline two\n\x00\xff binary tail";
    write(&server.fs_root().join("private/guest/note.txt"), content);
    write(&server.fs_root().join("private/root/note.txt"), b"root's note");
    let c = logged_in(&server, "guest");
    for q in ["action=download&filename=note.txt", "action=download&filename=note.txt&alias=privateDir"] {
        let r = c.get(q);
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(r.body, content.to_vec(), "{q}");
        assert_eq!(media_type(&r), "text/plain");
        assert_eq!(r.header("content-length"), Some(content.len().to_string().as_str()));
        assert_eq!(r.header("content-disposition"), Some("attachment; filename=note.txt"));
    }
    // root gets root's own note under the same name.
    let r = logged_in(&server, "root").get("action=download&filename=note.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"root's note"[..]));
}

/// `alias=publicDir` serves `{fs_root}/public/`, also from a sub folder, with the content type of the extension.
#[test]
fn downloads_from_the_public_dir() {
    let server = Server::start(&[]);
    let json = br#"{"a":[1,2,3]}"#;
    write(&server.fs_root().join("public/data.json"), json);
    write(&server.fs_root().join("public/sub/page.html"), b"<p>x</p>");
    let c = logged_in(&server, "guest");
    let r = c.get("action=download&filename=data.json&alias=publicDir");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, json.to_vec());
    assert_eq!(media_type(&r), "application/json");
    assert_eq!(r.header("content-length"), Some("13"));
    assert_eq!(r.header("content-disposition"), Some("attachment; filename=data.json"));

    let r = c.get("action=download&filename=sub/page.html&alias=publicDir");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b"<p>x</p>".to_vec());
    assert_eq!(media_type(&r), "text/html");
    assert_eq!(r.header("content-disposition"), Some("attachment; filename=page.html"));

    // The public file is not in the private folder.
    let r = c.get("action=download&filename=data.json");
    assert_refused(&r, "The file 'data.json' does not exist in the given alias!");
}

/// An alias other than privateDir/publicDir is refused with `The given alias 'X' does not exist!`.
#[test]
fn unknown_alias_is_refused() {
    let server = Server::start(&[]);
    write(&server.fs_root().join("private/guest/a.txt"), b"a");
    let c = logged_in(&server, "guest");
    let r = c.get("action=download&filename=a.txt&alias=rootDir");
    assert_refused(&r, "The given alias 'rootDir' does not exist!");
    let r = c.get("action=download&filename=a.txt&alias=..%2Fpublic");
    assert_refused(&r, "The given alias '../public' does not exist!");
}

/// `..` paths, absolute paths and percent-encoded separators never leave the alias root.
#[test]
fn traversal_is_out_of_the_location() {
    let server = Server::start(&[]);
    let fs = server.fs_root();
    let secret = b"TOP SECRET";
    write(&fs.join("secret.txt"), secret);
    write(&fs.join("public/ok.txt"), b"ok");
    let c = logged_in(&server, "guest");
    let absolute = fs.join("secret.txt").to_string_lossy().into_owned();
    let cases: Vec<(String, String)> = vec![
        ("../../secret.txt".into(), "../../secret.txt".into()),
        ("..%2F..%2Fsecret.txt".into(), "../../secret.txt".into()),
        ("..%2f..%2fsecret.txt".into(), "../../secret.txt".into()),
        ("..%5C..%5Csecret.txt".into(), "..\\..\\secret.txt".into()),
        ("sub/../../../secret.txt".into(), "sub/../../../secret.txt".into()),
        (enc(&absolute), absolute.clone()),
        ("%2Fetc%2Fpasswd".into(), "/etc/passwd".into()),
    ];
    for (raw_name, decoded) in &cases {
        for alias in ["", "&alias=publicDir"] {
            let r = c.get(&format!("action=download&filename={raw_name}{alias}"));
            assert_refused(&r, &format!("The file '{decoded}' is out of the file-system location!"));
            assert!(!r.text().contains("TOP SECRET"));
        }
    }
    // `..` that stays inside the alias is still a `..`: refused, not resolved.
    let r = c.get("action=download&filename=x%2F..%2Fok.txt&alias=publicDir");
    assert_refused(&r, "The file 'x/../ok.txt' is out of the file-system location!");
}

/// A symlink inside the alias that points outside it is refused, for files and folders alike.
#[test]
fn symlink_out_of_the_alias_is_refused() {
    let server = Server::start(&[]);
    let fs = server.fs_root();
    write(&fs.join("outside/secret.txt"), b"TOP SECRET");
    std::os::unix::fs::symlink(fs.join("outside/secret.txt"), fs.join("private/guest/link.txt")).unwrap();
    std::os::unix::fs::symlink(fs.join("outside"), fs.join("public/dirlink")).unwrap();
    std::os::unix::fs::symlink("../../outside/secret.txt", fs.join("private/guest/rel.txt")).unwrap();
    let c = logged_in(&server, "guest");
    for (q, name) in [
        ("action=download&filename=link.txt", "link.txt"),
        ("action=download&filename=rel.txt", "rel.txt"),
        ("action=download&filename=dirlink%2Fsecret.txt&alias=publicDir", "dirlink/secret.txt"),
    ] {
        let r = c.get(q);
        assert_refused(&r, &format!("The file '{name}' is out of the file-system location!"));
        assert!(!r.text().contains("TOP SECRET"));
    }
}

/// Another user's private folder is out of reach through `../root/...`.
#[test]
fn other_users_private_dir_is_refused() {
    let server = Server::start(&[]);
    write(&server.fs_root().join("private/root/r.txt"), b"root only");
    let c = logged_in(&server, "guest");
    for (q, name) in [
        ("action=download&filename=../root/r.txt", "../root/r.txt"),
        ("action=download&filename=..%2Froot%2Fr.txt", "../root/r.txt"),
        ("action=download&filename=../private/root/r.txt&alias=publicDir", "../private/root/r.txt"),
    ] {
        let r = c.get(q);
        assert_refused(&r, &format!("The file '{name}' is out of the file-system location!"));
    }
}

/// A file that is not there (or a folder) is `The file 'F' does not exist in the given alias!`.
#[test]
fn missing_file_does_not_exist() {
    let server = Server::start(&[]);
    std::fs::create_dir_all(server.fs_root().join("public/folder")).unwrap();
    let c = logged_in(&server, "guest");
    let r = c.get("action=download&filename=nope.txt");
    assert_refused(&r, "The file 'nope.txt' does not exist in the given alias!");
    let r = c.get("action=download&filename=nope.txt&alias=publicDir");
    assert_refused(&r, "The file 'nope.txt' does not exist in the given alias!");
    let r = c.get("action=download&filename=folder&alias=publicDir");
    assert_refused(&r, "The file 'folder' does not exist in the given alias!");
}

/// A file name with CR/LF never injects a header: neither in the error nor in `Content-Disposition`.
#[test]
fn crlf_in_the_filename_cannot_inject_headers() {
    let server = Server::start(&[]);
    let evil = "a\r\nX-Injected: yes\r\nSet-Cookie: s=1.txt";
    write(&server.fs_root().join("private/guest").join(evil), b"evil content");
    let c = logged_in(&server, "guest");
    let q = "action=download&filename=a%0D%0AX-Injected:%20yes%0D%0ASet-Cookie:%20s=1.txt";
    let r = c.get(q);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b"evil content".to_vec());
    assert!(r.header("x-injected").is_none(), "header injected: {:?}", r.headers);
    assert!(r.header("set-cookie").is_none(), "header injected: {:?}", r.headers);
    let disposition = r.header("content-disposition").expect("content-disposition");
    assert!(disposition.starts_with("attachment; "), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''a%0D%0AX-Injected%3A%20yes%0D%0ASet-Cookie%3A%20s%3D1.txt"),
        "{disposition}"
    );
    // Missing file with such a name: the name stays inside the JSON error.
    let r = c.get("action=download&filename=b%0D%0AX-Injected:%20yes");
    assert_refused(&r, "The file 'b\r\nX-Injected: yes' does not exist in the given alias!");
    assert!(r.header("x-injected").is_none(), "header injected: {:?}", r.headers);
}

/// A 20 MB file is streamed byte-exact with its Content-Length.
#[test]
fn large_file_downloads_byte_exact() {
    let server = Server::start(&[]);
    const LEN: usize = 20 * 1024 * 1024;
    // A pseudo-random pattern, so that a dropped or repeated chunk cannot go unnoticed.
    let mut content = Vec::with_capacity(LEN);
    let mut x: u32 = 0x1234_5678;
    while content.len() < LEN {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        content.extend_from_slice(&x.to_le_bytes());
    }
    content.truncate(LEN);
    write(&server.fs_root().join("public/big.bin"), &content);
    let c = logged_in(&server, "guest");
    let r = c.get("action=download&filename=big.bin&alias=publicDir");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(LEN.to_string().as_str()));
    assert_eq!(media_type(&r), "application/octet-stream");
    assert_eq!(r.header("content-disposition"), Some("attachment; filename=big.bin"));
    assert_eq!(r.body.len(), LEN);
    assert!(r.body == content, "the body differs from the file");
}
