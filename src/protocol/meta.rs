//! The meta commands' request side (`mg ms md ma mn me`): memcached 1.6.18's parsing and
//! error order, plus the flags later 1.6 releases added (`E`, `x`). Pure: the executor
//! re-reads the flag tokens in request order to build the reply.

use super::text::{
    item_size_ok, safe_strtol, safe_strtoul, safe_strtoull, Parsed, Tokens, KEY_MAX_LENGTH,
    MAX_REAL_TOKENS,
};
use super::{ParseLimits, Request};

const ERROR: &str = "ERROR";
const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
const BAD_TOKEN: &str = "CLIENT_ERROR bad token in command line format";
const DUPLICATE: &str = "CLIENT_ERROR duplicate flag";
const INVALID: &str = "CLIENT_ERROR invalid flag";
const INVALID_OR_DUPLICATE: &str = "CLIENT_ERROR invalid or duplicate flag";
const DECODE: &str = "CLIENT_ERROR error decoding key";
/// `mg` says "are too long", `ms`/`md`/`ma` "too long": both spellings are memcached's.
const MG_TOO_LONG: &str = "CLIENT_ERROR options flags are too long";
const TOO_LONG: &str = "CLIENT_ERROR options flags too long";
pub const OPAQUE_TOO_LONG: &str = "CLIENT_ERROR opaque token too long";
const BAD_MS_MODE: &str = "CLIENT_ERROR invalid mode for ms M token";
pub const BAD_MA_MODE: &str = "CLIENT_ERROR invalid mode for ma M token";

/// memcached rejects a meta request whose tokenizer count (tokens plus its terminal
/// marker) exceeds this.
const MAX_TOKENS_COUNTED: usize = 20;
/// An `O` token longer than this (the `O` included) is refused.
const MAX_OPAQUE: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaCmd {
    Get,
    Set,
    Delete,
    Arith,
}

/// Everything the flags of one meta request asked for. Times are the raw signed tokens;
/// the executor turns them into expiry times (negative = already expired).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetaFlags {
    /// `b`: the key token is base64.
    pub base64: bool,
    /// `q`: suppress the nominal reply.
    pub quiet: bool,
    /// `v`: return the value.
    pub value: bool,
    /// `u`: no LRU bump, the item is not marked fetched.
    pub no_update: bool,
    /// `I`: invalidate (md) or accept a lower CAS as a stale write (ms with `C`).
    pub invalidate: bool,
    /// `x`: md keeps the item but empties its value.
    pub remove_value: bool,
    /// `N<ttl>`: create on miss.
    pub vivify: Option<i32>,
    /// `T<ttl>`: new TTL.
    pub ttl: Option<i32>,
    /// `R<ttl>`: win a recache when the remaining TTL is below this.
    pub recache: Option<i32>,
    /// `F<flags>`: client flags for ms.
    pub client_flags: u32,
    /// `C<cas>`: compare.
    pub compare_cas: Option<u64>,
    /// `E<cas>`: the version (CAS) the write creates.
    pub new_cas: Option<u64>,
    /// `M<mode>`: the mode character, 0 when absent.
    pub mode: u8,
    /// `J<n>`: ma's initial value on auto-create.
    pub initial: u64,
    /// `D<n>`: ma's delta.
    pub delta: Option<u64>,
    /// Some `O` token is longer than memcached allows; the error is reported at the point
    /// of execution where memcached notices it.
    pub opaque_too_long: bool,
}

/// A meta request the parser accepted. `key` is the key token as sent (still base64 when
/// `flags.base64`); `tokens` is the flag text in request order, for the reply.
#[derive(Debug, PartialEq, Eq)]
pub struct MetaRequest<'a> {
    pub cmd: MetaCmd,
    pub key: &'a [u8],
    pub flags: MetaFlags,
    pub tokens: &'a [u8],
    /// `ms`'s data block without its `\r\n`; empty for the others.
    pub value: &'a [u8],
}

impl MetaRequest<'_> {
    /// The flag tokens in request order.
    pub fn flag_tokens(&self) -> impl Iterator<Item = &[u8]> {
        self.tokens.split(|&b| b == b' ').filter(|t| !t.is_empty())
    }
}

