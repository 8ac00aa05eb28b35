//! The classic memcached text protocol parser (memcached 1.6.0–1.6.39 behaviour, checked
//! byte for byte against memcached 1.6.18): one pure function from buffered bytes to
//! "need more" or "a request and the bytes it used".
//!
//! memcached parses a line in place as a C string, so several of its quirks come from C:
//! the line ends at its first NUL (`strlen`), numbers go through glibc `strtoul`/`strtol`
//! (leading whitespace and a sign are accepted, a number may be followed by a tab or
//! `\r`, 64-bit results are silently truncated to 32 bits), and only the space byte
//! separates tokens. This module reproduces those rules rather than "fixing" them, so
//! that clients see exactly the replies memcached would give.

use memchr::{memchr, memchr2};

use super::{ParseLimits, Request, StoreCmd};

/// The outcome of looking at the front of a connection's read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// No complete request yet; read more and call again with the grown buffer.
    Incomplete,
    /// The front `consumed` bytes make one request (its line plus any data block).
    /// `0 < consumed <= buf.len()`.
    Complete { req: Request<'a>, consumed: usize },
}

/// memcached's `KEY_MAX_LENGTH`.
pub const KEY_MAX_LENGTH: usize = 250;

/// Without a newline in this many bytes the connection is closed (unless it is a get).
const MAX_LINE_WITHOUT_NEWLINE: usize = 2048;

/// `sizeof(item)` of a 64-bit memcached 1.6 build: the fixed per-item header.
const ITEM_HEADER: u64 = 48;

const ERROR: &str = "ERROR";
const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
const BAD_DELTA: &str = "CLIENT_ERROR invalid numeric delta argument";
const BAD_EXPTIME: &str = "CLIENT_ERROR invalid exptime argument";
const DELETE_USAGE: &str = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";
const MEMLIMIT_TOO_SMALL: &str = "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m";
const MEMLIMIT_NOT_BYTES: &str = "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes";
/// Debian's 1.6.18 is a TLS build; without `-Z` it answers `refresh_certs` this way.
const TLS_NOT_ENABLED: &str = "Error TLS not enabled";

/// The most tokens any fixed-arity command accepts is 7 (`cas` with noreply); collecting
/// one more is enough to tell "too many" for all of them.
const FIXED_TOKENS: usize = 8;

/// memcached's tokenizer keeps at most `MAX_TOKENS - 1` = 23 real tokens.
pub(super) const MAX_REAL_TOKENS: usize = 23;

/// Parses the first request in `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &ParseLimits) -> Parsed<'a> {
    let Some(nl) = memchr(b'\n', buf) else {
        return no_newline(buf);
    };
    let line_consumed = nl + 1;
    // memcached strips the `\r` only when the line has at least two bytes before `\n`,
    // so a lone "\r\n" is the one-byte command "\r" (and gets `ERROR`).
    let mut line_end = nl;
    if nl > 1 && buf.get(nl - 1) == Some(&b'\r') {
        line_end = nl - 1;
    }
    let line = buf.get(..line_end).unwrap_or_default();
    let done = |req| Parsed::Complete {
        req,
        consumed: line_consumed,
    };

    let mut toks = Tokens::new(line);
    let Some(cmd) = toks.next() else {
        return done(reply(ERROR));
    };
    // No valid command is shorter than two bytes.
    if cmd.len() < 2 {
        return done(reply(ERROR));
    }

    let first = cmd.first().copied().unwrap_or_default();
    // Every two-byte `m` command is a meta command (memcached answers the unknown ones
    // `ERROR` without the HTTP check).
    if first == b'm' && cmd.len() == 2 {
        let which = cmd.get(1).copied().unwrap_or_default();
        return super::meta::parse(which, toks, buf, line_consumed, limits);
    }
    match first {
        b'g' => return done(get_family(cmd, toks)),
        b's' => {
            let req = match cmd {
                b"set" => return storage(StoreCmd::Set, toks, buf, line_consumed, limits),
                b"stats" => stats(toks),
                b"shutdown" => shutdown(toks),
                // `slabs` is not implemented yet.
                _ => reply(ERROR),
            };
            return done(req);
        }
        b'a' => {
            return match cmd {
                b"add" => storage(StoreCmd::Add, toks, buf, line_consumed, limits),
                b"append" => storage(StoreCmd::Append, toks, buf, line_consumed, limits),
                _ => done(reply(ERROR)),
            }
        }
        b'c' => {
            return match cmd {
                b"cas" => storage(StoreCmd::Cas, toks, buf, line_consumed, limits),
                b"cache_memlimit" => done(memlimit(toks)),
                _ => done(reply(ERROR)),
            }
        }
        b'i' => {
            let req = match cmd {
                b"incr" => arith(true, toks),
                _ => reply(ERROR),
            };
            return done(req);
        }
        b'd' => {
            let req = match cmd {
                b"delete" => delete(toks),
                b"decr" => arith(false, toks),
                _ => reply(ERROR),
            };
            return done(req);
        }
        b't' => {
            let req = match cmd {
                b"touch" => touch(toks),
                _ => reply(ERROR),
            };
            return done(req);
        }
        _ => {}
    }
    let req = match cmd {
        b"replace" => return storage(StoreCmd::Replace, toks, buf, line_consumed, limits),
        b"prepend" => return storage(StoreCmd::Prepend, toks, buf, line_consumed, limits),
        b"bget" => get_keys(toks, false, None),
        b"flush_all" => flush_all(toks),
        b"version" => Request::Version,
        b"quit" => Request::Quit,
        b"verbosity" => verbosity(toks),
        b"refresh_certs" => reply(TLS_NOT_ENABLED),
        // Not implemented yet; memcached knows them, so no HTTP check either.
        b"watch" => Request::Watch,
        b"lru_crawler" | b"lru" | b"extstore" => reply(ERROR),
        _ => unknown(cmd, toks),
    };
    done(req)
}

/// Iterates the keys of a validated `Request::Get`/`GetKeyTooLong` key list.
pub fn keys(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == b' ').filter(|k| !k.is_empty())
}

