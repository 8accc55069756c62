//! An engine.io 4 long-polling client with the little of socket.io 5 the benchmark needs.
//!
//! The wire, text packets only: `GET {path}?EIO=4&transport=polling` opens a session
//! (`0{"sid":...}`); with `&sid=SID`, a POST carries packets and a GET polls for them, the
//! packets of one body joined by the byte 0x1e. Engine.io packet types: `1` close, `2`
//! ping (the client answers `3`, pong), `4` message, `6` noop. Socket.io rides inside
//! messages: `40` connects to the namespace `/` (answered `40{"sid":...}`), `42[name,data]`
//! is an event, `44` a refused connect.

use std::time::Duration;

use crate::http::{Conn, Res};

/// The separator of packets in one body.
const SEPARATOR: char = '\u{1e}';

/// How long a poll may be held: the servers answer a held poll at their ping interval
/// (25 s by default) at the latest.
const POLL_WAIT: Duration = Duration::from_secs(60);

/// One engine.io session, used on whatever connection the caller passes.
pub struct Session {
    pub sid: String,
    /// The session's request target.
    target: String,
}

impl Session {
    /// Opens a session (and, with `connect`, the socket.io namespace `/`) on `conn`.
    pub async fn open(conn: &mut Conn, path: &str, connect: bool) -> Res<Session> {
        let (status, body) = conn.get(&format!("{path}?EIO=4&transport=polling")).await?;
        if status != 200 {
            return Err(format!("handshake: status {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        let text = std::str::from_utf8(&body)?;
        let open = text.split(SEPARATOR).next().and_then(|p| p.strip_prefix('0'));
        let open: serde_json::Value = serde_json::from_str(open.ok_or("handshake: no open packet")?)?;
        let sid = open["sid"].as_str().ok_or("handshake: no sid")?.to_string();
        let session = Session::join(path, sid);
        if connect {
            session.connect(conn).await?;
        }
        Ok(session)
    }

    /// The session `sid`, for a second connection of the same client.
    pub fn join(path: &str, sid: String) -> Session {
        let target = format!("{path}?EIO=4&transport=polling&sid={sid}");
        Session { sid, target }
    }

    /// POSTs packets (already joined); the server answers `ok`.
    pub async fn post(&self, conn: &mut Conn, packets: &[u8]) -> Res<()> {
        let (status, body) = conn.request("POST", &self.target, Some(packets), None).await?;
        if status != 200 {
            return Err(format!("post: status {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        Ok(())
    }

    /// One poll: the packets it brought, without pings and noops; a ping is answered with a
    /// pong on the same connection. A close packet ends the session: an error.
    pub async fn poll(&self, conn: &mut Conn) -> Res<Vec<String>> {
        let (status, body) = conn.request("GET", &self.target, None, Some(POLL_WAIT)).await?;
        if status != 200 {
            return Err(format!("poll: status {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        let mut packets = Vec::new();
        let mut pinged = false;
        for packet in std::str::from_utf8(&body)?.split(SEPARATOR) {
            match packet.as_bytes().first() {
                Some(b'2') => pinged = true,
                Some(b'6') | None => {}
                Some(b'1') => return Err("the server closed the session".into()),
                _ => packets.push(packet.to_string()),
            }
        }
        if pinged {
            self.post(conn, b"3").await?;
        }
        Ok(packets)
    }

    /// Connects to the socket.io namespace `/`: POST `40`, then poll for its answer.
    pub async fn connect(&self, conn: &mut Conn) -> Res<()> {
        self.post(conn, b"40").await?;
        for _ in 0..16 {
            for packet in self.poll(conn).await? {
                if packet.starts_with("40") {
                    return Ok(());
                }
                if packet.starts_with("44") {
                    return Err(format!("connect refused: {packet}").into());
                }
            }
        }
        Err("no answer to the socket.io connect".into())
    }

    /// Ends the session (engine.io close packet).
    pub async fn close(&self, conn: &mut Conn) -> Res<()> {
        self.post(conn, b"1").await
    }
}
