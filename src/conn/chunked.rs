//! The chunked transfer coding of a request body (RFC 9112 7.1), decoded as its bytes come:
//! chunk sizes in hex, extensions skipped, every line ended by CRLF, trailer lines skipped.
//! Strict: anything else is malformed, and the connection is closed after a 400.

use bytes::BytesMut;

/// The most bytes of a chunk line's extensions, and of the trailer section, taken.
const MAX_EXTRA: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// The chunk size's hex digits (`digits` read so far).
    Size {
        digits: u8,
    },
    /// Spaces or tabs after the size, before `;` or CR.
    SizeSpace,
    /// A chunk extension, up to CR.
    Extension,
    /// The LF of a chunk line.
    SizeLf,
    /// Chunk data, this many bytes left.
    Data(u64),
    /// The CR, then the LF, after chunk data.
    DataCr,
    DataLf,
    /// The start of a trailer line, or of the empty line that ends the body.
    TrailerStart,
    /// Inside a trailer line, up to CR.
    Trailer,
    /// The LF of a trailer line.
    TrailerLf,
    /// The LF of the final empty line.
    EndLf,
    Done,
}

/// The body is not chunked as RFC 9112 says.
#[derive(Debug, PartialEq)]
pub struct Malformed;

/// A chunked body being decoded.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    /// The size of the chunk whose line is being read.
    size: u64,
    /// Bytes of extensions and trailers taken so far.
    extra: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { state: State::Size { digits: 0 }, size: 0, extra: 0 }
    }
}

impl Decoder {
    /// Decodes from `input`, appending chunk data to `out`; returns how many bytes of `input`
    /// it took: all of them, unless the body ended within them or `out` grew past `max`
    /// (it stops at the first byte past it, wherever the reads were cut).
    pub fn decode(&mut self, input: &[u8], out: &mut BytesMut, max: usize) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done && out.len() <= max {
            if let State::Data(left) = self.state {
                let room = (max + 1 - out.len()) as u64;
                let n = left.min((input.len() - i) as u64).min(room) as usize;
                out.extend_from_slice(&input[i..i + n]);
                i += n;
                self.state = if n as u64 == left { State::DataCr } else { State::Data(left - n as u64) };
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::Size { digits }, _) if b.is_ascii_hexdigit() => {
                    // Sixteen hex digits hold any u64; a seventeenth (not a leading zero) is too big.
                    let value = u64::from((b as char).to_digit(16).unwrap_or(0) as u8);
                    if self.size > u64::MAX >> 4 {
                        return Err(Malformed);
                    }
                    self.size = self.size << 4 | value;
                    State::Size { digits: digits.saturating_add(1) }
                }
                (State::Size { digits: 0 }, _) => return Err(Malformed),
                (State::Size { .. } | State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
                (State::Size { .. } | State::SizeSpace, b';') => State::Extension,
                (State::Size { .. } | State::SizeSpace | State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\t' | 0x20..=0x7e | 0x80..=0xff) => {
                    self.extra += 1;
                    if self.extra > MAX_EXTRA {
                        return Err(Malformed);
                    }
                    State::Extension
                }
                (State::SizeLf, b'\n') => match std::mem::take(&mut self.size) {
                    0 => State::TrailerStart,
                    size => State::Data(size),
                },
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size { digits: 0 },
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart | State::Trailer, b'\t' | 0x20..=0x7e | 0x80..=0xff) => {
                    self.extra += 1;
                    if self.extra > MAX_EXTRA {
                        return Err(Malformed);
                    }
                    State::Trailer
                }
                (State::Trailer, b'\r') => State::TrailerLf,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => State::Done,
                _ => return Err(Malformed),
            };
        }
        Ok(i)
    }

    /// The whole body has been decoded (its final empty line included).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `body` fed in pieces of `piece` bytes: the data and the bytes taken.
    fn decode(body: &[u8], piece: usize) -> Result<(Vec<u8>, usize), Malformed> {
        let mut decoder = Decoder::default();
        let mut out = BytesMut::new();
        let mut taken = 0;
        for part in body.chunks(piece) {
            taken += decoder.decode(part, &mut out, usize::MAX - 1)?;
            if decoder.is_done() {
                return Ok((out.to_vec(), taken));
            }
        }
        Err(Malformed)
    }

    /// Chunks, extensions and trailers decode alike however the bytes are cut, and decoding
    /// stops at the body's end.
    #[test]
    fn a_chunked_body_decodes_whatever_the_pieces() {
        let body = b"5;name=\"v\"\r\nhello\r\n1A \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for piece in 1..body.len() {
            let (data, taken) = decode(body, piece).unwrap();
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz");
            assert_eq!(taken, body.len() - 4, "pieces of {piece}");
        }
    }

    /// Bare LFs, missing CRLFs after data, signs, empty sizes and sizes beyond u64 are refused.
    #[test]
    fn malformed_chunks_are_refused() {
        for body in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"0\r\n\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            assert_eq!(decode(body, body.len()), Err(Malformed), "{:?}", String::from_utf8_lossy(body));
        }
        let zeros = b"00000000000000000000005\r\nhello\r\n0\r\n\r\n";
        assert_eq!(decode(zeros, 3).unwrap().0, b"hello", "leading zeros are digits like any other");
    }

    /// Decoding stops at the first data byte past the limit, before anything after it (here a
    /// malformed line) is looked at, however the bytes are cut.
    #[test]
    fn decoding_stops_past_the_limit() {
        let body = b"4\r\nabcd\r\n4\r\nefgh\r\nBAD";
        for piece in 1..body.len() {
            let mut decoder = Decoder::default();
            let mut out = BytesMut::new();
            for part in body.chunks(piece) {
                decoder.decode(part, &mut out, 5).expect("not malformed before the limit");
                if out.len() > 5 {
                    break;
                }
            }
            assert_eq!(&out[..], b"abcdef", "pieces of {piece}");
        }
    }
}
