//! The memcached text protocol as mcload needs it: writing get/set requests into a
//! reused buffer and parsing replies incrementally from whatever bytes have arrived.

use memchr::memchr;

/// A reply line longer than this without CRLF means the stream is not memcached's.
const MAX_LINE: usize = 2048;
/// Largest VALUE length we are willing to buffer (memcached's -I tops out at 1 GiB, but
/// nothing this tool sets comes close; a bigger number is treated as a desync).
pub const MAX_REPLY_VALUE: usize = 128 << 20;

/// What one complete reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Hit,
    Miss,
    Stored,
    /// NOT_STORED, EXISTS, NOT_FOUND: the server answered, but the set did not happen.
    NotStored,
    ServerError,
    ClientError,
    Error,
}

impl Reply {
    pub fn is_error(self) -> bool {
        !matches!(self, Reply::Hit | Reply::Miss | Reply::Stored)
    }
}

/// Outcome of looking at the front of the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// More bytes are needed; `need` is a lower bound on the total buffered bytes
    /// required (so the caller can grow its buffer for a large value).
    Incomplete { need: usize },
    /// A complete reply of `used` bytes.
    Done { reply: Reply, used: usize },
    /// The bytes cannot be a reply to this request: the stream is out of step.
    Bad,
}

/// Finds the first line; `Ok(None)` if it is not complete yet.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ()> {
    match memchr(b'\n', buf) {
        Some(nl) => {
            let body = buf.get(..nl).ok_or(())?;
            let body = body.strip_suffix(b"\r").ok_or(())?;
            Ok(Some((body, nl + 1)))
        }
        None if buf.len() > MAX_LINE => Err(()),
        None => Ok(None),
    }
}

/// Error replies any command can get; `None` if the line is something else.
fn error_line(l: &[u8]) -> Option<Reply> {
    if l.starts_with(b"SERVER_ERROR") {
        Some(Reply::ServerError)
    } else if l.starts_with(b"CLIENT_ERROR") {
        Some(Reply::ClientError)
    } else if l == b"ERROR" || l.starts_with(b"ERROR ") {
        Some(Reply::Error)
    } else {
        None
    }
}

fn parse_len(field: &[u8]) -> Option<usize> {
    if field.is_empty() || field.len() > 10 {
        return None;
    }
    let mut n: usize = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + usize::from(b - b'0');
    }
    Some(n)
}

/// Parses the reply to a single-key `get`: `VALUE <key> <flags> <bytes>[ <cas>]` + data
/// + `END`, or a bare `END` for a miss.
pub fn parse_get(buf: &[u8]) -> Parse {
    let (l, used) = match line(buf) {
        Ok(Some(x)) => x,
        Ok(None) => {
            return Parse::Incomplete {
                need: buf.len() + 1,
            }
        }
        Err(()) => return Parse::Bad,
    };
    if l == b"END" {
        return Parse::Done {
            reply: Reply::Miss,
            used,
        };
    }
    if let Some(reply) = error_line(l) {
        return Parse::Done { reply, used };
    }
    let Some(rest) = l.strip_prefix(b"VALUE ") else {
        return Parse::Bad;
    };
    let mut fields = rest.split(|&b| b == b' ');
    let (Some(_key), Some(_flags), Some(bytes)) = (fields.next(), fields.next(), fields.next())
    else {
        return Parse::Bad;
    };
    let Some(n) = parse_len(bytes).filter(|&n| n <= MAX_REPLY_VALUE) else {
        return Parse::Bad;
    };
    let total = used + n + 2 + 5;
    let Some(tail) = buf.get(used + n..total) else {
        return Parse::Incomplete { need: total };
    };
    if tail != b"\r\nEND\r\n" {
        return Parse::Bad;
    }
    Parse::Done {
        reply: Reply::Hit,
        used: total,
    }
}

/// Parses the reply to a `set`.
pub fn parse_set(buf: &[u8]) -> Parse {
    let (l, used) = match line(buf) {
        Ok(Some(x)) => x,
        Ok(None) => {
            return Parse::Incomplete {
                need: buf.len() + 1,
            }
        }
        Err(()) => return Parse::Bad,
    };
    let reply = match l {
        b"STORED" => Reply::Stored,
        b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" => Reply::NotStored,
        _ => match error_line(l) {
            Some(r) => r,
            None => return Parse::Bad,
        },
    };
    Parse::Done { reply, used }
}

/// Writes requests for key indices without allocating: the key is a fixed template
/// whose tail digits are overwritten, the set header suffix and value are prebuilt.
pub struct RequestWriter {
    key: Vec<u8>,
    digits: usize,
    set_suffix: Vec<u8>,
    value: Vec<u8>,
}

