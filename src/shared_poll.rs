//! The shared poll (docs/PROTOCOL.md, "Shared poll"): one held `sync` that waits on several
//! connectors of one client at once, so that the tabs of a browser hold one HTTP connection
//! between them instead of one each.
//!
//! It is built on the store's per-connector steps: every round runs [`Store::poll_round`] for
//! each connector (acknowledged, so a lost answer loses nothing), and the poll waits on the
//! union of their wake-ups. Each connector keeps the rules of a sync of its own: the newest
//! poll that carries it wins, its activity is recorded at the poll's start and end, and a
//! closed or unknown connector answers at once.
//!
//! [`Store::poll_round`]: crate::store::Store::poll_round

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{select_all, try_join_all};
use serde::Deserialize;
use tokio::time::Instant;

use crate::engine::{Engine, Holding};
use crate::protocol;
use crate::store::{self, Drained, StoreError};
use crate::timer::ConnTimer;

/// How many connectors one shared poll may carry: the tabs of one origin in one browser, with
/// room to spare. A client with more holds a second poll for the rest.
pub const MAX_CONNECTORS: usize = 64;

/// One connector a shared poll carries.
#[derive(Debug)]
pub struct Carried {
    /// Its connector id, derived from the connection id the poll proved it has.
    pub id: Arc<str>,
    /// The last sequence number the client handled for it.
    pub ack: u64,
}

/// Why a `share` parameter is refused (`Invalid 'share' parameter value: …!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareError {
    /// Not a JSON array of `{"connectionId": "…", "ack": N}` objects.
    Malformed,
    Empty,
    TooMany,
    /// The same connection id twice.
    Duplicate,
    /// A top-level `ack` next to `share` (each connector has its own).
    AckOutside,
    /// In the URL, where a proxy or a browser history would keep the connection ids.
    InQuery,
}

impl ShareError {
    pub fn text(self) -> String {
        let why = match self {
            ShareError::Malformed => "expected a JSON array of {\"connectionId\": \"…\", \"ack\": N}".to_owned(),
            ShareError::Empty => "no connector".to_owned(),
            ShareError::TooMany => format!("more than {MAX_CONNECTORS} connectors"),
            ShareError::Duplicate => "a connection id is given twice".to_owned(),
            ShareError::AckOutside => "'ack' goes with each connector, not beside 'share'".to_owned(),
            ShareError::InQuery => "connection ids go in a POST body, not in the URL".to_owned(),
        };
        format!("Invalid 'share' parameter value: {why}!")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(rename = "connectionId", borrow)]
    connection_id: std::borrow::Cow<'a, str>,
    ack: u64,
}

/// Parses `share`, deriving each connector id with `connector_id` (the connection id and the
/// request's address, as for the request's own connector). Nothing is read from the store.
pub fn parse(text: &str, connector_id: impl Fn(&str) -> String) -> Result<Vec<Carried>, ShareError> {
    let wire: Vec<Wire> = serde_json::from_str(text).map_err(|_| ShareError::Malformed)?;
    if wire.is_empty() {
        return Err(ShareError::Empty);
    }
    if wire.len() > MAX_CONNECTORS {
        return Err(ShareError::TooMany);
    }
    if wire.iter().any(|w| w.connection_id.is_empty()) {
        return Err(ShareError::Malformed);
    }
    let mut carried: Vec<Carried> = Vec::with_capacity(wire.len());
    for w in &wire {
        let id: Arc<str> = connector_id(&w.connection_id).into();
        if carried.iter().any(|c| c.id == id) {
            return Err(ShareError::Duplicate);
        }
        carried.push(Carried { id, ack: w.ack });
    }
    Ok(carried)
}

/// What a shared poll found for one connector: its drain, or `Err(last)` when its `ack` is
/// beyond the last sequence number issued (nothing was removed).
pub type Found = Result<Drained, u64>;

/// Holds a shared poll: drains every carried connector, waiting up to `wait` (capped as a
/// sync's) while none has anything to say. Answers as soon as one has packets, is closed, is
/// unknown, was taken by a newer poll, or refuses its `ack`; the answer holds every
/// connector's drain of that round (acknowledged drains remove nothing unacknowledged, so
/// answering for all at once loses nothing).
pub async fn hold(
    engine: &Engine,
    carried: &[Carried],
    wait: Duration,
    timer: &ConnTimer,
) -> Result<Vec<Found>, StoreError> {
    let wait = wait.min(Duration::from_millis(engine.config.max_sync_wait));
    let deadline = Instant::now() + wait;
    let mut last_round = wait.is_zero();
    // Empty until the first round, which begins the poll of every connector.
    let mut tickets: Vec<u64> = Vec::new();
    let mut waited = false;
    loop {
        let now = protocol::now_ms();
        let rounds = match tickets.is_empty() {
            // All connectors taken over together (an older poll that carried several of them
            // answers them all superseded).
            true => {
                let begin: Vec<_> = carried.iter().map(|c| (&*c.id, Some(c.ack))).collect();
                engine.store.begin_polls(&begin, now).await?
            }
            false => try_join_all(
                carried
                    .iter()
                    .zip(&tickets)
                    .map(|(c, ticket)| engine.store.poll_round(&c.id, Some(c.ack), Some(*ticket), now, waited)),
            )
            .await?,
        };
        tickets.clear();
        let mut found = Vec::with_capacity(carried.len());
        let mut wakeups = Vec::with_capacity(carried.len());
        for round in rounds {
            tickets.push(round.ticket);
            found.push(round.drained);
            wakeups.push(round.wakeup);
        }
        if last_round || found.iter().any(has_news) {
            for drained in found.iter().flatten() {
                engine.metrics.queue_depth.observe(drained.packets.len() as f64);
                engine.metrics.packets_delivered.inc_by(drained.packets.len() as u64);
            }
            return Ok(found);
        }
        drop(found);
        // As a sync: shutdown wakes every wake-up through the store.
        if engine.shutdown.is_cancelled() {
            last_round = true;
            continue;
        }
        // One held poll, however many connectors it carries.
        let _holding = Holding::new(&engine.metrics.held_polls);
        waited = true;
        let any = select_all(wakeups.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            _ = any => {}
            _ = timer.sleep_until(deadline) => last_round = true,
        }
    }
}

