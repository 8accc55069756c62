//! Writing tokens and JSON strings.

use super::Token;

/// Appends `text` as a JSON string, as serde_json writes it: quotes, backslashes and control
/// characters escaped (`\n` and the like where JSON has one, else `\u00xx`), all else as it is.
///
/// Written here rather than through serde_json behind a scan for bytes to escape: one pass
/// instead of two, which finds the next byte to escape eight bytes at a time and copies the
/// run before it whole. Every packet of a sync body passes through it, and a token's JSON
/// has a quote every few bytes.
pub fn write_json_str(out: &mut Vec<u8>, text: &str) {
    let mut rest = text.as_bytes();
    out.reserve(rest.len() + 2);
    out.push(b'"');
    while let Some(at) = next_escape(rest) {
        out.extend_from_slice(&rest[..at]);
        // Pushed a byte at a time: a two-byte slice would be a call to memcpy.
        let byte = rest[at];
        out.push(b'\\');
        match byte {
            b'"' | b'\\' => out.push(byte),
            b'\n' => out.push(b'n'),
            b'\r' => out.push(b'r'),
            b'\t' => out.push(b't'),
            0x08 => out.push(b'b'),
            0x0c => out.push(b'f'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]]);
            }
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Where the first byte JSON escapes in a string is (a quote, a backslash, a control
/// character). Eight bytes at a time: a word's byte is flagged when it equals a quote or a
/// backslash (XORed with one, it is zero) or is below 0x20, with the bit trick that finds a
/// zero byte; the trick may also flag bytes above a flagged one (a borrow runs on), never
/// below, so the lowest flag is the first such byte.
fn next_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut words {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let flags =
            below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1) | below(word, 0x20);
        if flags != 0 {
            return Some(at + flags.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = words.remainder().iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\');
    tail.map(|i| at + i)
}

/// Serialises a token with no whitespace.
pub fn to_text(token: &Token) -> String {
    serde_json::to_string(token).unwrap_or_else(|_| "{}".into())
}

/// `token` as text with `sourceId` set to `source` (in its place if present, else at the
/// end): what `to_text` gives for a copy with `sourceId` inserted, without the copy.
pub fn to_text_with_source(token: &Token, source: &str) -> String {
    struct WithSource<'a>(&'a Token, &'a str);
    impl serde::Serialize for WithSource<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let WithSource(token, source) = *self;
            let present = token.contains_key("sourceId");
            let mut map = serializer.serialize_map(Some(token.len() + usize::from(!present)))?;
            for (key, value) in token {
                if key == "sourceId" {
                    map.serialize_entry(key, source)?;
                } else {
                    map.serialize_entry(key, value)?;
                }
            }
            if !present {
                map.serialize_entry("sourceId", source)?;
            }
            map.end()
        }
    }
    serde_json::to_string(&WithSource(token, source)).unwrap_or_else(|_| "{}".into())
}