/// Dispatches `m<which>`; `toks` stands after the command word.
pub(super) fn parse<'a>(
    which: u8,
    mut toks: Tokens<'a>,
    buf: &'a [u8],
    line_consumed: usize,
    limits: &ParseLimits,
) -> Parsed<'a> {
    let done = |req| Parsed::Complete {
        req,
        consumed: line_consumed,
    };
    let mut t: [&[u8]; MAX_REAL_TOKENS] = [&[]; MAX_REAL_TOKENS];
    let mut n = 1;
    while n < MAX_REAL_TOKENS {
        match toks.next() {
            Some(tok) => {
                t[n] = tok;
                n += 1;
            }
            None => break,
        }
    }
    let t = &t[..n];
    match which {
        b'n' => done(reply("MN")),
        b'e' => done(debug(t)),
        b'g' => done(keyed(MetaCmd::Get, t, buf)),
        b'd' => done(keyed(MetaCmd::Delete, t, buf)),
        b'a' => done(keyed(MetaCmd::Arith, t, buf)),
        b's' => set(t, buf, line_consumed, limits),
        _ => done(reply(ERROR)),
    }
}

fn reply(msg: &'static str) -> Request<'static> {
    Request::Reply {
        msg,
        noreply: false,
    }
}

/// The bytes of `buf` from the start of `first` to the end of `last` (both tokens of it).
fn span<'a>(buf: &'a [u8], first: &[u8], last: &[u8]) -> &'a [u8] {
    let base = buf.as_ptr() as usize;
    let start = (first.as_ptr() as usize).wrapping_sub(base);
    let end = (last.as_ptr() as usize).wrapping_sub(base) + last.len();
    buf.get(start..end).unwrap_or_default()
}

fn flag_text<'a>(buf: &'a [u8], t: &[&'a [u8]], from: usize) -> &'a [u8] {
    match (t.get(from), t.last()) {
        (Some(first), Some(last)) if t.len() > from => span(buf, first, last),
        _ => &[],
    }
}

/// `me <key> [b]`: memcached's debug command has its own, older, checks.
fn debug<'a>(t: &[&'a [u8]]) -> Request<'a> {
    let Some(&key) = t.get(1) else {
        return reply(BAD_FORMAT);
    };
    if key.len() > KEY_MAX_LENGTH {
        return reply(BAD_FORMAT);
    }
    let base64 = t.get(2) == Some(&&b"b"[..]);
    if base64 && decode_key(key, &mut [0u8; KEY_MAX_LENGTH]).is_none() {
        return reply(BAD_FORMAT);
    }
    Request::MetaDebug { key, base64 }
}

/// `mg`, `md`, `ma`: `<key> <flags>*`.
fn keyed<'a>(cmd: MetaCmd, t: &[&'a [u8]], buf: &'a [u8]) -> Request<'a> {
    let Some(&key) = t.get(1) else {
        return reply(ERROR);
    };
    if key.len() > KEY_MAX_LENGTH {
        return reply(BAD_FORMAT);
    }
    if t.len() + 1 > MAX_TOKENS_COUNTED {
        return reply(if cmd == MetaCmd::Get {
            MG_TOO_LONG
        } else {
            TOO_LONG
        });
    }
    let flags = match preparse(key, t.get(2..).unwrap_or_default()) {
        Ok(f) => f,
        // md and ma report any flag problem with one message.
        Err(msg) if cmd == MetaCmd::Get => return reply(msg),
        Err(_) => return reply(INVALID_OR_DUPLICATE),
    };
    match cmd {
        MetaCmd::Delete if flags.opaque_too_long => return reply(OPAQUE_TOO_LONG),
        MetaCmd::Arith if !matches!(flags.mode, 0 | b'I' | b'+' | b'D' | b'-') => {
            return reply(BAD_MA_MODE)
        }
        _ => {}
    }
    Request::Meta(MetaRequest {
        cmd,
        key,
        flags,
        tokens: flag_text(buf, t, 2),
        value: &[],
    })
}

