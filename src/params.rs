//! Lenient parsing of query strings and form bodies, as jWebSocket clients send them:
//! raw `{ } " :` in values, `+` as space, percent escapes decoded as UTF-8, and malformed
//! escapes kept literally instead of failing the request.

/// The parameters of one request, in the order they came; the first occurrence of a name wins.
/// The decoded names and values share one buffer, so parsing a request costs two allocations
/// however many parameters it has.
#[derive(Debug, Default, Clone)]
pub struct Params {
    /// Every decoded name and value, one after another.
    text: String,
    /// Per pair: where its name starts and ends and where its value starts and ends, as byte
    /// offsets into `text`.
    pairs: Vec<[u32; 4]>,
}

impl Params {
    /// Parses `a=1&b=2` (a query string without `?`, or a form body).
    pub fn parse(input: &[u8]) -> Params {
        let mut params = Params { text: String::with_capacity(input.len()), pairs: Vec::with_capacity(4) };
        params.extend(input);
        params
    }

    /// Adds the pairs of another query string or form body after the existing ones.
    pub fn extend(&mut self, input: &[u8]) {
        // Checked once here: pieces of valid UTF-8 cut at ASCII bytes are valid, so then only a
        // piece with an escape of a byte above 0x7F needs checking again.
        let valid = std::str::from_utf8(input).ok();
        match valid {
            Some(text) if memchr::memchr2(b'+', b'%', input).is_none() => self.extend_verbatim(text),
            _ => self.extend_decoded(input, valid.is_some()),
        }
    }

    /// Input without `+` or `%` (most queries) decodes to itself: it is copied whole, and each
    /// name and value is where it was, the `&` and `=` between them left in place.
    fn extend_verbatim(&mut self, input: &str) {
        let base = self.text.len();
        self.text.push_str(input);
        for (part, name, value) in pairs(input.as_bytes()) {
            let (at, end) = (base + part.start, base + part.end);
            self.pairs.push([offset(at), offset(at + name.len()), offset(end - value.len()), offset(end)]);
        }
    }

    /// Input with escapes: each name and value decoded after the existing text.
    fn extend_decoded(&mut self, input: &[u8], input_valid: bool) {
        let mut bytes = std::mem::take(&mut self.text).into_bytes();
        for (_, name, value) in pairs(input) {
            let name_at = bytes.len();
            decode_into(&mut bytes, name, input_valid);
            let value_at = bytes.len();
            decode_into(&mut bytes, value, input_valid);
            self.pairs.push([offset(name_at), offset(value_at), offset(value_at), offset(bytes.len())]);
        }
        // Every piece was made valid as it was decoded, so this never replaces anything.
        self.text = utf8_lossy(bytes);
    }

    /// The first value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let bytes = self.text.as_bytes();
        self.pairs
            .iter()
            .find(|[n, n_end, ..]| &bytes[*n as usize..*n_end as usize] == name.as_bytes())
            .map(|[.., v, v_end]| &self.text[*v as usize..*v_end as usize])
    }

    /// The first value for `name`, unless it is empty.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

/// The non-empty `name=value` pieces of `input` between `&`s: where each is in `input`, its
/// name and its value (a piece without `=` is a name with an empty value).
fn pairs(input: &[u8]) -> impl Iterator<Item = (std::ops::Range<usize>, &[u8], &[u8])> {
    let mut start = 0;
    std::iter::from_fn(move || loop {
        let rest = input.get(start..)?;
        let range = start..start + find(b'&', rest).unwrap_or(rest.len());
        start = range.end + 1;
        let part = &input[range.clone()];
        if part.is_empty() {
            continue;
        }
        return Some(match find(b'=', part) {
            Some(eq) => (range, &part[..eq], &part[eq + 1..]),
            None => (range, part, &b""[..]),
        });
    })
}

/// Where `byte` first is in `haystack`. A query's pieces are a few bytes long, too short for
/// `memchr`'s vector search to pay for setting it up, so short ones are searched byte by
/// byte; a form body's message may be megabytes long, and is searched by `memchr`.
fn find(byte: u8, haystack: &[u8]) -> Option<usize> {
    if haystack.len() < 64 {
        haystack.iter().position(|&b| b == byte)
    } else {
        memchr::memchr(byte, haystack)
    }
}

/// A byte offset into a request's parameters, which are far below 4 GiB (requests are limited
/// to `maxframesize`).
fn offset(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

/// Decodes `+` and `%XX`; a `%` not followed by two hex digits stays as it is. Invalid UTF-8
/// becomes U+FFFD rather than an error, so a request is never refused for its encoding.
/// (What [`Params`] does to each name and value; the fuzz targets check it alone.)
#[cfg(any(test, feature = "internals"))]
pub fn decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    decode_into(&mut out, input, false);
    utf8_lossy(out)
}

