//! Lenient parsing of query strings and form bodies, as jWebSocket clients send them:
//! raw `{ } " :` in values, `+` as space, percent escapes decoded as UTF-8, and malformed
//! escapes kept literally instead of failing the request.

/// The parameters of one request, in the order they came; the first occurrence of a name wins.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `a=1&b=2` (a query string without `?`, or a form body).
    pub fn parse(input: &[u8]) -> Params {
        let mut params = Params::default();
        params.extend(input);
        params
    }

    /// Adds the pairs of another query string or form body after the existing ones.
    pub fn extend(&mut self, input: &[u8]) {
        for part in input.split(|b| *b == b'&') {
            if part.is_empty() {
                continue;
            }
            let (name, value) = match part.iter().position(|b| *b == b'=') {
                Some(eq) => (&part[..eq], &part[eq + 1..]),
                None => (part, &b""[..]),
            };
            self.pairs.push((decode(name), decode(value)));
        }
    }

    /// The first value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The first value for `name`, unless it is empty.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    pub fn insert(&mut self, name: &str, value: String) {
        self.pairs.insert(0, (name.to_owned(), value));
    }
}

/// Decodes `+` and `%XX`; a `%` not followed by two hex digits stays as it is. Invalid UTF-8
/// becomes U+FFFD rather than an error, so a request is never refused for its encoding.
pub fn decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < input.len() && hex(input[i + 1]).is_some() && hex(input[i + 2]).is_some() => {
                out.push(hex(input[i + 1]).unwrap_or(0) << 4 | hex(input[i + 2]).unwrap_or(0));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
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
    fn first_value_wins_and_empty_names_are_kept() {
        let p = Params::parse(b"a=1&a=2&&b&=x");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some(""));
        assert_eq!(p.non_empty("b"), None);
        assert_eq!(p.get(""), Some("x"));
    }
}
