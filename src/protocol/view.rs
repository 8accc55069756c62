//! Reading a packet: into a [`Token`], or in place ([`TokenView`]).

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::Value;

use super::{to_text_with_source, write_json_str, Token, TokenFields};

/// Parses a packet text into a token; `None` when it is not a JSON object.
///
/// As `serde_json::from_str::<Value>`, but the token's map is made with room for a
/// token's usual fields: grown from empty one field at a time, it was reallocated and
/// rehashed on the way (a tenth of a parse).
pub fn parse_token(text: &str) -> Option<Token> {
    struct TokenVisitor;
    impl<'de> serde::de::Visitor<'de> for TokenVisitor {
        type Value = Token;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut fields: A) -> Result<Token, A::Error> {
            let mut token = Token::with_capacity(8);
            // A repeated key keeps its first place and takes the last value, as in a Value.
            while let Some((key, value)) = fields.next_entry::<String, Value>()? {
                token.insert(key, value);
            }
            Ok(token)
        }
    }
    let mut parser = serde_json::Deserializer::from_str(text);
    let token = serde::Deserializer::deserialize_any(&mut parser, TokenVisitor).ok()?;
    parser.end().ok()?;
    Some(token)
}

/// A token read in place: its fields in the client's order, each value the JSON text it
/// came as, borrowed from the packet. It reads exactly the texts [`parse_token`] reads, but
/// allocates only its list of fields (and the names written with escapes), where a
/// [`Token`] allocates every name and value and hashes each name with SipHash. The system
/// plugin's `send`, the hot path, runs on it: the forwarded token is the client's values
/// copied as they came, not serialised again one by one.
pub struct TokenView<'a> {
    /// Each name, and its value's JSON text.
    fields: Vec<(Cow<'a, str>, &'a str)>,
    /// Whether a name comes more than once (then the last value counts, in the first place).
    pub(super) repeats: bool,
}

impl<'a> TokenView<'a> {
    /// Reads a packet text; `None` when [`parse_token`] would give `None`.
    pub fn parse(text: &'a str) -> Option<TokenView<'a>> {
        let fields = match read_flat(text) {
            Some(fields) => fields,
            None => Self::read_fields(text)?,
        };
        Some(TokenView { repeats: any_repeated(&fields), fields })
    }

    /// The fields of any token, read by serde_json.
    pub(super) fn read_fields(text: &'a str) -> Option<Vec<(Cow<'a, str>, &'a str)>> {
        /// A field name, borrowed unless it was written with escapes.
        struct Name<'a>(Cow<'a, str>);
        impl<'de> serde::Deserialize<'de> for Name<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(names: D) -> Result<Self, D::Error> {
                struct NameVisitor;
                impl<'de> serde::de::Visitor<'de> for NameVisitor {
                    type Value = Name<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'de>, E> {
                        Ok(Name(Cow::Borrowed(name)))
                    }
                    fn visit_str<E>(self, name: &str) -> Result<Name<'de>, E> {
                        Ok(Name(Cow::Owned(name.to_owned())))
                    }
                }
                names.deserialize_str(NameVisitor)
            }
        }
        struct ViewVisitor;
        impl<'de> serde::de::Visitor<'de> for ViewVisitor {
            type Value = Vec<(Cow<'de, str>, &'de str)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(8);
                while let Some((Name(name), value)) = entries.next_entry::<Name, &RawValue>()? {
                    fields.push((name, value.get()));
                }
                Ok(fields)
            }
        }
        let mut parser = serde_json::Deserializer::from_str(text);
        let fields = serde::Deserializer::deserialize_any(&mut parser, ViewVisitor).ok()?;
        parser.end().ok()?;
        // A raw value is only skipped over, so check what a `Value` would refuse: numbers
        // out of range, escapes that make no character (a lone surrogate), nesting deeper
        // than serde_json's limit. Plain strings and literals, most of a token, need nothing.
        let plain = |raw: &str| match raw.as_bytes()[0] {
            b'"' => !raw.contains('\\'),
            b't' | b'f' | b'n' => true,
            _ => false,
        };
        let valid = fields.iter().all(|(_, value)| plain(value) || serde_json::from_str::<Value>(value).is_ok());
        valid.then_some(fields)
    }

    /// The value of `key`; the last one if the key is repeated, as in a [`Token`].
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.fields.iter().rev().find(|(name, _)| name == key).map(|(_, value)| *value)
    }

    /// The [`Token`] this text reads as: names and values copied out, in the same order.
    pub fn to_token(&self) -> Token {
        let mut token = Token::with_capacity(self.fields.len());
        for (name, value) in &self.fields {
            // Checked by `parse`, so this never gives `Null`.
            let value = serde_json::from_str(value).unwrap_or(Value::Null);
            token.insert(name.clone().into_owned(), value);
        }
        token
    }
}

