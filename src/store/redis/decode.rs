//! Decoding what the store keeps in Redis: session values, records and connectors.

use std::collections::HashMap;

use serde_json::Value;

use crate::protocol::Token;
use crate::store::{ConnectorInfo, SessionRecord};

pub(super) fn parse_u64(s: &str) -> u64 {
    s.parse().unwrap_or(0)
}

/// A session value as stored: `<insertion index>:<json>`.
pub(super) fn split_stored(stored: &str) -> Option<(u64, Value)> {
    let (idx, json) = stored.split_once(':')?;
    Some((idx.parse().ok()?, serde_json::from_str(json).ok()?))
}

/// The entries of `keys` that are set, from their stored values (`HMGET`'s answer).
pub(super) fn session_entries(keys: &[&str], stored: Vec<Option<String>>) -> Token {
    keys.iter().zip(stored).filter_map(|(key, v)| Some((key.to_string(), split_stored(&v?)?.1))).collect()
}

/// A session's storage from its hash, in insertion order.
pub(super) fn storage_from(stored: Vec<(String, String)>) -> Token {
    let mut entries: Vec<(u64, String, Value)> =
        stored.into_iter().filter_map(|(k, v)| split_stored(&v).map(|(idx, value)| (idx, k, value))).collect();
    entries.sort_by_key(|(idx, _, _)| *idx);
    entries.into_iter().map(|(_, k, v)| (k, v)).collect()
}

/// A session's record from its `sx`, `sm.last`, `sc` and `s` keys; `None` once it expired.
pub(super) fn record_from(
    id: &str,
    record: HashMap<String, String>,
    last: Option<i64>,
    connectors: Vec<String>,
    storage: Vec<(String, String)>,
) -> Option<SessionRecord> {
    let number = |field: &str| record.get(field).and_then(|v| v.parse::<i64>().ok());
    let open_ms = number("opened")?;
    let close_ms = number("closed");
    Some(SessionRecord {
        id: id.to_owned(),
        user_name: record.get("user").and_then(|u| serde_json::from_str(u).ok()),
        active: !connectors.is_empty(),
        open_ms,
        request_ms: last.or(number("last")).unwrap_or(open_ms),
        close_ms,
        address: record.get("addr").cloned().unwrap_or_default(),
        client: record.get("ua").cloned().unwrap_or_default(),
        connectors,
        data: storage_from(storage),
    })
}

pub(super) fn info_from(id: &str, fields: Vec<Option<String>>) -> Option<ConnectorInfo> {
    let mut f = fields.into_iter();
    let mut next = || f.next().flatten().unwrap_or_default();
    Some(ConnectorInfo {
        id: id.to_owned(),
        session_id: next(),
        address: next(),
        user_agent: next(),
        opened_ms: next().parse().ok()?,
        last_active_ms: next().parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_session_values_keep_their_insertion_index() {
        assert_eq!(split_stored(r#"3:{"a":"x:y"}"#), Some((3, serde_json::json!({"a": "x:y"}))));
        assert_eq!(split_stored("7:true"), Some((7, Value::Bool(true))));
        assert_eq!(split_stored("no index"), None);
    }
}