/// `ms <key> <datalen> <flags>*\r\n<data>\r\n`. Errors found after the length is known
/// swallow the data block, as memcached does.
fn set<'a>(
    t: &[&'a [u8]],
    buf: &'a [u8],
    line_consumed: usize,
    limits: &ParseLimits,
) -> Parsed<'a> {
    let done = |req| Parsed::Complete {
        req,
        consumed: line_consumed,
    };
    let Some(&key) = t.get(1) else {
        return done(reply(ERROR));
    };
    if key.len() > KEY_MAX_LENGTH || t.len() == 2 {
        return done(reply(BAD_FORMAT));
    }
    if t.len() + 1 > MAX_TOKENS_COUNTED {
        return done(reply(TOO_LONG));
    }
    let vlen = match t.get(2).and_then(|v| safe_strtol(v)) {
        Some(v) if (0..=i32::MAX - 2).contains(&v) => v,
        _ => return done(reply(BAD_FORMAT)),
    };
    // Non-negative and below i32::MAX - 2, so neither the conversion nor the +2 fails.
    let nbytes = usize::try_from(vlen).unwrap_or_default() + 2;
    let swallow = |msg: &'static str| Parsed::Complete {
        req: Request::ReplySwallow {
            msg,
            swallow: nbytes,
        },
        consumed: line_consumed,
    };
    let flags = match preparse(key, t.get(3..).unwrap_or_default()) {
        Ok(f) => f,
        Err(msg) => return swallow(msg),
    };
    if !matches!(flags.mode, 0 | b'E' | b'A' | b'P' | b'R' | b'S') {
        return swallow(BAD_MS_MODE);
    }
    if flags.opaque_too_long {
        return swallow(OPAQUE_TOO_LONG);
    }
    let mut scratch = [0u8; KEY_MAX_LENGTH];
    let nkey = if flags.base64 {
        decode_key(key, &mut scratch).map_or(0, |k| k.len())
    } else {
        key.len()
    };
    if !item_size_ok(nkey, flags.client_flags, nbytes, limits) {
        return Parsed::Complete {
            req: Request::MetaTooLarge {
                key,
                base64: flags.base64,
                swallow: nbytes,
            },
            consumed: line_consumed,
        };
    }
    let total = line_consumed + nbytes;
    let Some(block) = buf.get(line_consumed..total) else {
        return Parsed::Incomplete;
    };
    let (value, tail) = block.split_at(nbytes - 2);
    let req = if tail == b"\r\n" {
        Request::Meta(MetaRequest {
            cmd: MetaCmd::Set,
            key,
            flags,
            tokens: flag_text(buf, t, 3),
            value,
        })
    } else {
        // A meta set always reports errors, quiet mode or not.
        Request::BadDataChunk { noreply: false }
    };
    Parsed::Complete {
        req,
        consumed: total,
    }
}