fn reply(msg: &'static str) -> Request<'static> {
    Request::Reply {
        msg,
        noreply: false,
    }
}

fn reply_nr(msg: &'static str, noreply: bool) -> Request<'static> {
    Request::Reply { msg, noreply }
}

/// The read buffer holds no complete line yet. memcached gives up on a line after 2048
/// bytes unless it is a (possibly huge) multi-get: `get `/`gets ` after at most 100
/// leading spaces.
fn no_newline(buf: &[u8]) -> Parsed<'_> {
    if buf.len() <= MAX_LINE_WITHOUT_NEWLINE {
        return Parsed::Incomplete;
    }
    let spaces = buf.iter().take(101).take_while(|&&b| b == b' ').count();
    let rest = buf.get(spaces..).unwrap_or_default();
    if spaces > 100 || !(rest.starts_with(b"get ") || rest.starts_with(b"gets ")) {
        return Parsed::Complete {
            req: Request::Close,
            consumed: buf.len(),
        };
    }
    Parsed::Incomplete
}

/// memcached's `tokenize_command` over a line that ends at its first NUL: tokens are
/// maximal runs of non-space bytes.
pub(super) struct Tokens<'a> {
    line: &'a [u8],
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn new(line: &'a [u8]) -> Self {
        Tokens { line, pos: 0 }
    }

    pub(super) fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.line.get(self.pos..).unwrap_or_default();
        let skip = rest.iter().take_while(|&&b| b == b' ').count();
        let start = self.pos + skip;
        let rest = self.line.get(start..).unwrap_or_default();
        let len = memchr2(b' ', 0, rest).unwrap_or(rest.len());
        if rest.get(len) == Some(&0) {
            // strlen() stops here: nothing after the NUL exists for memcached.
            self.line = self.line.get(..start + len).unwrap_or_default();
        }
        self.pos = start + len;
        if len == 0 {
            return None;
        }
        rest.get(..len)
    }

    /// Collects the remaining tokens into `out`; returns how many (at most its length).
    fn fill(&mut self, out: &mut [&'a [u8]]) -> usize {
        let mut n = 0;
        for slot in out.iter_mut() {
            match self.next() {
                Some(t) => {
                    *slot = t;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// The bytes from the next token to the end of the last one, with the count of
    /// tokens in between; used for key lists and `stats` arguments.
    fn remainder(&mut self) -> &'a [u8] {
        let Some(first) = self.next() else {
            return &[];
        };
        let start = self.pos - first.len();
        let mut end = self.pos;
        while self.next().is_some() {
            end = self.pos;
        }
        self.line.get(start..end).unwrap_or_default()
    }
}

/// Collects the tokens after the command word, indexed as memcached indexes them (slot
/// 0 stands for the command word, which is never `noreply`, so it is left empty), and
/// their count including the command word (memcached's `ntokens` minus its terminal
/// token). Counts stop at `FIXED_TOKENS`, which every fixed-arity command already treats
/// as too many.
fn fixed<'a>(toks: &mut Tokens<'a>) -> ([&'a [u8]; FIXED_TOKENS], usize) {
    let mut t: [&[u8]; FIXED_TOKENS] = [&[]; FIXED_TOKENS];
    let n = toks.fill(t.get_mut(1..).unwrap_or_default()) + 1;
    (t, n)
}

/// `set_noreply_maybe`: the last token is exactly `noreply`.
fn noreply_last(t: &[&[u8]], n: usize) -> bool {
    n.checked_sub(1).and_then(|i| t.get(i)) == Some(&&b"noreply"[..])
}

fn tok<'a>(t: &[&'a [u8]], i: usize) -> &'a [u8] {
    t.get(i).copied().unwrap_or_default()
}

fn get_family<'a>(cmd: &'a [u8], mut toks: Tokens<'a>) -> Request<'a> {
    let (cas, touch) = match cmd {
        b"get" => (false, false),
        b"gets" => (true, false),
        b"gat" => (false, true),
        b"gats" => (true, true),
        _ => {
            // memcached asks for >= 3 tokens before it looks at the name; both give ERROR.
            return reply(ERROR);
        }
    };
    if !touch {
        return get_keys(toks, cas, None);
    }
    let Some(exp) = toks.next() else {
        return reply(ERROR);
    };
    match safe_strtol(exp) {
        // `gat <exptime>` with no keys is accepted and answers just `END`.
        Some(exptime) => get_keys(toks, cas, Some(exptime)),
        None => reply(BAD_EXPTIME),
    }
}

fn get_keys(mut toks: Tokens<'_>, cas: bool, touch: Option<i32>) -> Request<'_> {
    let Some(first) = toks.next() else {
        // memcached wants a key after get/gets/bget, but `gat <exptime>` alone is fine
        // (its exptime was the required token) and answers just `END`.
        return match touch {
            Some(_) => Request::Get {
                keys: &[],
                cas,
                touch,
            },
            None => reply(ERROR),
        };
    };
    let start = toks.pos - first.len();
    let mut end = start;
    let mut key = Some(first);
    while let Some(k) = key {
        if k.len() > KEY_MAX_LENGTH {
            return Request::GetKeyTooLong {
                keys: toks.line.get(start..end).unwrap_or_default(),
                cas,
                touch,
            };
        }
        end = toks.pos;
        key = toks.next();
    }
    Request::Get {
        keys: toks.line.get(start..end).unwrap_or_default(),
        cas,
        touch,
    }
}

fn storage<'a>(
    cmd: StoreCmd,
    mut toks: Tokens<'a>,
    buf: &'a [u8],
    line_consumed: usize,
    limits: &ParseLimits,
) -> Parsed<'a> {
    let done = |req| Parsed::Complete {
        req,
        consumed: line_consumed,
    };
    let (t, n) = fixed(&mut toks);
    let is_cas = cmd == StoreCmd::Cas;
    let arity_ok = if is_cas {
        n == 6 || n == 7
    } else {
        n == 5 || n == 6
    };
    if !arity_ok {
        return done(reply(ERROR));
    }
    let noreply = noreply_last(&t, n);
    let key = tok(&t, 1);
    if key.len() > KEY_MAX_LENGTH {
        return done(reply_nr(BAD_FORMAT, noreply));
    }
    let (Some(flags), Some(exptime), Some(vlen)) = (
        safe_strtoul(tok(&t, 2)),
        safe_strtol(tok(&t, 3)),
        safe_strtol(tok(&t, 4)),
    ) else {
        return done(reply_nr(BAD_FORMAT, noreply));
    };
    let mut cas_unique = 0;
    if is_cas {
        match safe_strtoull(tok(&t, 5)) {
            Some(c) => cas_unique = c,
            None => return done(reply_nr(BAD_FORMAT, noreply)),
        }
    }
    if !(0..=i32::MAX - 2).contains(&vlen) {
        return done(reply_nr(BAD_FORMAT, noreply));
    }
    // Non-negative and below i32::MAX - 2, so the conversion and the +2 cannot fail.
    let nbytes = usize::try_from(vlen).unwrap_or_default() + 2;
    if !item_size_ok(key.len(), flags, nbytes, limits) {
        return done(Request::StoreTooLarge {
            cmd,
            key,
            noreply,
            swallow: nbytes,
        });
    }
    let total = line_consumed + nbytes;
    let Some(block) = buf.get(line_consumed..total) else {
        return Parsed::Incomplete;
    };
    let (value, tail) = block.split_at(nbytes - 2);
    let req = if tail == b"\r\n" {
        Request::Store {
            cmd,
            key,
            flags,
            exptime,
            value,
            cas_unique,
            noreply,
        }
    } else {
        Request::BadDataChunk { noreply }
    };
    Parsed::Complete {
        req,
        consumed: total,
    }
}

