//! The pollgate requests the load tool makes: open (with the first sync that brings the
//! welcome), long-poll sync with optional acknowledgements, send with optional sequence
//! numbers, login, close. Every connection id is the query parameter `connectionId`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::http::{Conn, Res};

/// Source of unique connection ids within this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The system plugin's namespace, which every token of the load tool uses.
pub const SYSTEM: &str = "org.jwebsocket.plugins.system";

/// Protocol extensions a session uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Acknowledged syncs (`ack=N`): packets stay queued until acknowledged.
    pub ack: bool,
    /// Idempotent sends (`seq=N`).
    pub seq: bool,
}

/// One pollgate connection (a connector on the server).
pub struct Session {
    /// `{path}?connectionId=ID`: the start of every request target.
    base: String,
    /// The connector's public id, from the welcome.
    pub source_id: String,
    options: Options,
    /// The last sequence number received (acknowledged on the next sync).
    acked: u64,
    /// The last sequence number sent.
    sent: u64,
}

impl Session {
    /// Opens a new connection, in the shared session `session_id` if given, and runs its
    /// first sync, which delivers the welcome.
    pub async fn open(conn: &mut Conn, path: &str, options: Options, session_id: Option<&str>) -> Res<Session> {
        let id = format!("load-{}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let mut session =
            Session { base: format!("{path}?connectionId={id}"), source_id: String::new(), options, acked: 0, sent: 0 };
        let mut target = format!("{}&action=open", session.base);
        if let Some(s) = session_id {
            target.push_str(&format!("&sessionId={s}"));
        }
        let reply = conn.request(&target, None, Duration::ZERO).await?;
        if !reply.status.is_success() {
            return Err(format!("open: status {} {}", reply.status, String::from_utf8_lossy(&reply.body)).into());
        }
        for packet in session.sync(conn, 0).await? {
            let token: serde_json::Value = serde_json::from_str(&packet)?;
            if token["type"] == "welcome" {
                session.source_id = token["sourceId"].as_str().unwrap_or_default().to_owned();
            }
        }
        if session.source_id.is_empty() {
            return Err("open: the first sync brought no welcome".into());
        }
        Ok(session)
    }

    /// Syncs, holding the request up to `wait_ms` until a packet is queued. A server-side
    /// close is an error.
    pub async fn sync(&mut self, conn: &mut Conn, wait_ms: u64) -> Res<Vec<String>> {
        let mut target = format!("{}&action=sync", self.base);
        if wait_ms > 0 {
            target.push_str(&format!("&wait={wait_ms}"));
        }
        if self.options.ack {
            target.push_str(&format!("&ack={}", self.acked));
        }
        let reply = conn.request(&target, None, Duration::from_millis(wait_ms)).await?;
        if !reply.status.is_success() {
            return Err(format!("sync: status {}", reply.status).into());
        }
        if self.options.ack {
            self.acked = reply.seq.ok_or("sync: no X-Pollgate-Seq on an acknowledged sync")?;
        }
        let packets: Vec<String> = serde_json::from_slice(&reply.body)?;
        if packets.iter().any(|p| p == "http.command.close") {
            return Err("closed by the server".into());
        }
        Ok(packets)
    }

    /// Sends a token as the raw POST body; returns the response body.
    pub async fn send(&mut self, conn: &mut Conn, token: String) -> Res<Bytes> {
        let mut target = format!("{}&action=send", self.base);
        if self.options.seq {
            self.sent += 1;
            target.push_str(&format!("&seq={}", self.sent));
        }
        let reply = conn.request(&target, Some(Bytes::from(token)), Duration::ZERO).await?;
        if !reply.status.is_success() {
            return Err(format!("send: status {}", reply.status).into());
        }
        Ok(reply.body)
    }

    /// Logs in (credentials in a form body, never in the URL).
    pub async fn login(&mut self, conn: &mut Conn, user: &str, password: &str) -> Res<()> {
        let form = format!("action=login&username={user}&password={password}");
        let reply = conn.request_form(&self.base, Bytes::from(form)).await?;
        if !reply.status.is_success() || !reply.body.starts_with(b"{\"type\":\"response\",\"code\":0") {
            return Err(format!("login: {} {}", reply.status, String::from_utf8_lossy(&reply.body)).into());
        }
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(self, conn: &mut Conn) -> Res<()> {
        let reply = conn.request(&format!("{}&action=close", self.base), None, Duration::ZERO).await?;
        if !reply.status.is_success() {
            return Err(format!("close: status {}", reply.status).into());
        }
        Ok(())
    }
}
