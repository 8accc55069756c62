//! Fuzz target `params`: the bytes of a client's request target, through the escaping the
//! server applies before routing (`pollgate::fuzzing::escape_target`), and through the
//! query/form parameter parser (`pollgate::params`).
//!
//! Beyond "no panic, no hang" it checks what the two promise: escaping only replaces bytes
//! outside RFC 3986's set by their `%XX`, and what it leaves of an origin-form target the
//! `http` crate accepts; the parser keeps the first value of a name, decodes what the Rust
//! client percent-encodes back to the text, and decodes an escaped target's query as the
//! raw one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pollgate::fuzzing::{client_form_value, escape_target};
use pollgate::params::{decode, Params};

/// Checks that `out` is `input` with some bytes replaced by their `%XX`, and only bytes
/// outside RFC 3986's characters.
fn assert_only_escapes(input: &[u8], out: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let kept = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%[]".contains(&b);
    let (mut i, mut j) = (0, 0);
    while i < input.len() {
        let b = input[i];
        if kept(b) {
            assert_eq!(out.get(j), Some(&b), "byte {b:#04x} at {i} was changed");
            j += 1;
        } else {
            let escape = [b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]];
            assert_eq!(out.get(j..j + 3), Some(&escape[..]), "byte {b:#04x} at {i} was not escaped as %XX");
            j += 3;
        }
        i += 1;
    }
    assert_eq!(j, out.len(), "escaping added bytes after the input's end");
}

fn check_params(data: &[u8]) {
    let params = Params::parse(data);
    // The first occurrence of every name wins, with both sides decoded.
    let mut seen = std::collections::HashSet::new();
    for part in data.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match part.iter().position(|b| *b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        let name = decode(name);
        if seen.insert(name.clone()) {
            assert_eq!(params.get(&name), Some(decode(value).as_str()), "value of {name:?}");
        }
    }
    // Query then form body: the same as one string joined by `&`, the query first.
    if let Some(cut) = data.iter().position(|b| *b == b'&') {
        let mut split = Params::parse(&data[..cut]);
        split.extend(&data[cut + 1..]);
        for name in &seen {
            assert_eq!(split.get(name), params.get(name), "extend changed {name:?}");
        }
    }
    // What the Rust client encodes, the server decodes back to the text (as UTF-8, with
    // U+FFFD for what is not).
    let text = String::from_utf8_lossy(data);
    assert_eq!(decode(client_form_value(&text).as_bytes()), text);
    if !data.contains(&b'%') && !data.contains(&b'+') {
        assert_eq!(decode(data), text, "decode changed bytes that are not escapes");
    }
}

fuzz_target!(|data: &[u8]| {
    let escaped = escape_target(data);
    assert_only_escapes(data, &escaped);
    if data.first() == Some(&b'/') && !data.contains(&b'%') {
        if let Err(e) = http::Uri::try_from(escaped.as_ref()) {
            panic!("an escaped target http refuses: {:?}: {e}", String::from_utf8_lossy(&escaped));
        }
        // The query, escaped or raw, gives the same parameters.
        if let Some(q) = data.iter().position(|b| *b == b'?') {
            let eq = escaped.iter().position(|b| *b == b'?').expect("a ? is kept");
            let (raw, esc) = (Params::parse(&data[q + 1..]), Params::parse(&escaped[eq + 1..]));
            for part in data[q + 1..].split(|b| *b == b'&') {
                let name = decode(part.split(|b| *b == b'=').next().unwrap_or_default());
                assert_eq!(raw.get(&name), esc.get(&name), "escaping changed {name:?}");
            }
        }
    }
    check_params(data);
});