/// memcached's `_meta_flag_preparse`: the first byte of each token names the flag. A
/// repeated (or non-ASCII) flag and an unknown flag stop the scan at once; a bad number
/// is remembered and the scan goes on, so a later message may replace it.
fn preparse(key: &[u8], toks: &[&[u8]]) -> Result<MetaFlags, &'static str> {
    let mut f = MetaFlags::default();
    let mut seen = [false; 128];
    let mut error: Option<&'static str> = None;
    // memcached's message when a flag fails without naming its own problem.
    let mut errstr = BAD_FORMAT;
    for tok in toks {
        let Some((&o, arg)) = tok.split_first() else {
            continue;
        };
        let Some(slot) = seen.get_mut(usize::from(o)).filter(|_| o < 127) else {
            return Err(DUPLICATE);
        };
        if *slot {
            return Err(DUPLICATE);
        }
        *slot = true;
        let mut fail = |msg: Option<&'static str>| {
            if let Some(m) = msg {
                errstr = m;
            }
            error = Some(errstr);
        };
        match o {
            b'b' => {
                f.base64 = true;
                if decode_key(key, &mut [0u8; KEY_MAX_LENGTH]).is_none() {
                    fail(Some(DECODE));
                }
            }
            b'N' | b'T' | b'R' => match safe_strtol(arg) {
                Some(v) => match o {
                    b'N' => f.vivify = Some(v),
                    b'T' => f.ttl = Some(v),
                    _ => f.recache = Some(v),
                },
                None => fail(Some(BAD_TOKEN)),
            },
            b'O' => f.opaque_too_long |= tok.len() > MAX_OPAQUE,
            b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' | b'l' | b'h' => {}
            b'v' => f.value = true,
            b'u' => f.no_update = true,
            b'q' => f.quiet = true,
            b'I' => f.invalidate = true,
            b'x' => f.remove_value = true,
            b'F' => match safe_strtoul(arg) {
                Some(v) => f.client_flags = v,
                None => fail(None),
            },
            b'C' | b'E' => match safe_strtoull(arg) {
                Some(v) if o == b'C' => f.compare_cas = Some(v),
                Some(v) => f.new_cas = Some(v),
                None => fail(Some(BAD_TOKEN)),
            },
            b'M' => match arg {
                [m] => f.mode = *m,
                _ => fail(Some("CLIENT_ERROR incorrect length for M token")),
            },
            b'J' => match safe_strtoull(arg) {
                Some(v) => f.initial = v,
                None => fail(Some("CLIENT_ERROR invalid numeric initial value")),
            },
            b'D' => match safe_strtoull(arg) {
                Some(v) => f.delta = Some(v),
                None => fail(Some("CLIENT_ERROR invalid numeric delta value")),
            },
            _ => return Err(INVALID),
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(f),
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The 6-bit value of a base64 byte; `=` reads as 0. Other bytes are skipped.
fn b64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        b'=' => Some(0),
        _ => None,
    }
}

/// memcached's base64 decoder: bytes outside the alphabet are ignored, the rest must
/// come in whole groups of four, decoding stops after the first group holding padding,
/// and three or more `=` in a group are invalid. `None` where memcached returns 0.
pub fn decode_key<'o>(src: &[u8], out: &'o mut [u8; KEY_MAX_LENGTH]) -> Option<&'o [u8]> {
    let count = src.iter().filter(|&&b| b64_value(b).is_some()).count();
    if count == 0 || count % 4 != 0 {
        return None;
    }
    let mut len = 0;
    let mut block = [0u8; 4];
    let mut n = 0;
    let mut pad = 0;
    for &b in src {
        let Some(v) = b64_value(b) else { continue };
        if b == b'=' {
            pad += 1;
        }
        block[n] = v;
        n += 1;
        if n == 4 {
            let bytes = [
                (block[0] << 2) | (block[1] >> 4),
                (block[1] << 4) | (block[2] >> 2),
                (block[2] << 6) | block[3],
            ];
            let keep = match pad {
                0 => 3,
                1 => 2,
                2 => 1,
                _ => return None,
            };
            out.get_mut(len..len + keep)?
                .copy_from_slice(bytes.get(..keep)?);
            len += keep;
            n = 0;
            if pad > 0 {
                break;
            }
        }
    }
    out.get(..len)
}

