//! HTTPS on `sslport` (docs/PROTOCOL.md): the protocol over TLS with a configured certificate,
//! and one clear error line when the TLS files cannot be used.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use support::*;

const OPEN_BODY: &str =
    r#"{"ns":"org.jwebsocket.msgctrl","type":"info","name":"maxFrameSize","data":1048840,"jwsWrappedMsg":true}"#;

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM files.
struct Pems {
    dir: tempfile::TempDir,
    cert_pem: String,
}

impl Pems {
    fn new() -> Pems {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_pem = ck.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
        Pems { dir, cert_pem }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_tls(pems: &Pems) -> (Server, SocketAddr) {
    let port = free_port().to_string();
    let cert = pems.cert().to_string_lossy().into_owned();
    let key = pems.key().to_string_lossy().into_owned();
    let server = Server::start(&[("SSLPORT", &port), ("TLS_CERT", &cert), ("TLS_KEY", &key)]);
    let tls = server.tls_addr.unwrap_or_else(|| panic!("no second listening line:\n{}", server.log()));
    assert_eq!(tls.port().to_string(), port);
    assert_ne!(tls, server.addr);
    (server, tls)
}

fn connector(trusted_pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut trusted_pem.as_bytes()) {
        let cert: CertificateDer<'static> = cert.unwrap();
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// One HTTPS request with `Connection: close`; the response, or the TLS/IO error.
fn https(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: ServerName<'static>,
    target: &str,
) -> std::io::Result<Response> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await??;
        let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        // A server closing without close_notify is tolerated: what was read counts.
        let read = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut buf)).await?;
        if let Err(e) = read {
            if buf.is_empty() {
                return Err(e);
            }
        }
        Ok(parse_response(&buf))
    })
}

/// Over HTTPS, open answers the maxFrameSize message and sync delivers the welcome, as over HTTP.
#[test]
fn open_and_sync_over_https() {
    let pems = Pems::new();
    let (server, tls) = start_tls(&pems);
    // The log reader thread reports an address before it appends the line: wait for it.
    let start = Instant::now();
    while server.log().matches("pollgate listening on ").count() < 2 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.log();
    assert_eq!(log.matches("pollgate listening on ").count(), 2, "{log}");
    assert!(log.contains(&format!("pollgate listening on {tls}")), "{log}");
    let tc = connector(&pems.cert_pem);
    let id = format!("{:032x}", rand::random::<u128>());
    let name = || ServerName::try_from("localhost").unwrap();

    let r = https(&tc, tls, name(), &format!("{ENDPOINT}?connectionId={id}&action=open")).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, OPEN_BODY));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    let r = https(&tc, tls, name(), &format!("{ENDPOINT}?connectionId={id}&action=sync")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let packets = r.packets();
    assert_eq!(packets.len(), 1, "{}", r.text());
    let welcome: serde_json::Value = serde_json::from_str(&packets[0]).unwrap();
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["sourceId"], pollgate::protocol::connector_id(&id, "127.0.0.1"));

    // The certificate's IP address name verifies too; the queue is empty now.
    let ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let r = https(&tc, tls, ip, &format!("{ENDPOINT}?connectionId={id}&action=sync")).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));

    // The HTTPS connector is the HTTP one (same connectionId, same address).
    let c = Client { addr: server.addr, connection_id: id.clone() };
    let r = c.get("action=close");
    assert_eq!((r.status, r.text().as_str()), (200, "http.command.close"));
}

/// A client that does not trust the certificate fails the handshake; plain HTTP on the TLS port gets no HTTP answer.
#[test]
fn https_port_speaks_only_tls_with_its_certificate() {
    let pems = Pems::new();
    let (server, tls) = start_tls(&pems);
    let stranger = Pems::new();
    let tc = connector(&stranger.cert_pem);
    let name = ServerName::try_from("localhost").unwrap();
    let err = https(&tc, tls, name, &format!("{ENDPOINT}?connectionId=x&action=sync"));
    assert!(err.is_err(), "an untrusted certificate was accepted");

    let mut s = std::net::TcpStream::connect(tls).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    use std::io::{Read, Write};
    s.write_all(format!("GET {ENDPOINT}?connectionId=x&action=sync HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/"), "plain HTTP answered on the TLS port: {:?}", String::from_utf8_lossy(&buf));
    // The plain port still works.
    assert_eq!(server.client().sync().text(), "[]");
}

/// Runs the binary with TLS files that cannot be used; returns (exit success, stderr).
fn run_with_tls_files(cert: &Path, key: &Path) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .current_dir(repo())
        .env("POLLGATE_PORT", "0")
        .env("POLLGATE_BIND_ADDRESS", "127.0.0.1")
        .env("POLLGATE_SSLPORT", free_port().to_string())
        .env("POLLGATE_TLS_CERT", cert)
        .env("POLLGATE_TLS_KEY", key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return (status.success(), stderr);
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pollgate kept running with unusable TLS files {cert:?} {key:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_one_line_naming(stderr: &str, file: &Path) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got:\n{stderr}");
    assert!(lines[0].contains(&*file.to_string_lossy()), "the line does not name {file:?}: {}", lines[0]);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A TLS certificate or key that cannot be read or holds no PEM makes the binary exit non-zero with one line naming the file.
#[test]
fn unusable_tls_files_exit_with_one_line() {
    let pems = Pems::new();
    let missing = pems.dir.path().join("no-such-cert.pem");
    let (ok, stderr) = run_with_tls_files(&missing, &pems.key());
    assert!(!ok, "exit status success with a missing certificate");
    assert_one_line_naming(&stderr, &missing);

    let missing_key = pems.dir.path().join("no-such-key.pem");
    let (ok, stderr) = run_with_tls_files(&pems.cert(), &missing_key);
    assert!(!ok, "exit status success with a missing key");
    assert_one_line_naming(&stderr, &missing_key);

    // A folder is not readable as a file.
    let (ok, stderr) = run_with_tls_files(pems.dir.path(), &pems.key());
    assert!(!ok, "exit status success with a folder as certificate");
    assert_one_line_naming(&stderr, pems.dir.path());

    // Readable, but no PEM inside.
    let garbage = pems.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let (ok, stderr) = run_with_tls_files(&garbage, &pems.key());
    assert!(!ok, "exit status success with a certificate file without PEM");
    assert_one_line_naming(&stderr, &garbage);
    let (ok, stderr) = run_with_tls_files(&pems.cert(), &garbage);
    assert!(!ok, "exit status success with a key file without PEM");
    assert_one_line_naming(&stderr, &garbage);
}