/// Appends the decoding of `input` to `out`, which stays valid UTF-8 if it was (see
/// [`decode`]). `input_valid` says `input` is known to be valid UTF-8.
fn decode_into(out: &mut Vec<u8>, input: &[u8], input_valid: bool) {
    let from = out.len();
    let mut escaped_non_ascii = false;
    let mut rest = input;
    // The runs between `+` and `%` are copied whole (a token's JSON is mostly such runs).
    while let Some(at) = memchr::memchr2(b'+', b'%', rest) {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at..];
        match (rest[0], rest.get(1).copied().and_then(hex), rest.get(2).copied().and_then(hex)) {
            (b'+', ..) => out.push(b' '),
            (_, Some(high), Some(low)) => {
                escaped_non_ascii |= high >= 8;
                out.push(high << 4 | low);
                rest = &rest[2..];
            }
            (other, ..) => out.push(other),
        }
        rest = &rest[1..];
    }
    out.extend_from_slice(rest);
    let known_valid = input_valid && !escaped_non_ascii;
    if !known_valid && std::str::from_utf8(&out[from..]).is_err() {
        let fixed = String::from_utf8_lossy(&out[from..]).into_owned();
        out.truncate(from);
        out.extend_from_slice(fixed.as_bytes());
    }
}

/// The bytes as text, without a copy when they are valid UTF-8; invalid sequences become
/// U+FFFD.
pub fn utf8_lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_json_and_plus_as_space() {
        let p = Params::parse(br#"connectionId=c1&action=send&data={"ns":"x","data":"a+b"}"#);
        assert_eq!(p.get("connectionId"), Some("c1"));
        assert_eq!(p.get("data"), Some(r#"{"ns":"x","data":"a b"}"#));
    }

    #[test]
    fn percent_escapes_decode_as_utf8_and_bad_ones_stay() {
        assert_eq!(decode(b"%C3%A9t%C3%A9"), "été");
        assert_eq!(decode(b"100%"), "100%");
        assert_eq!(decode(b"%zz%4"), "%zz%4");
        assert_eq!(decode(b"%FF"), "\u{FFFD}");
        assert_eq!(decode(b"a%26b%3Dc"), "a&b=c");
    }

    #[test]
    fn an_invalid_value_does_not_disturb_its_neighbours() {
        let mut p = Params::parse(b"a=%FF%FE&b=%C3%A9");
        p.extend(b"c=x%E2%82&d=+");
        assert_eq!(p.get("a"), Some("\u{FFFD}\u{FFFD}"));
        assert_eq!(p.get("b"), Some("é"));
        assert_eq!(p.get("c"), Some("x\u{FFFD}"));
        assert_eq!(p.get("d"), Some(" "));
        // Raw bytes (a form body): an invalid one is replaced in its own value only.
        p.extend(b"e=\xFF&f=\xC3\xA9&g=%41");
        assert_eq!(p.get("e"), Some("\u{FFFD}"));
        assert_eq!(p.get("f"), Some("é"));
        assert_eq!(p.get("g"), Some("A"));
    }

    #[test]
    fn input_without_escapes_is_read_in_place_and_mixes_with_decoded_input() {
        let mut p = Params::parse(b"connectionId=c1&action=sync&&flag&wait=&=v");
        assert_eq!(p.get("connectionId"), Some("c1"));
        assert_eq!(p.get("action"), Some("sync"));
        assert_eq!(p.get("flag"), Some(""));
        assert_eq!(p.get("wait"), Some(""));
        assert_eq!(p.get(""), Some("v"));
        assert_eq!(p.get("sync"), None);
        // A form body with escapes after a verbatim query, and a verbatim one after that.
        p.extend(b"data=a+b%21&action=send");
        p.extend("user=\u{e9}t\u{e9}&x=1=2".as_bytes());
        assert_eq!(p.get("data"), Some("a b!"));
        assert_eq!(p.get("action"), Some("sync"));
        assert_eq!(p.get("user"), Some("\u{e9}t\u{e9}"));
        assert_eq!(p.get("x"), Some("1=2"));
    }

    #[test]
    fn long_and_short_pieces_split_alike() {
        // Pieces and rests on both sides of the length from which `find` uses `memchr`.
        for len in [0, 1, 62, 63, 64, 65, 200] {
            let long = "v".repeat(len);
            let input = format!("a={long}&&{long}=x&b=1&c{long}&=&d={long}=&");
            let p = Params::parse(input.as_bytes());
            let pairs: Vec<_> = p.pairs.iter().map(|&[n, n_end, v, v_end]| (n_end - n, v_end - v)).collect();
            let name_len = u32::try_from(len).unwrap();
            let mut expected = vec![(1, name_len), (name_len, 1), (1, 1), (name_len + 1, 0), (0, 0), (1, name_len + 1)];
            if len == 0 {
                // `&=x` is a piece with an empty name, the others keep their places.
                expected[1] = (0, 1);
            }
            assert_eq!(pairs, expected, "{input}");
            assert_eq!(p.get("a"), Some(long.as_str()));
            assert_eq!(p.get("b"), Some("1"));
            assert_eq!(p.get("d"), Some(format!("{long}=").as_str()));
        }
    }

    #[test]
    fn first_value_wins_and_empty_names_are_kept() {
        let p = Params::parse(b"a=1&a=2&&b&=x");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some(""));
        assert_eq!(p.non_empty("b"), None);
        assert_eq!(p.get(""), Some("x"));
    }
}