/// memcached's `item_size_ok`: header + key + NUL + client-flags suffix (4 bytes, only
/// when the flags are non-zero) + data with its `\r\n` + CAS (8 bytes unless `-C`) must
/// fit in `-I`.
pub(super) fn item_size_ok(nkey: usize, flags: u32, nbytes: usize, limits: &ParseLimits) -> bool {
    let suffix = if flags == 0 { 0 } else { 4 };
    let cas = if limits.cas_enabled { 8 } else { 0 };
    let total = ITEM_HEADER + nkey as u64 + 1 + suffix + nbytes as u64 + cas;
    total <= limits.item_size_max as u64
}

fn arith<'a>(incr: bool, mut toks: Tokens<'a>) -> Request<'a> {
    let (t, n) = fixed(&mut toks);
    if n != 3 && n != 4 {
        return reply(ERROR);
    }
    let noreply = noreply_last(&t, n);
    let key = tok(&t, 1);
    if key.len() > KEY_MAX_LENGTH {
        return reply_nr(BAD_FORMAT, noreply);
    }
    match safe_strtoull(tok(&t, 2)) {
        Some(delta) => Request::Arith {
            incr,
            key,
            delta,
            noreply,
        },
        None => reply_nr(BAD_DELTA, noreply),
    }
}

fn delete<'a>(mut toks: Tokens<'a>) -> Request<'a> {
    let (t, n) = fixed(&mut toks);
    if !(2..=4).contains(&n) {
        return reply(ERROR);
    }
    let mut noreply = false;
    if n > 2 {
        // The legacy `delete <key> 0` hold time is still accepted.
        let hold_is_zero = tok(&t, 2) == b"0";
        noreply = noreply_last(&t, n);
        let valid = (n == 3 && (hold_is_zero || noreply)) || (n == 4 && hold_is_zero && noreply);
        if !valid {
            return reply_nr(DELETE_USAGE, noreply);
        }
    }
    let key = tok(&t, 1);
    if key.len() > KEY_MAX_LENGTH {
        return reply_nr(BAD_FORMAT, noreply);
    }
    Request::Delete { key, noreply }
}

fn touch<'a>(mut toks: Tokens<'a>) -> Request<'a> {
    let (t, n) = fixed(&mut toks);
    if n != 3 && n != 4 {
        return reply(ERROR);
    }
    let noreply = noreply_last(&t, n);
    let key = tok(&t, 1);
    if key.len() > KEY_MAX_LENGTH {
        return reply_nr(BAD_FORMAT, noreply);
    }
    match safe_strtol(tok(&t, 2)) {
        Some(exptime) => Request::Touch {
            key,
            exptime,
            noreply,
        },
        None => reply_nr(BAD_EXPTIME, noreply),
    }
}

fn flush_all<'a>(mut toks: Tokens<'a>) -> Request<'a> {
    let (t, n) = fixed(&mut toks);
    if !(1..=3).contains(&n) {
        return reply(ERROR);
    }
    let noreply = noreply_last(&t, n);
    // memcached parses the delay whenever the count is not exactly "command [noreply]",
    // so `flush_all 10 20` flushes with delay 10 and `flush_all noreply 0` is an error.
    let mut delay = 0;
    if n != if noreply { 2 } else { 1 } {
        match safe_strtol(tok(&t, 1)) {
            Some(d) => delay = d,
            None => return Request::FlushAllInvalid { noreply },
        }
    }
    Request::FlushAll { delay, noreply }
}

fn verbosity<'a>(mut toks: Tokens<'a>) -> Request<'a> {
    let (t, n) = fixed(&mut toks);
    if n != 2 && n != 3 {
        return reply(ERROR);
    }
    let noreply = noreply_last(&t, n);
    match safe_strtoul(tok(&t, 1)) {
        Some(level) => Request::Verbosity { level, noreply },
        None => reply_nr(BAD_FORMAT, noreply),
    }
}

fn memlimit<'a>(mut toks: Tokens<'a>) -> Request<'a> {
    let (t, n) = fixed(&mut toks);
    if n != 2 && n != 3 {
        return reply(ERROR);
    }
    let noreply = noreply_last(&t, n);
    match safe_strtoul(tok(&t, 1)) {
        None => reply_nr(ERROR, noreply),
        Some(mb) if mb < 8 => reply_nr(MEMLIMIT_TOO_SMALL, noreply),
        Some(mb) if mb > 1_000_000_000 => reply_nr(MEMLIMIT_NOT_BYTES, noreply),
        Some(mb) => Request::CacheMemlimit {
            megabytes: u64::from(mb),
            noreply,
        },
    }
}

fn shutdown<'a>(mut toks: Tokens<'a>) -> Request<'a> {
    let (t, n) = fixed(&mut toks);
    match n {
        1 => Request::Shutdown { graceful: false },
        2 if tok(&t, 1) == b"graceful" => Request::Shutdown { graceful: true },
        _ => Request::ShutdownInvalid,
    }
}

fn stats<'a>(mut toks: Tokens<'a>) -> Request<'a> {
    Request::Stats {
        args: toks.remainder(),
    }
}

/// An unknown command: `ERROR`, except that a line whose last token (of the first 23)
/// starts with `HTTP/` closes the connection.
fn unknown<'a>(cmd: &'a [u8], mut toks: Tokens<'a>) -> Request<'a> {
    let mut last = cmd;
    for _ in 1..MAX_REAL_TOKENS {
        match toks.next() {
            Some(t) => last = t,
            None => break,
        }
    }
    if last.starts_with(b"HTTP/") {
        Request::Close
    } else {
        reply(ERROR)
    }
}

/// A decimal number as glibc's `strtoul`/`strtol`/`strtoull` read it, plus memcached's
/// `safe_*` acceptance rule for what may follow it (end of token or a whitespace byte).
struct CNumber {
    negative: bool,
    magnitude: u64,
}

fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `None` when glibc would find no digits, report ERANGE for the magnitude, or stop at a
/// byte memcached's `safe_*` wrappers reject.
fn c_number(s: &[u8]) -> Option<CNumber> {
    let ws = s.iter().take_while(|&&b| c_isspace(b)).count();
    let mut rest = s.get(ws..).unwrap_or_default();
    let mut negative = false;
    if let Some((&sign, tail)) = rest.split_first() {
        if sign == b'+' || sign == b'-' {
            negative = sign == b'-';
            rest = tail;
        }
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut magnitude: u64 = 0;
    for &d in rest.get(..digits).unwrap_or_default() {
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(d - b'0'))?;
    }
    match rest.get(digits) {
        None => {}
        Some(&b) if c_isspace(b) => {}
        Some(_) => return None,
    }
    Some(CNumber {
        negative,
        magnitude,
    })
}

/// `strtoul`/`strtoull` negate a `-` number modulo 2^64; memcached then rejects results
/// whose top bit is set when the token contains a `-`.
fn unsigned_c(s: &[u8]) -> Option<u64> {
    let n = c_number(s)?;
    let v = if n.negative {
        n.magnitude.wrapping_neg()
    } else {
        n.magnitude
    };
    if (v as i64) < 0 && s.contains(&b'-') {
        return None;
    }
    Some(v)
}

/// memcached's `safe_strtoul`: on a 64-bit build the `unsigned long` result is
/// truncated to 32 bits without complaint (`4294967297` reads as 1).
pub(super) fn safe_strtoul(s: &[u8]) -> Option<u32> {
    unsigned_c(s).map(|v| v as u32)
}

/// memcached's `safe_strtoull`.
pub(super) fn safe_strtoull(s: &[u8]) -> Option<u64> {
    unsigned_c(s)
}

