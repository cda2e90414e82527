//! Lossless text form of byte strings (paths, command names) for JSON and logs.
//!
//! Linux names are bytes, not UTF-8. The text form keeps valid UTF-8 as it is,
//! writes a backslash as `\\` and every byte that is not part of valid UTF-8 as
//! `\xNN`. [`unescape`] inverts it exactly, so a consumer can recover the name
//! byte for byte. JSON's own escaping (of `"` and control characters such as a
//! newline) applies on top, as for any string.

use std::fmt::Write;

/// The text form of `bytes`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The bytes behind a text form made by [`escape`].
pub fn unescape(text: &str) -> Result<Vec<u8>, UnescapeError> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'\\' {
            out.push(b);
            rest = tail;
            continue;
        }
        match tail {
            [b'\\', tail @ ..] => {
                out.push(b'\\');
                rest = tail;
            }
            [b'x', hi, lo, tail @ ..] => {
                let hex = [*hi, *lo];
                let byte = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(UnescapeError {
                        at: text.len() - rest.len(),
                    })?;
                out.push(byte);
                rest = tail;
            }
            _ => {
                return Err(UnescapeError {
                    at: text.len() - rest.len(),
                })
            }
        }
    }
    Ok(out)
}

/// A backslash not followed by `\` or `xNN`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid escape at byte {at}")]
pub struct UnescapeError {
    pub at: usize,
}

/// `serde` helper: serialize bytes as their text form.
pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&escape(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_passes_through() {
        assert_eq!(escape("/tmp/é ok".as_bytes()), "/tmp/é ok");
    }

    #[test]
    fn invalid_bytes_and_backslashes_are_escaped() {
        assert_eq!(escape(b"a\xff\\b\xc3"), "a\\xff\\\\b\\xc3");
    }

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255u8)
            .chain([0xe2, 0x82, 0xac, b'\\', b'x', b'4', b'1'])
            .collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
    }

    #[test]
    fn rejects_dangling_escape() {
        assert_eq!(unescape("ab\\"), Err(UnescapeError { at: 2 }));
        assert_eq!(unescape("ab\\xZZ"), Err(UnescapeError { at: 2 }));
    }
}