impl RequestWriter {
    /// `key_size` must be at least `digits + 1` (checked by option validation).
    pub fn new(key_size: usize, digits: usize, value_size: usize) -> Self {
        let mut key = vec![b'0'; key_size.max(digits + 1)];
        if let Some(first) = key.first_mut() {
            *first = b'k';
        }
        // A repeating printable pattern rather than zeros, so nothing on the way can
        // shortcut an all-zero page.
        let mut value: Vec<u8> = (0..value_size).map(|i| b'a' + (i % 26) as u8).collect();
        value.extend_from_slice(b"\r\n");
        RequestWriter {
            key,
            digits,
            set_suffix: format!(" 0 0 {value_size}\r\n").into_bytes(),
            value,
        }
    }

    fn set_key(&mut self, mut idx: u64) {
        let len = self.key.len();
        let start = len - self.digits;
        for b in self.key[start..].iter_mut().rev() {
            *b = b'0' + (idx % 10) as u8;
            idx /= 10;
        }
    }

    pub fn get(&mut self, idx: u64, out: &mut Vec<u8>) {
        self.set_key(idx);
        out.extend_from_slice(b"get ");
        out.extend_from_slice(&self.key);
        out.extend_from_slice(b"\r\n");
    }

    pub fn set(&mut self, idx: u64, out: &mut Vec<u8>) {
        self.set_key(idx);
        out.extend_from_slice(b"set ");
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.set_suffix);
        out.extend_from_slice(&self.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_hit_miss_and_partial() {
        let full = b"VALUE k01 0 5\r\nhello\r\nEND\r\n";
        assert_eq!(
            parse_get(full),
            Parse::Done {
                reply: Reply::Hit,
                used: full.len()
            }
        );
        // Every strict prefix is incomplete, never Bad and never Done.
        for cut in 0..full.len() {
            assert!(
                matches!(parse_get(&full[..cut]), Parse::Incomplete { .. }),
                "cut {cut}"
            );
        }
        // The length from the header is reported once the header is in.
        assert_eq!(
            parse_get(&full[..16]),
            Parse::Incomplete { need: full.len() }
        );
        assert_eq!(
            parse_get(b"END\r\nEND\r\n"),
            Parse::Done {
                reply: Reply::Miss,
                used: 5
            }
        );
        let cas = b"VALUE k 1 2 99\r\nab\r\nEND\r\n";
        assert_eq!(
            parse_get(cas),
            Parse::Done {
                reply: Reply::Hit,
                used: cas.len()
            }
        );
    }

    #[test]
    fn get_bad_streams() {
        assert_eq!(parse_get(b"VALUE k 0 5\r\nhelloXXEND\r\n"), Parse::Bad);
        assert_eq!(parse_get(b"VALUE k 0 x\r\n"), Parse::Bad);
        assert_eq!(parse_get(b"VALUE k 0\r\n"), Parse::Bad);
        assert_eq!(parse_get(b"VALUE k 0 99999999999\r\n"), Parse::Bad);
        assert_eq!(parse_get(b"STORED\r\n"), Parse::Bad);
        assert_eq!(parse_get(b"END\n"), Parse::Bad);
        assert_eq!(parse_get(&[b'x'; MAX_LINE + 1]), Parse::Bad);
        assert_eq!(
            parse_get(b"SERVER_ERROR out of memory\r\n"),
            Parse::Done {
                reply: Reply::ServerError,
                used: 28
            }
        );
    }

    #[test]
    fn set_replies() {
        assert_eq!(
            parse_set(b"STORED\r\nSTO"),
            Parse::Done {
                reply: Reply::Stored,
                used: 8
            }
        );
        assert_eq!(parse_set(b"STOR"), Parse::Incomplete { need: 5 });
        assert_eq!(
            parse_set(b"NOT_STORED\r\n"),
            Parse::Done {
                reply: Reply::NotStored,
                used: 12
            }
        );
        assert_eq!(
            parse_set(b"CLIENT_ERROR bad data chunk\r\n"),
            Parse::Done {
                reply: Reply::ClientError,
                used: 29
            }
        );
        assert_eq!(
            parse_set(b"ERROR\r\n"),
            Parse::Done {
                reply: Reply::Error,
                used: 7
            }
        );
        assert_eq!(parse_set(b"END\r\n"), Parse::Bad);
        assert!(Reply::NotStored.is_error());
        assert!(!Reply::Miss.is_error());
    }

    #[test]
    fn writer_formats_fixed_width_keys() {
        let mut w = RequestWriter::new(8, 3, 4);
        let mut out = Vec::new();
        w.get(7, &mut out);
        assert_eq!(out, b"get k0000007\r\n");
        out.clear();
        w.set(123, &mut out);
        assert_eq!(out, b"set k0000123 0 0 4\r\nabcd\r\n");
        // A shorter index after a longer one leaves no stale digits behind.
        out.clear();
        w.get(5, &mut out);
        assert_eq!(out, b"get k0000005\r\n");
    }
}