impl TokenFields for TokenView<'_> {
    fn str_field(&self, key: &str) -> Option<Cow<'_, str>> {
        let raw = self.get(key)?;
        let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
        if inner.contains('\\') {
            serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(inner))
        }
    }

    fn bool_field(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    fn int_field(&self, key: &str) -> Option<i64> {
        let raw = self.get(key)?;
        // Digits alone, the usual utid, read directly (a valid JSON number has no leading
        // zeros); anything else as serde_json reads it (`-0` is a float there, for one).
        let number = if raw.len() <= 10 && raw.bytes().all(|b| b.is_ascii_digit()) {
            raw.parse::<i64>().ok()
        } else {
            serde_json::from_str::<Value>(raw).ok().and_then(|n| n.as_i64())
        };
        number.filter(|n| i32::try_from(*n).is_ok())
    }

    fn write_field(&self, key: &str, out: &mut Vec<u8>) -> bool {
        self.get(key).map(|raw| out.extend_from_slice(raw.as_bytes())).is_some()
    }

    /// `sourceId` replaced in its place, or added at the end. The values are the client's
    /// JSON texts: a client that wrote `1e2` or `"\u00e9"` gets them forwarded so, not as
    /// `100.0` or `"é"`. A token with a repeated name is forwarded as a [`Token`] keeps it:
    /// each name in its first place, with its last value.
    fn text_with_source(&self, source: &str) -> String {
        if self.repeats {
            // Rare, and as a `Token` it stays linear in the number of fields.
            return to_text_with_source(&self.to_token(), source);
        }
        let room = self.fields.iter().map(|(name, value)| name.len() + value.len() + 4).sum::<usize>();
        let mut out = Vec::with_capacity(room + source.len() + 16);
        out.push(b'{');
        let mut source_written = false;
        for (at, (name, value)) in self.fields.iter().enumerate() {
            if at > 0 {
                out.push(b',');
            }
            match name {
                // Read without escapes, so it needs none.
                Cow::Borrowed(name) => {
                    out.push(b'"');
                    out.extend_from_slice(name.as_bytes());
                    out.push(b'"');
                }
                Cow::Owned(name) => write_json_str(&mut out, name),
            }
            out.push(b':');
            if name == "sourceId" {
                write_json_str(&mut out, source);
                source_written = true;
            } else {
                out.extend_from_slice(value.as_bytes());
            }
        }
        if !source_written {
            if !self.fields.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(br#""sourceId":"#);
            write_json_str(&mut out, source);
        }
        out.push(b'}');
        // Made of whole UTF-8 texts, so this never replaces anything.
        crate::params::utf8_lossy(out)
    }
}

/// The fields of a flat token read without serde_json, or `None` for any text that is not
/// one: an object whose names are written without escapes and whose values are strings
/// without escapes, integers of at most 15 digits, `true`, `false` or `null` (most tokens).
/// The others are read by serde_json; for a flat token both read the same fields.
pub(super) fn read_flat(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let bytes = text.as_bytes();
    let skip_space = |mut at: usize| {
        while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            at += 1;
        }
        at
    };
    // A string without escapes or control characters at `at` (its opening quote): the index
    // of its closing quote. Any other string is left to serde_json.
    let string_end = |at: usize| {
        let len = memchr::memchr2(b'"', b'\\', &bytes[at + 1..])?;
        let end = at + 1 + len;
        // The smallest byte, not `all`: a reduction without early exit is vectorised.
        let lowest = bytes[at + 1..end].iter().fold(u8::MAX, |low, b| low.min(*b));
        (bytes[end] == b'"' && lowest >= 0x20).then_some(end)
    };
    let mut fields = Vec::with_capacity(8);
    let mut at = skip_space(0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(at + 1);
    if bytes.get(at) == Some(&b'}') {
        return (skip_space(at + 1) == bytes.len()).then_some(fields);
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let name_end = string_end(at)?;
        let name = &text[at + 1..name_end];
        at = skip_space(name_end + 1);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_space(at + 1);
        let end = match *bytes.get(start)? {
            b'"' => string_end(start)? + 1,
            b't' if bytes[start..].starts_with(b"true") => start + 4,
            b'f' if bytes[start..].starts_with(b"false") => start + 5,
            b'n' if bytes[start..].starts_with(b"null") => start + 4,
            b'-' | b'0'..=b'9' => {
                let digits_at = start + usize::from(bytes[start] == b'-');
                let digits = bytes[digits_at..].iter().take_while(|b| b.is_ascii_digit()).count();
                // No leading zero (JSON's rule); fractions and exponents go to serde_json.
                let leading_zero = digits > 1 && bytes[digits_at] == b'0';
                if digits == 0 || digits > 15 || leading_zero {
                    return None;
                }
                digits_at + digits
            }
            _ => return None,
        };
        fields.push((Cow::Borrowed(name), &text[start..end]));
        at = skip_space(end);
        match bytes.get(at) {
            Some(b',') => at = skip_space(at + 1),
            Some(b'}') => return (skip_space(at + 1) == bytes.len()).then_some(fields),
            _ => return None,
        }
    }
}

/// Whether a name comes more than once. A token has a few fields, compared pairwise; a
/// hostile one may have a hundred thousand, counted in a set (pairwise, that would be
/// seconds of work per request).
fn any_repeated(fields: &[(Cow<'_, str>, &str)]) -> bool {
    if fields.len() <= 16 {
        return (1..fields.len()).any(|at| fields[..at].iter().any(|(name, _)| *name == fields[at].0));
    }
    let mut seen = foldhash::HashSet::<&str>::default();
    seen.reserve(fields.len());
    !fields.iter().all(|(name, _)| seen.insert(name.as_ref()))
}