/// Whether a connector's drain ends the wait.
fn has_news(found: &Found) -> bool {
    match found {
        Ok(d) => !d.packets.is_empty() || d.superseded || d.unknown || d.close_reason.is_some(),
        Err(_) => true,
    }
}

/// The answer's body: `{"connectors":[…]}`, one object per carried connector, in the order of
/// the request (no connection id is sent back).
pub fn answer_text(found: &[Found]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * found.len() + 16);
    out.extend_from_slice(b"{\"connectors\":[");
    for (i, f) in found.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (seq, state) = match f {
            Err(last) => (*last, Some("ack-ahead")),
            Ok(d) if d.unknown => (d.seq, Some("unknown")),
            Ok(d) if d.superseded => (d.seq, Some("superseded")),
            Ok(d) => (d.seq, None),
        };
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        out.extend_from_slice(b",\"packets\":");
        match f {
            Ok(d) => out.extend_from_slice(&store::packets_text(&d.packets)),
            Err(_) => out.extend_from_slice(b"[]"),
        }
        if let Ok(Drained { close_reason: Some(reason), packets, .. }) = f {
            // As a sync's header: only with the close command itself.
            if packets.iter().any(|p| &*p.text == protocol::CLOSE_COMMAND) {
                out.extend_from_slice(b",\"close\":\"");
                out.extend_from_slice(reason.as_str().as_bytes());
                out.push(b'"');
            }
        }
        if let Some(state) = state {
            out.extend_from_slice(b",\"state\":\"");
            out.extend_from_slice(state.as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CloseReason, QueuedPacket};

    fn ids(text: &str) -> Result<Vec<(String, u64)>, ShareError> {
        parse(text, |c| format!("id:{c}")).map(|v| v.into_iter().map(|c| (c.id.to_string(), c.ack)).collect())
    }

    #[test]
    fn parses_connection_ids_and_acks() {
        let got = ids(r#"[{"connectionId":"a","ack":0},{"connectionId":"b","ack":7}]"#).unwrap();
        assert_eq!(got, vec![("id:a".into(), 0), ("id:b".into(), 7)]);
    }

    #[test]
    fn refuses_what_it_cannot_carry() {
        assert_eq!(ids("").unwrap_err(), ShareError::Malformed);
        assert_eq!(ids("{}").unwrap_err(), ShareError::Malformed);
        assert_eq!(ids(r#"[{"connectionId":"a"}]"#).unwrap_err(), ShareError::Malformed, "ack is required");
        assert_eq!(ids(r#"[{"connectionId":"a","ack":-1}]"#).unwrap_err(), ShareError::Malformed);
        assert_eq!(ids(r#"[{"connectionId":"","ack":1}]"#).unwrap_err(), ShareError::Malformed);
        assert_eq!(ids(r#"[{"connectionId":"a","ack":1,"x":1}]"#).unwrap_err(), ShareError::Malformed);
        assert_eq!(ids("[]").unwrap_err(), ShareError::Empty);
        let dup = r#"[{"connectionId":"a","ack":1},{"connectionId":"a","ack":2}]"#;
        assert_eq!(ids(dup).unwrap_err(), ShareError::Duplicate);
        let many: Vec<String> = (0..=MAX_CONNECTORS).map(|i| format!(r#"{{"connectionId":"c{i}","ack":0}}"#)).collect();
        assert_eq!(ids(&format!("[{}]", many.join(","))).unwrap_err(), ShareError::TooMany);
        assert_eq!(ids(&format!("[{}]", many[1..].join(","))).unwrap().len(), MAX_CONNECTORS);
    }

    #[test]
    fn the_answer_is_json_with_one_object_per_connector() {
        let packet = |seq, text: &str| QueuedPacket { seq, text: text.into(), quoted: None };
        let found = vec![
            Ok(Drained { packets: vec![packet(4, "{\"a\":1}"), packet(5, "x")], seq: 5, ..Drained::default() }),
            Ok(Drained { seq: 3, superseded: true, ..Drained::default() }),
            Ok(Drained { seq: 0, unknown: true, ..Drained::default() }),
            Err(9),
            Ok(Drained {
                packets: vec![packet(2, protocol::CLOSE_COMMAND)],
                seq: 2,
                close_reason: Some(CloseReason::Timeout),
                ..Drained::default()
            }),
        ];
        let text = answer_text(&found);
        let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let expected = serde_json::json!({"connectors": [
            {"seq": 5, "packets": ["{\"a\":1}", "x"]},
            {"seq": 3, "packets": [], "state": "superseded"},
            {"seq": 0, "packets": [], "state": "unknown"},
            {"seq": 9, "packets": [], "state": "ack-ahead"},
            {"seq": 2, "packets": ["http.command.close"], "close": "timeout"},
        ]});
        assert_eq!(json, expected);
    }
}