/// Standard base64 with padding, for keys returned by `k` on a binary key.
pub fn encode_key(src: &[u8], out: &mut Vec<u8>) {
    for chunk in src.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let idx = [
            b[0] >> 2,
            ((b[0] & 0x03) << 4) | (b[1] >> 4),
            ((b[1] & 0x0f) << 2) | (b[2] >> 6),
            b[2] & 0x3f,
        ];
        for (i, &x) in idx.iter().enumerate() {
            if i <= chunk.len() {
                out.push(B64[usize::from(x)]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::text::parse as parse_text;
    use super::super::text::tests::{one, LIMITS};
    use super::*;

    fn err(buf: &[u8]) -> &'static str {
        match one(buf) {
            Request::Reply { msg, noreply } => {
                assert!(!noreply);
                msg
            }
            other => panic!("not a reply: {other:?}"),
        }
    }

    fn meta(buf: &[u8]) -> MetaRequest<'_> {
        match one(buf) {
            Request::Meta(m) => m,
            other => panic!("not meta: {other:?}"),
        }
    }

    #[test]
    fn flags_are_parsed_and_kept_in_order() {
        let m = meta(b"mg foo v c  f T30 Oab N-1 R5 k\r\n");
        assert_eq!(m.cmd, MetaCmd::Get);
        assert_eq!(m.key, b"foo");
        assert!(m.flags.value && !m.flags.quiet);
        assert_eq!(m.flags.ttl, Some(30));
        assert_eq!(m.flags.vivify, Some(-1));
        assert_eq!(m.flags.recache, Some(5));
        let toks: Vec<&[u8]> = m.flag_tokens().collect();
        assert_eq!(
            toks,
            vec![&b"v"[..], b"c", b"f", b"T30", b"Oab", b"N-1", b"R5", b"k"]
        );
        let m = meta(b"ma n MD D7 J9 N0 q E12 C3\r\n");
        assert_eq!(m.flags.mode, b'D');
        assert_eq!(m.flags.delta, Some(7));
        assert_eq!(m.flags.initial, 9);
        assert_eq!(m.flags.new_cas, Some(12));
        assert_eq!(m.flags.compare_cas, Some(3));
        assert!(m.flags.quiet);
        let m = meta(b"md k I T5 x\r\n");
        assert!(m.flags.invalidate && m.flags.remove_value);
        assert_eq!(meta(b"mg k\r\n").tokens, b"");
    }

    #[test]
    fn errors_in_memcached_order() {
        assert_eq!(err(b"mg\r\n"), ERROR);
        assert_eq!(err(b"md\r\n"), ERROR);
        assert_eq!(err(b"ma\r\n"), ERROR);
        assert_eq!(err(b"ms\r\n"), ERROR);
        assert_eq!(err(b"mz k\r\n"), ERROR);
        assert_eq!(err(b"mn extra tokens\r\n"), "MN");
        assert_eq!(err(b"mg k v v\r\n"), DUPLICATE);
        assert_eq!(err(b"mg k vx vy\r\n"), DUPLICATE);
        assert_eq!(err(b"mg k !\r\n"), INVALID);
        assert_eq!(err(b"mg k \xff\r\n"), DUPLICATE);
        assert_eq!(err(b"mg k Tx\r\n"), BAD_TOKEN);
        assert_eq!(err(b"mg k T\r\n"), BAD_TOKEN);
        // A bad number does not stop the scan: a later unknown flag wins.
        assert_eq!(err(b"mg k Tx !\r\n"), INVALID);
        // F names no problem of its own: the default message, or an earlier one.
        assert_eq!(err(b"mg k Fx\r\n"), BAD_FORMAT);
        assert_eq!(err(b"mg k Tx Fx\r\n"), BAD_TOKEN);
        assert_eq!(
            err(b"mg k Mxy\r\n"),
            "CLIENT_ERROR incorrect length for M token"
        );
        assert_eq!(err(b"md k Tx\r\n"), INVALID_OR_DUPLICATE);
        assert_eq!(err(b"ma k Dx\r\n"), INVALID_OR_DUPLICATE);
        assert_eq!(err(b"ma k MX\r\n"), BAD_MA_MODE);
        assert_eq!(err(b"mg !!!! b\r\n"), DECODE);
        let key = vec![b'a'; 251];
        let line = [&b"mg "[..], &key, b" v\r\n"].concat();
        assert_eq!(err(&line), BAD_FORMAT);
        let many = [&b"mg k"[..], &b" a".repeat(18), b"\r\n"].concat();
        assert_eq!(err(&many), MG_TOO_LONG);
        let ok = [&b"mg k"[..], b" v c f s t k l h u q O1 P L b", b"\r\n"].concat();
        assert_eq!(err(&ok), DECODE);
        let many = [&b"md k"[..], &b" q".repeat(18), b"\r\n"].concat();
        assert_eq!(err(&many), TOO_LONG);
        let opaque = [&b"md k O"[..], &[b'x'; 32], b"\r\n"].concat();
        assert_eq!(err(&opaque), OPAQUE_TOO_LONG);
        let opaque = [&b"mg k O"[..], &[b'x'; 32], b"\r\n"].concat();
        assert!(meta(&opaque).flags.opaque_too_long);
        let opaque = [&b"mg k O"[..], &[b'x'; 31], b"\r\n"].concat();
        assert!(!meta(&opaque).flags.opaque_too_long);
        assert_eq!(err(b"me\r\n"), BAD_FORMAT);
        assert_eq!(err(b"me !!!! b\r\n"), BAD_FORMAT);
    }

    #[test]
    fn meta_set_framing() {
        let m = meta(b"ms k 2 T0 F5 c\r\nhi\r\n");
        assert_eq!(
            (m.cmd, m.value, m.flags.client_flags),
            (MetaCmd::Set, &b"hi"[..], 5)
        );
        assert_eq!(m.tokens, b"T0 F5 c");
        assert_eq!(err(b"ms k\r\n"), BAD_FORMAT);
        assert_eq!(err(b"ms k x\r\n"), BAD_FORMAT);
        assert_eq!(err(b"ms k -1\r\n"), BAD_FORMAT);
        let swallowed = |buf: &[u8]| match parse_text(buf, &LIMITS) {
            Parsed::Complete {
                req: Request::ReplySwallow { msg, swallow },
                ..
            } => (msg, swallow),
            other => panic!("{other:?}"),
        };
        assert_eq!(swallowed(b"ms k 2 v v\r\n"), (DUPLICATE, 4));
        assert_eq!(swallowed(b"ms k 2 MZ\r\n"), (BAD_MS_MODE, 4));
        let opaque = [&b"ms k 2 O"[..], &[b'x'; 40], b" MZ\r\n"].concat();
        assert_eq!(swallowed(&opaque), (BAD_MS_MODE, 4));
        let opaque = [&b"ms k 2 O"[..], &[b'x'; 40], b"\r\n"].concat();
        assert_eq!(swallowed(&opaque), (OPAQUE_TOO_LONG, 4));
        assert!(matches!(
            one(b"ms k 2 q\r\nhiXY"),
            Request::BadDataChunk { noreply: false }
        ));
        assert!(matches!(
            one(b"ms k 2000000\r\n"),
            Request::MetaTooLarge {
                swallow: 2_000_002,
                ..
            }
        ));
        assert_eq!(parse_text(b"ms k 5 T0\r\nab", &LIMITS), Parsed::Incomplete);
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let reqs: [&[u8]; 7] = [
            b"mg k v\r\n",
            b"ms k 3 T0\r\nabc\r\n",
            b"md k q\r\n",
            b"ma k D5\r\n",
            b"mn\r\n",
            b"me k\r\n",
            b"ms a 0\r\n\r\n",
        ];
        for r in reqs {
            for cut in 0..r.len() {
                assert_eq!(
                    parse_text(&r[..cut], &LIMITS),
                    Parsed::Incomplete,
                    "{:?}",
                    String::from_utf8_lossy(&r[..cut])
                );
            }
        }
    }

    #[test]
    fn base64_matches_memcached() {
        let mut out = [0u8; KEY_MAX_LENGTH];
        assert_eq!(decode_key(b"Zm9v", &mut out), Some(&b"foo"[..]));
        assert_eq!(decode_key(b"Zm8=", &mut out), Some(&b"fo"[..]));
        assert_eq!(decode_key(b"Zg==", &mut out), Some(&b"f"[..]));
        // Bytes outside the alphabet are skipped; data after the padded group is ignored.
        assert_eq!(decode_key(b"Zm!9v", &mut out), Some(&b"foo"[..]));
        assert_eq!(decode_key(b"Zg==Zm9v", &mut out), Some(&b"f"[..]));
        assert_eq!(decode_key(b"Zm9", &mut out), None);
        assert_eq!(decode_key(b"!!!!", &mut out), None);
        assert_eq!(decode_key(b"Z===", &mut out), None);
        for len in 0..40usize {
            let src: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut enc = Vec::new();
            encode_key(&src, &mut enc);
            if len > 0 {
                assert_eq!(decode_key(&enc, &mut out), Some(&src[..]));
            }
        }
    }
}