/// memcached's `safe_strtol`: a 64-bit `long` range check, then truncation to 32 bits.
pub(super) fn safe_strtol(s: &[u8]) -> Option<i32> {
    let n = c_number(s)?;
    let v: i64 = if n.negative {
        if n.magnitude > 1 << 63 {
            return None;
        }
        (n.magnitude as i64).wrapping_neg()
    } else {
        i64::try_from(n.magnitude).ok()?
    };
    Some(v as i32)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::protocol) const LIMITS: ParseLimits = ParseLimits {
        item_size_max: 1024 * 1024,
        cas_enabled: true,
    };

    fn p(buf: &[u8]) -> Parsed<'_> {
        parse(buf, &LIMITS)
    }

    /// Parses a buffer that must hold exactly one complete request.
    pub(in crate::protocol) fn one(buf: &[u8]) -> Request<'_> {
        match p(buf) {
            Parsed::Complete { req, consumed } => {
                assert_eq!(consumed, buf.len(), "{:?}", String::from_utf8_lossy(buf));
                req
            }
            Parsed::Incomplete => panic!("incomplete: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn r(msg: &'static str) -> Request<'static> {
        Request::Reply {
            msg,
            noreply: false,
        }
    }

    fn rn(msg: &'static str) -> Request<'static> {
        Request::Reply { msg, noreply: true }
    }

    /// Requests memcached accepts, each complete on its own.
    pub(super) fn valid_requests() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = [
            &b"get k\r\n"[..],
            b"get a b  c\r\n",
            b"gets a\n",
            b"gat 10 a b\r\n",
            b"gats -1 a\r\n",
            b"gat 10\r\n",
            b"bget a\r\n",
            b"set k 0 0 5\r\nhello\r\n",
            b"set k 1 2 0 noreply\r\n\r\n",
            b"add k 0 0 3\r\na\nb\r\n",
            b"replace k 0 0 4\r\n\r\n\r\n\r\n",
            b"append k 0 0 1\nx\r\n",
            b"prepend k 0 0 1\r\nx\r\n",
            b"cas k 0 0 2 99\r\nab\r\n",
            b"cas k 0 0 2 99 noreply\r\nab\r\n",
            b"delete k\r\n",
            b"delete k 0\r\n",
            b"delete k noreply\r\n",
            b"delete k 0 noreply\r\n",
            b"incr k 1\r\n",
            b"decr k 18446744073709551615 noreply\r\n",
            b"touch k 10\r\n",
            b"flush_all\r\n",
            b"flush_all 10 noreply\r\n",
            b"stats\r\n",
            b"stats items\r\n",
            b"version\r\n",
            b"verbosity 1\r\n",
            b"quit\r\n",
            b"shutdown graceful\r\n",
            b"cache_memlimit 100\r\n",
            b"mg k v c f s t k l h O123 q\r\n",
            b"mg Zm9v b N30 R10 T5 E77\r\n",
            b"ms k 5 T0 F3 c MA C12 I q\r\nhello\r\n",
            b"md k I T30 q x\r\n",
            b"ma k MD D7 N0 J5 v t c\r\n",
            b"mn\r\n",
            b"me k b\r\n",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        let mut big = b"set big 0 0 70000\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'v', 70000));
        big.extend_from_slice(b"\r\n");
        v.push(big);
        let mut many = b"get".to_vec();
        for i in 0..600 {
            many.extend_from_slice(format!(" key{i}").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        v.push(many);
        v
    }

    #[test]
    fn every_strict_prefix_of_a_valid_request_is_incomplete() {
        for req in valid_requests() {
            assert!(matches!(p(&req), Parsed::Complete { consumed, .. } if consumed == req.len()));
            for cut in 0..req.len() {
                assert_eq!(
                    p(&req[..cut]),
                    Parsed::Incomplete,
                    "prefix {cut} of {:?}",
                    String::from_utf8_lossy(&req[..req.len().min(60)])
                );
            }
        }
    }

    #[test]
    fn pipelined_requests_parse_one_after_another() {
        let reqs = valid_requests();
        let all: Vec<u8> = reqs.concat();
        let mut off = 0;
        for req in &reqs {
            let Parsed::Complete { req: got, consumed } = p(&all[off..]) else {
                panic!("incomplete at {off}");
            };
            assert_eq!(consumed, req.len());
            assert_eq!(got, one(req));
            off += consumed;
        }
        assert_eq!(off, all.len());
        assert_eq!(p(&all[off..]), Parsed::Incomplete);
    }

    #[test]
    fn retrieval() {
        assert_eq!(
            one(b"get a b  c\r\n"),
            Request::Get {
                keys: b"a b  c",
                cas: false,
                touch: None
            }
        );
        assert_eq!(keys(b"a b  c").collect::<Vec<_>>(), [&b"a"[..], b"b", b"c"]);
        assert_eq!(
            one(b"  gets   x  \r\n"),
            Request::Get {
                keys: b"x",
                cas: true,
                touch: None
            }
        );
        assert_eq!(
            one(b"gats -5 x\r\n"),
            Request::Get {
                keys: b"x",
                cas: true,
                touch: Some(-5)
            }
        );
        // `gat <exptime>` alone is accepted (memcached answers END).
        assert_eq!(
            one(b"gat 10\r\n"),
            Request::Get {
                keys: b"",
                cas: false,
                touch: Some(10)
            }
        );
        assert_eq!(one(b"get\r\n"), r("ERROR"));
        assert_eq!(one(b"get \r\n"), r("ERROR"));
        assert_eq!(one(b"gets\r\n"), r("ERROR"));
        assert_eq!(one(b"gat\r\n"), r("ERROR"));
        assert_eq!(one(b"bget\r\n"), r("ERROR"));
        assert_eq!(one(b"gxx a b\r\n"), r("ERROR"));
        assert_eq!(
            one(b"gat abc k\r\n"),
            r("CLIENT_ERROR invalid exptime argument")
        );
        // strlen(): the line ends at its first NUL.
        assert_eq!(
            one(b"get a\0b c\r\n"),
            Request::Get {
                keys: b"a",
                cas: false,
                touch: None
            }
        );
        assert_eq!(one(b"get \0a\r\n"), r("ERROR"));
        // A `\r` that is not the line end belongs to the key (memcached stores "a\r").
        assert_eq!(
            one(b"get a\r\r\n"),
            Request::Get {
                keys: b"a\r",
                cas: false,
                touch: None
            }
        );
    }

    #[test]
    fn over_long_get_key() {
        let long = vec![b'k'; 251];
        let ok = vec![b'k'; 250];
        let line = [&b"get "[..], &ok, b"\r\n"].concat();
        assert_eq!(
            one(&line),
            Request::Get {
                keys: &ok,
                cas: false,
                touch: None
            }
        );
        let line = [&b"get "[..], &long, b" a\r\n"].concat();
        assert_eq!(
            one(&line),
            Request::GetKeyTooLong {
                keys: b"",
                cas: false,
                touch: None
            }
        );
        let line = [&b"gat 10 a  b "[..], &long, b" c\r\n"].concat();
        assert_eq!(
            one(&line),
            Request::GetKeyTooLong {
                keys: b"a  b",
                cas: false,
                touch: Some(10)
            }
        );
    }

    #[test]
    fn storage_commands() {
        assert_eq!(
            one(b"set k 5 -1 5\r\nhello\r\n"),
            Request::Store {
                cmd: StoreCmd::Set,
                key: b"k",
                flags: 5,
                exptime: -1,
                value: b"hello",
                cas_unique: 0,
                noreply: false
            }
        );
        assert_eq!(
            one(b"cas k 0 0 2 18446744073709551615 noreply\r\nab\r\n"),
            Request::Store {
                cmd: StoreCmd::Cas,
                key: b"k",
                flags: 0,
                exptime: 0,
                value: b"ab",
                cas_unique: u64::MAX,
                noreply: true
            }
        );
        // An extra token that is not `noreply` is ignored.
        assert!(matches!(
            one(b"set k 0 0 1 junk\r\ny\r\n"),
            Request::Store { noreply: false, .. }
        ));
        // glibc number rules: `+`, trailing tab junk, 32-bit truncation, `-0`.
        assert!(matches!(
            one(b"set k +1 0 1\r\nx\r\n"),
            Request::Store { flags: 1, .. }
        ));
        assert!(matches!(
            one(b"set k 7\tjunk 0 1\r\nx\r\n"),
            Request::Store { flags: 7, .. }
        ));
        assert!(matches!(
            one(b"set k 4294967297 0 1\r\nx\r\n"),
            Request::Store { flags: 1, .. }
        ));
        assert!(matches!(
            one(b"set k 1 0 4294967297\r\nx\r\n"),
            Request::Store { value: b"x", .. }
        ));
        assert!(matches!(
            one(b"set k 0 9999999999 -0\r\n\r\n"),
            Request::Store {
                exptime: 1410065407,
                value: b"",
                ..
            }
        ));
        // A bare `\n` ends the command line; the data block needs `\r\n`.
        assert!(matches!(
            one(b"set k 0 0 1\nx\r\n"),
            Request::Store { value: b"x", .. }
        ));
    }

    #[test]
    fn storage_errors() {
        let bad = "CLIENT_ERROR bad command line format";
        // Wrong token counts: ERROR, never suppressed, nothing swallowed.
        for line in [
            &b"set k 0 0\r\n"[..],
            b"set k 0 0 1 noreply x\r\n",
            b"cas k 0 0 6 \r\n",
            b"cas k 0 0 6 1 noreply x\r\n",
            b"add\r\n",
            b"prepend k\r\n",
        ] {
            assert_eq!(one(line), r("ERROR"), "{:?}", String::from_utf8_lossy(line));
        }
        // Parse errors: CLIENT_ERROR; the data that follows is not consumed.
        for line in [
            &b"set k abc 0 1\r\n"[..],
            b"set k \t 0 1\r\n",
            b"set k -1 0 1\r\n",
            b"set k 0 x 1\r\n",
            b"set k 0 99999999999999999999 1\r\n",
            b"set k 0 0 -1\r\n",
            b"set k 0 0 2147483646\r\n",
            b"set k 0 0 4294967295\r\n",
            b"set k 0 0 1x\r\n",
            b"cas k 0 0 1 -1\r\n",
            b"cas k 0 0 1 18446744073709551616\r\n",
        ] {
            let mut buf = line.to_vec();
            buf.extend_from_slice(b"x\r\n");
            assert_eq!(
                p(&buf),
                Parsed::Complete {
                    req: r(bad),
                    consumed: line.len()
                },
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        let key = vec![b'k'; 251];
        let line = [&b"set "[..], &key, b" 0 0 1 noreply\r\n"].concat();
        assert_eq!(one(&line), rn(bad));
        // noreply is decided before anything is validated.
        assert_eq!(one(b"set k 0 0 noreply\r\n"), rn(bad));
        assert_eq!(one(b"set k x 0 1 noreply\r\n"), rn(bad));
    }

    #[test]
    fn bad_data_chunk_consumes_the_declared_block_only() {
        let buf = b"set k 1 0 1\r\nabc\r\nget k\r\n";
        assert_eq!(
            p(buf),
            Parsed::Complete {
                req: Request::BadDataChunk { noreply: false },
                consumed: 16
            }
        );
        // What remains ("\r\nget k\r\n") is parsed as commands, as in memcached.
        assert_eq!(one(&buf[16..18]), r("ERROR"));
        let buf = b"set k 0 0 3 noreply\r\nabcde\r\n";
        assert_eq!(
            p(buf),
            Parsed::Complete {
                req: Request::BadDataChunk { noreply: true },
                consumed: 26
            }
        );
        // A data block ended by a bare `\n` is bad too.
        assert_eq!(
            p(b"set k 0 0 1\r\nx\nget k\r\n"),
            Parsed::Complete {
                req: Request::BadDataChunk { noreply: false },
                consumed: 16
            }
        );
    }

    #[test]
    fn too_large_items_match_item_size_ok() {
        // Key "k", flags 0, CAS on: 48 + 2 + (n + 2) + 8 <= 1 MiB, so n <= 1048516.
        let fits = |line: &[u8], limits: &ParseLimits| -> bool {
            match parse(line, limits) {
                Parsed::Incomplete => true,
                Parsed::Complete {
                    req: Request::StoreTooLarge { .. },
                    ..
                } => false,
                other => panic!("{other:?}"),
            }
        };
        assert!(fits(b"set k 0 0 1048516\r\n", &LIMITS));
        assert!(!fits(b"set k 0 0 1048517\r\n", &LIMITS));
        // Non-zero flags add a 4-byte suffix.
        assert!(fits(b"set k 1 0 1048512\r\n", &LIMITS));
        assert!(!fits(b"set k 1 0 1048513\r\n", &LIMITS));
        // Flags that truncate to 0 add nothing.
        assert!(fits(b"set k 4294967296 0 1048516\r\n", &LIMITS));
        let no_cas = ParseLimits {
            item_size_max: 1024 * 1024,
            cas_enabled: false,
        };
        assert!(fits(b"set k 0 0 1048524\r\n", &no_cas));
        assert!(!fits(b"set k 0 0 1048525\r\n", &no_cas));
        assert_eq!(
            p(b"add kk 0 0 2000000 noreply\r\nxx"),
            Parsed::Complete {
                req: Request::StoreTooLarge {
                    cmd: StoreCmd::Add,
                    key: b"kk",
                    noreply: true,
                    swallow: 2000002
                },
                consumed: 28
            }
        );
        assert!(matches!(
            one(b"set k 0 0 2147483645\r\n"),
            Request::StoreTooLarge {
                swallow: 2147483647,
                ..
            }
        ));
    }

    #[test]
    fn delete_forms() {
        let usage = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";
        let del = |key, noreply| Request::Delete { key, noreply };
        assert_eq!(one(b"delete k\r\n"), del(&b"k"[..], false));
        assert_eq!(one(b"delete k 0\r\n"), del(b"k", false));
        assert_eq!(one(b"delete k noreply\r\n"), del(b"k", true));
        assert_eq!(one(b"delete k 0 noreply\r\n"), del(b"k", true));
        assert_eq!(one(b"delete noreply\r\n"), del(b"noreply", false));
        assert_eq!(one(b"delete k 1\r\n"), r(usage));
        assert_eq!(one(b"delete k 0 0\r\n"), r(usage));
        assert_eq!(one(b"delete k 1 noreply\r\n"), rn(usage));
        assert_eq!(one(b"delete\r\n"), r("ERROR"));
        assert_eq!(one(b"delete k 0 noreply x\r\n"), r("ERROR"));
        let key = vec![b'k'; 251];
        let line = [&b"delete "[..], &key, b" noreply\r\n"].concat();
        assert_eq!(one(&line), rn("CLIENT_ERROR bad command line format"));
    }

    #[test]
    fn arithmetic_and_touch() {
        assert_eq!(
            one(b"incr k 18446744073709551615\r\n"),
            Request::Arith {
                incr: true,
                key: b"k",
                delta: u64::MAX,
                noreply: false
            }
        );
        assert_eq!(
            one(b"decr k -0 noreply\r\n"),
            Request::Arith {
                incr: false,
                key: b"k",
                delta: 0,
                noreply: true
            }
        );
        let bad = "CLIENT_ERROR invalid numeric delta argument";
        assert_eq!(one(b"incr k abc\r\n"), r(bad));
        assert_eq!(one(b"incr k -1\r\n"), r(bad));
        assert_eq!(one(b"incr k 18446744073709551616\r\n"), r(bad));
        assert_eq!(one(b"incr k noreply\r\n"), rn(bad));
        assert_eq!(one(b"incr k\r\n"), r("ERROR"));
        // A fifth token that is not noreply is ignored.
        assert!(matches!(
            one(b"incr k 1 junk\r\n"),
            Request::Arith { noreply: false, .. }
        ));
        assert_eq!(
            one(b"touch k -1 noreply\r\n"),
            Request::Touch {
                key: b"k",
                exptime: -1,
                noreply: true
            }
        );
        assert_eq!(
            one(b"touch k abc\r\n"),
            r("CLIENT_ERROR invalid exptime argument")
        );
        assert_eq!(
            one(b"touch k noreply\r\n"),
            rn("CLIENT_ERROR invalid exptime argument")
        );
        assert_eq!(one(b"touch k\r\n"), r("ERROR"));
    }

    #[test]
    fn flush_verbosity_memlimit_shutdown() {
        let fa = |delay, noreply| Request::FlushAll { delay, noreply };
        assert_eq!(one(b"flush_all\r\n"), fa(0, false));
        assert_eq!(one(b"flush_all noreply\r\n"), fa(0, true));
        assert_eq!(one(b"flush_all -1\r\n"), fa(-1, false));
        assert_eq!(one(b"flush_all 10 20\r\n"), fa(10, false));
        assert_eq!(one(b"flush_all 10 noreply\r\n"), fa(10, true));
        assert_eq!(
            one(b"flush_all noreply 0\r\n"),
            Request::FlushAllInvalid { noreply: false }
        );
        assert_eq!(
            one(b"flush_all abc\r\n"),
            Request::FlushAllInvalid { noreply: false }
        );
        assert_eq!(one(b"flush_all 1 2 3\r\n"), r("ERROR"));

        let vb = |level, noreply| Request::Verbosity { level, noreply };
        assert_eq!(one(b"verbosity 1\r\n"), vb(1, false));
        assert_eq!(one(b"verbosity 1 2\r\n"), vb(1, false));
        assert_eq!(one(b"verbosity  1  noreply\r\n"), vb(1, true));
        assert_eq!(one(b"verbosity 4294967296\r\n"), vb(0, false));
        assert_eq!(
            one(b"verbosity -1\r\n"),
            r("CLIENT_ERROR bad command line format")
        );
        assert_eq!(
            one(b"verbosity \t\r\n"),
            r("CLIENT_ERROR bad command line format")
        );
        assert_eq!(
            one(b"verbosity noreply\r\n"),
            rn("CLIENT_ERROR bad command line format")
        );
        assert_eq!(one(b"verbosity\r\n"), r("ERROR"));

        let ml = |megabytes, noreply| Request::CacheMemlimit { megabytes, noreply };
        assert_eq!(one(b"cache_memlimit 8\r\n"), ml(8, false));
        assert_eq!(
            one(b"cache_memlimit 1000000000 noreply\r\n"),
            ml(1_000_000_000, true)
        );
        assert_eq!(one(b"cache_memlimit abc\r\n"), r("ERROR"));
        assert_eq!(one(b"cache_memlimit noreply\r\n"), rn("ERROR"));
        assert_eq!(
            one(b"cache_memlimit 7\r\n"),
            r("MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m")
        );
        assert_eq!(
            one(b"cache_memlimit 4294967296\r\n"),
            r("MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m")
        );
        assert_eq!(
            one(b"cache_memlimit 1000000001\r\n"),
            r("MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes")
        );
        assert_eq!(one(b"cache_memlimit\r\n"), r("ERROR"));

        assert_eq!(one(b"shutdown\r\n"), Request::Shutdown { graceful: false });
        assert_eq!(
            one(b"shutdown graceful\r\n"),
            Request::Shutdown { graceful: true }
        );
        assert_eq!(one(b"shutdown foo\r\n"), Request::ShutdownInvalid);
        assert_eq!(one(b"shutdown graceful x\r\n"), Request::ShutdownInvalid);
    }

    #[test]
    fn simple_commands_and_stats() {
        assert_eq!(one(b"version\r\n"), Request::Version);
        assert_eq!(one(b"version x\r\n"), Request::Version);
        assert_eq!(one(b"quit\r\n"), Request::Quit);
        assert_eq!(one(b"stats\r\n"), Request::Stats { args: b"" });
        assert_eq!(
            one(b"stats  detail   on \r\n"),
            Request::Stats {
                args: b"detail   on"
            }
        );
        assert_eq!(one(b"stats\tx\r\n"), r("ERROR"));
        assert_eq!(
            one(b"refresh_certs noreply\r\n"),
            r("Error TLS not enabled")
        );
        assert_eq!(one(b"mn\r\n"), r("MN"));
        for line in [
            &b"mx / HTTP/1.1\r\n"[..],
            b"slabs reassign 1 2\r\n",
            b"lru_crawler crawl all\r\n",
            b"lru tune 1 2 3 4\r\n",
            b"extstore item_size 5\r\n",
            b"misbehave\r\n",
        ] {
            assert_eq!(one(line), r("ERROR"), "{:?}", String::from_utf8_lossy(line));
        }
        // watch's reply depends on -W, so the server decides; no HTTP check for it either.
        assert_eq!(one(b"watch / HTTP/1.1\r\n"), Request::Watch);
    }

    #[test]
    fn blank_and_short_lines() {
        assert_eq!(one(b"\r\n"), r("ERROR"));
        assert_eq!(one(b"\n"), r("ERROR"));
        assert_eq!(one(b"\r\r\n"), r("ERROR"));
        assert_eq!(one(b"ab\r\n"), r("ERROR"));
        assert_eq!(one(b"x HTTP/1.1\r\n"), r("ERROR"));
        assert_eq!(one(b"    \r\n"), r("ERROR"));
    }

    #[test]
    fn http_requests_close() {
        assert_eq!(one(b"GET / HTTP/1.1\r\n"), Request::Close);
        assert_eq!(one(b"xx HTTP/1.1\r\n"), Request::Close);
        assert_eq!(one(b"HTTP/\r\n"), Request::Close);
        assert_eq!(one(b"  HTTP/1.1 \r\n"), Request::Close);
        assert_eq!(one(b"HTTP/1.1 x\r\n"), r("ERROR"));
        assert_eq!(one(b"xx HTTP/ a\r\n"), r("ERROR"));
        // Only memcached's first 23 tokens count.
        let line = |n: usize, tail: &str| {
            let mut l = b"xx".to_vec();
            for _ in 0..n {
                l.extend_from_slice(b" a");
            }
            l.extend_from_slice(tail.as_bytes());
            l
        };
        assert_eq!(one(&line(21, " HTTP/1.1\r\n")), Request::Close);
        assert_eq!(one(&line(21, " HTTP/1.1 b\r\n")), Request::Close);
        assert_eq!(one(&line(22, " HTTP/1.1\r\n")), r("ERROR"));
        assert_eq!(one(&line(30, " HTTP/1.1\r\n")), r("ERROR"));
        // Known command families never take the HTTP path.
        assert_eq!(one(b"gopher HTTP/1.1\r\n"), r("ERROR"));
        assert_eq!(one(b"sx / HTTP/1.1\r\n"), r("ERROR"));
        assert_eq!(one(b"set / HTTP/1.1\r\n"), r("ERROR"));
    }

    #[test]
    fn line_without_newline() {
        let close = |buf: &[u8]| {
            p(buf)
                == Parsed::Complete {
                    req: Request::Close,
                    consumed: buf.len(),
                }
        };
        assert_eq!(p(&[b'x'; 2048]), Parsed::Incomplete);
        assert!(close(&[b'x'; 2049]));
        let get = [&b"get "[..], &[b'k'; 3000]].concat();
        assert_eq!(p(&get), Parsed::Incomplete);
        let gets = [&b"gets "[..], &[b'k'; 3000]].concat();
        assert_eq!(p(&gets), Parsed::Incomplete);
        let spaced = [&[b' '; 100][..], b"get ", &[b'k'; 3000]].concat();
        assert_eq!(p(&spaced), Parsed::Incomplete);
        let spaced = [&[b' '; 101][..], b"get ", &[b'k'; 3000]].concat();
        assert!(close(&spaced));
        let gat = [&b"gat 1 "[..], &[b'k'; 3000]].concat();
        assert!(close(&gat));
        assert!(close(&[b' '; 3000]));
        assert_eq!(p(b""), Parsed::Incomplete);
    }

    #[test]
    fn c_number_rules() {
        assert_eq!(safe_strtoul(b"0"), Some(0));
        assert_eq!(safe_strtoul(b"-0"), Some(0));
        assert_eq!(safe_strtoul(b"\t+12\r"), Some(12));
        assert_eq!(safe_strtoul(b"4294967295"), Some(u32::MAX));
        assert_eq!(safe_strtoul(b"4294967296"), Some(0));
        assert_eq!(safe_strtoul(b"-1"), None);
        // glibc negates modulo 2^64; the result's top bit is clear, so it is accepted.
        assert_eq!(safe_strtoul(b"-18446744073709551615"), Some(1));
        assert_eq!(safe_strtoul(b"18446744073709551616"), None);
        assert_eq!(safe_strtoul(b""), None);
        assert_eq!(safe_strtoul(b"+"), None);
        assert_eq!(safe_strtoul(b"1a"), None);
        assert_eq!(safe_strtoul(b"1\x0bjunk"), Some(1));
        assert_eq!(safe_strtol(b"-2147483648"), Some(i32::MIN));
        assert_eq!(safe_strtol(b"2147483648"), Some(i32::MIN));
        assert_eq!(safe_strtol(b"9223372036854775807"), Some(-1));
        assert_eq!(safe_strtol(b"9223372036854775808"), None);
        assert_eq!(safe_strtol(b"-9223372036854775808"), Some(0));
        assert_eq!(safe_strtol(b"-9223372036854775809"), None);
        assert_eq!(safe_strtoull(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(
            safe_strtoull(b"-9223372036854775809"),
            Some(9223372036854775807)
        );
        assert_eq!(safe_strtoull(b"-1"), None);
    }

    /// xorshift64*: a tiny deterministic PRNG, so failures reproduce from the seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn check_key(k: &[u8], buf: &[u8]) {
        assert!(
            (1..=KEY_MAX_LENGTH).contains(&k.len()),
            "key length {} in {:?}",
            k.len(),
            String::from_utf8_lossy(buf)
        );
        // memcached keys may hold any byte but these (a `\r` not ending the line is kept).
        assert!(
            !k.iter().any(|&b| b == b' ' || b == b'\n' || b == 0),
            "{k:?}"
        );
    }

    /// The properties every parse result must have, whatever the input.
    pub(super) fn check_invariants(buf: &[u8]) {
        let Parsed::Complete { req, consumed } = parse(buf, &LIMITS) else {
            return;
        };
        assert!(consumed > 0 && consumed <= buf.len());
        match req {
            Request::Get { keys: list, .. } | Request::GetKeyTooLong { keys: list, .. } => {
                for k in keys(list) {
                    check_key(k, buf);
                }
                assert!(!list.contains(&b'\n') && !list.contains(&0));
            }
            Request::Store { key, value, .. } => {
                check_key(key, buf);
                assert!(consumed >= value.len() + 2);
            }
            Request::StoreTooLarge { key, swallow, .. } => {
                check_key(key, buf);
                assert!(swallow >= 2);
            }
            Request::Delete { key, .. }
            | Request::Arith { key, .. }
            | Request::Touch { key, .. } => check_key(key, buf),
            Request::Meta(m) => {
                check_key(m.key, buf);
                assert!(!m.tokens.contains(&b'\n') && !m.tokens.contains(&0));
                assert!(consumed >= m.value.len());
            }
            Request::ReplySwallow { swallow, .. } | Request::MetaTooLarge { swallow, .. } => {
                assert!(swallow >= 2);
            }
            Request::Stats { args } => {
                assert!(!args.contains(&b'\n') && !args.starts_with(b" ") && !args.ends_with(b" "));
            }
            Request::Close if !buf.contains(&b'\n') => {
                // The over-long-line rule: only past 2048 bytes, and the whole buffer goes.
                assert!(buf.len() > 2048 && consumed == buf.len());
                return;
            }
            _ => {}
        }
        // The request depends only on its own bytes: re-parsing just them gives the same
        // answer, and any strict prefix of them is still incomplete (a line this short
        // never triggers the over-long-line close).
        let again = parse(&buf[..consumed], &LIMITS);
        assert_eq!(
            again,
            parse(buf, &LIMITS),
            "{:?}",
            String::from_utf8_lossy(&buf[..consumed])
        );
        if consumed <= 2048 {
            for cut in 0..consumed {
                assert_eq!(parse(&buf[..cut], &LIMITS), Parsed::Incomplete);
            }
        }
    }

    #[test]
    fn seeded_random_mutations_keep_the_invariants() {
        let base: Vec<Vec<u8>> = valid_requests()
            .into_iter()
            .filter(|r| r.len() < 200)
            .collect();
        const ALPHABET: &[u8] = b" \r\n\0\t\x0b+-0123456789akgnoreplyHTTP/\xff";
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        // How often each kind of outcome came up, so the test proves it reached them.
        let (mut incomplete, mut stores, mut errors, mut closes, mut too_large) = (0, 0, 0, 0, 0);
        for _ in 0..50_000 {
            let mut buf = base[rng.below(base.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(buf.len() + 1);
                match rng.below(8) {
                    0 if at < buf.len() => buf[at] = ALPHABET[rng.below(ALPHABET.len())],
                    1 => buf.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
                    2 if at < buf.len() => {
                        buf.remove(at);
                    }
                    3 => buf.truncate(at),
                    4 => {
                        // Splice: the tail of another request after our head.
                        let other = &base[rng.below(base.len())];
                        let from = rng.below(other.len());
                        buf.truncate(at);
                        buf.extend_from_slice(&other[from..]);
                    }
                    5 => buf
                        .splice(at..at, b" noreply".iter().copied())
                        .for_each(drop),
                    6 => {
                        // Numbers at the edges memcached cares about, as a whole token.
                        const NUMS: [&[u8]; 8] = [
                            b" 2000000",
                            b" 1048517",
                            b" -1",
                            b" 4294967296",
                            b" 2147483645",
                            b" 99999999999999999999",
                            b" 0",
                            b" 3",
                        ];
                        let num = NUMS[rng.below(NUMS.len())];
                        buf.splice(at..at, num.iter().copied()).for_each(drop);
                    }
                    _ => {
                        // Long runs: over-long keys, lines, numbers.
                        let byte = ALPHABET[rng.below(ALPHABET.len())];
                        let n = [250, 251, 2048, 2100][rng.below(4)];
                        buf.splice(at..at, std::iter::repeat_n(byte, n))
                            .for_each(drop);
                    }
                }
            }
            check_invariants(&buf);
            match p(&buf) {
                Parsed::Incomplete => incomplete += 1,
                Parsed::Complete { req, .. } => match req {
                    Request::Store { .. } => stores += 1,
                    Request::Reply { .. } | Request::BadDataChunk { .. } => errors += 1,
                    Request::Close => closes += 1,
                    Request::StoreTooLarge { .. } => too_large += 1,
                    _ => {}
                },
            }
            // Walk the buffer as a connection would: every step makes progress.
            let mut off = 0;
            while let Parsed::Complete { req, consumed } = p(&buf[off..]) {
                off += consumed;
                assert!(off <= buf.len());
                if req == Request::Close {
                    break;
                }
                check_invariants(&buf[off..]);
            }
        }
        for (what, n) in [
            ("incomplete", incomplete),
            ("stores", stores),
            ("errors", errors),
            ("closes", closes),
            ("too large", too_large),
        ] {
            assert!(n >= 10, "only {n} {what} outcomes");
        }
    }
}
