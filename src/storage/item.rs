//! One item = one buffer: a header, the key, the value. Also the memory cost model (what
//! an item really takes) and memcached's number rules.

use super::arena;
use super::heap::Buf;

/// Header layout (little-endian): length u32 | last access u32 | version u64, then, only
/// when either is nonzero, exptime u32 | flags u32. The length is the whole buffer's; its
/// top bit says whether exptime and flags are present. Most caches store most items with
/// neither, and the 8 bytes saved are what lets a 32-byte key + 100-byte value item fit
/// a 148-byte chunk. Key length and state bits live in the shard's slot (see `shard`).
pub(crate) const HDR_SHORT: usize = 16;
const HDR_LONG: usize = 24;
const OFF_LEN: usize = 0;
const OFF_TIME: usize = 4;
const OFF_VERSION: usize = 8;
const OFF_EXPTIME: usize = 16;
const OFF_FLAGS: usize = 20;
const LONG: u32 = 1 << 31;

/// Largest key the item format can hold (the protocol limits keys to 250 bytes).
pub(crate) const MAX_KEY: usize = 255;

/// Seconds in 30 days: exptimes up to this are relative (memcached's REALTIME_MAXDELTA).
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// Bytes of slot per item (arena handle + two packed links).
pub(crate) const SLOT_BYTES: usize = 12;
/// Per-item share of the hash index: a 4-byte bucket at its lowest load, 64% (see
/// `index`), rounded up.
pub(crate) const TABLE_SHARE: usize = 7;

/// Builds an item buffer. `value_parts` are concatenated (append/prepend build from two).
pub(crate) fn build(
    key: &[u8],
    value_parts: &[&[u8]],
    version: u64,
    exptime: u32,
    flags: u32,
    time: u32,
) -> Box<[u8]> {
    Draft {
        key,
        parts: value_parts,
        version,
        exptime,
        flags,
        time,
    }
    .build()
}

/// An item's fields before it has a buffer: written straight into the chunk it will live
/// in, which saves building it in a heap buffer first (an allocation, a copy and a free
/// per write). Its parts must not lie in the buffer it is written to.
#[derive(Clone, Copy)]
pub(crate) struct Draft<'a> {
    pub key: &'a [u8],
    pub parts: &'a [&'a [u8]],
    pub version: u64,
    pub exptime: u32,
    pub flags: u32,
    pub time: u32,
}

impl Draft<'_> {
    fn long(&self) -> bool {
        self.exptime != 0 || self.flags != 0
    }

    fn hdr(&self) -> usize {
        if self.long() {
            HDR_LONG
        } else {
            HDR_SHORT
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.hdr() + self.key.len() + self.parts.iter().map(|p| p.len()).sum::<usize>()
    }

    /// Key and value bytes.
    pub(crate) fn payload_len(&self) -> usize {
        self.len() - self.hdr()
    }

    /// What [`cost`] says of the built item.
    pub(crate) fn cost(&self) -> usize {
        cost_of_len(self.len() + HDR_SHORT - self.hdr())
    }

    fn header(&self) -> ([u8; HDR_LONG], usize) {
        let mut h = [0u8; HDR_LONG];
        let long = self.long();
        let word = (self.len() as u32 & !LONG) | if long { LONG } else { 0 };
        h[OFF_LEN..OFF_LEN + 4].copy_from_slice(&word.to_le_bytes());
        h[OFF_TIME..OFF_TIME + 4].copy_from_slice(&self.time.to_le_bytes());
        h[OFF_VERSION..OFF_VERSION + 8].copy_from_slice(&self.version.to_le_bytes());
        if long {
            h[OFF_EXPTIME..OFF_EXPTIME + 4].copy_from_slice(&self.exptime.to_le_bytes());
            h[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&self.flags.to_le_bytes());
        }
        (h, self.hdr())
    }

    /// Writes the item into `dst`, which must be exactly [`Draft::len`] bytes long
    /// (anything else is left untouched).
    pub(crate) fn write(&self, dst: &mut [u8]) {
        if dst.len() != self.len() {
            return;
        }
        let (h, n) = self.header();
        let (head, mut rest) = dst.split_at_mut(n);
        head.copy_from_slice(&h[..n]);
        // Nothing reads an item soon after it is written: not a peer's state, and not a set,
        // whose change is encoded from the request's buffer (`Store::report_sourced`). So a
        // long part goes to memory with streaming stores.
        for part in std::iter::once(&self.key).chain(self.parts) {
            let (d, r) = rest.split_at_mut(part.len());
            copy_value(d, part);
            rest = r;
        }
    }

    pub(crate) fn build(&self) -> Box<[u8]> {
        let (h, n) = self.header();
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(&h[..n]);
        v.extend_from_slice(self.key);
        for p in self.parts {
            v.extend_from_slice(p);
        }
        // Capacity equals length, so this does not reallocate.
        v.into_boxed_slice()
    }
}

/// A new item for a slot: already built, or a draft written in place.
pub(crate) enum NewItem<'a> {
    Built(Box<[u8]>),
    Draft(Draft<'a>),
}

impl From<Box<[u8]>> for NewItem<'_> {
    fn from(b: Box<[u8]>) -> Self {
        NewItem::Built(b)
    }
}

impl<'a> From<Draft<'a>> for NewItem<'a> {
    fn from(d: Draft<'a>) -> Self {
        NewItem::Draft(d)
    }
}

impl NewItem<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            NewItem::Built(b) => b.len(),
            NewItem::Draft(d) => d.len(),
        }
    }

    pub(crate) fn cost(&self) -> usize {
        match self {
            NewItem::Built(b) => cost(b),
            NewItem::Draft(d) => d.cost(),
        }
    }

    pub(crate) fn payload_len(&self) -> usize {
        match self {
            NewItem::Built(b) => payload_len(b),
            NewItem::Draft(d) => d.payload_len(),
        }
    }

    pub(crate) fn set_version(&mut self, v: u64) {
        match self {
            NewItem::Built(b) => set_version(b, v),
            NewItem::Draft(d) => d.version = v,
        }
    }

    /// Writes the item into `dst`, exactly [`NewItem::len`] bytes.
    pub(crate) fn write(&self, dst: &mut [u8]) {
        match self {
            NewItem::Built(b) => {
                if dst.len() == b.len() {
                    dst.copy_from_slice(b);
                }
            }
            NewItem::Draft(d) => d.write(dst),
        }
    }

    /// The item in a buffer of its own.
    pub(crate) fn into_buf(self) -> Buf {
        match self {
            NewItem::Built(b) => Buf::copy_of(&b),
            NewItem::Draft(d) => {
                // Zeroed first, so no byte of it is ever read uninitialised; only a new key
                // or a new length comes here (an overwrite of the same length reuses the
                // old buffer in place).
                let mut buf = Buf::zeroed(d.len());
                d.write(&mut buf);
                buf
            }
        }
    }
}

/// The same item with a new exptime, in the long form (for an item stored without one).
pub(crate) fn with_exptime(d: &[u8], klen: usize, exptime: u32) -> Box<[u8]> {
    build(
        key(d, klen),
        &[value(d, klen)],
        version(d),
        exptime,
        flags(d),
        time(d),
    )
}

fn rd32(d: &[u8], off: usize) -> u32 {
    d.get(off..off + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn wr32(d: &mut [u8], off: usize, v: u32) {
    if let Some(s) = d.get_mut(off..off + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn is_long(d: &[u8]) -> bool {
    rd32(d, OFF_LEN) & LONG != 0
}

/// Header bytes of this item.
pub(crate) fn hdr(d: &[u8]) -> usize {
    if is_long(d) {
        HDR_LONG
    } else {
        HDR_SHORT
    }
}

/// The buffer length the header records (a chunk may be longer than its item).
pub(crate) fn stored_len(d: &[u8]) -> usize {
    (rd32(d, OFF_LEN) & !LONG) as usize
}

/// Key and value bytes (memcached's mem_requested counts these).
pub(crate) fn payload_len(d: &[u8]) -> usize {
    d.len().saturating_sub(hdr(d))
}

pub(crate) fn version(d: &[u8]) -> u64 {
    d.get(OFF_VERSION..OFF_VERSION + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}
pub(crate) fn set_version(d: &mut [u8], v: u64) {
    if let Some(s) = d.get_mut(OFF_VERSION..OFF_VERSION + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}
pub(crate) fn exptime(d: &[u8]) -> u32 {
    if is_long(d) {
        rd32(d, OFF_EXPTIME)
    } else {
        0
    }
}
/// Sets the exptime in place. False when the item has no room for one (stored in the
/// short form) and `v` is not 0: the caller rebuilds it with [`with_exptime`].
#[must_use]
pub(crate) fn set_exptime(d: &mut [u8], v: u32) -> bool {
    if is_long(d) {
        wr32(d, OFF_EXPTIME, v);
        true
    } else {
        v == 0
    }
}
pub(crate) fn flags(d: &[u8]) -> u32 {
    if is_long(d) {
        rd32(d, OFF_FLAGS)
    } else {
        0
    }
}
pub(crate) fn time(d: &[u8]) -> u32 {
    rd32(d, OFF_TIME)
}
pub(crate) fn set_time(d: &mut [u8], v: u32) {
    wr32(d, OFF_TIME, v)
}
pub(crate) fn key(d: &[u8], klen: usize) -> &[u8] {
    let h = hdr(d);
    d.get(h..h + klen).unwrap_or(&[])
}
pub(crate) fn value(d: &[u8], klen: usize) -> &[u8] {
    d.get(hdr(d) + klen..).unwrap_or(&[])
}
pub(crate) fn value_mut(d: &mut [u8], klen: usize) -> &mut [u8] {
    let h = hdr(d);
    d.get_mut(h + klen..).unwrap_or(&mut [])
}

/// Accounted bytes of an item: its buffer, its slot and its share of the hash index. The
/// buffer is counted as if it held an exptime, so that giving it one (a touch) needs no
/// memory: memcached's touch cannot fail for lack of it, and neither can ours.
pub(crate) fn cost(d: &[u8]) -> usize {
    cost_of_len(d.len() + HDR_SHORT - hdr(d))
}

/// Accounted bytes of a short-form item of `len` bytes (see [`cost`]).
pub(crate) fn cost_of_len(len: usize) -> usize {
    arena::buffer_cost(len + HDR_LONG - HDR_SHORT) + SLOT_BYTES + TABLE_SHARE
}

/// memcached 1.6's idea of an item's size, which `-I` limits: a 48-byte header, the key and
/// its NUL, 4 bytes of client flags when nonzero, the value and its CRLF, 8 bytes of CAS
/// unless `-C`.
pub fn memcached_item_size(key_len: usize, value_len: usize, flags: u32, cas: bool) -> usize {
    48 + key_len + 1 + if flags != 0 { 4 } else { 0 } + value_len + 2 + if cas { 8 } else { 0 }
}

/// memcached's `realtime()`, in absolute unix seconds: 0 = never; negative = already
/// expired; up to 30 days = relative to `now`; larger = absolute.
pub fn realtime(exptime: i64, now: u32) -> u32 {
    if exptime == 0 {
        0
    } else if exptime < 0 {
        // memcached maps it to an absolute time before process start: expired at once.
        1
    } else if exptime > REALTIME_MAXDELTA {
        u32::try_from(exptime).unwrap_or(u32::MAX).max(1)
    } else {
        now.saturating_add(exptime as u32)
    }
}

/// memcached's `safe_strtoull` applied to a stored value: C `strtoull` base 10 (leading
/// white space, optional sign, digits; a leading `-` negates modulo 2^64), accepted when
/// digits were read, the value did not overflow, the next byte is white space, NUL or the
/// end of the value (where memcached's item has its CRLF), and a result that is negative as
/// a signed number did not come with a `-`.
pub(crate) fn parse_number(v: &[u8]) -> Option<u64> {
    fn is_space(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
    }
    let mut i = 0;
    while i < v.len() && is_space(v[i]) {
        i += 1;
    }
    // Past the end memcached's strtoull would run through the CRLF into unrelated memory;
    // no digits are there to be found, so this is non-numeric.
    let mut neg = false;
    if i < v.len() && (v[i] == b'+' || v[i] == b'-') {
        neg = v[i] == b'-';
        i += 1;
    }
    let start = i;
    let mut acc: u64 = 0;
    while i < v.len() && v[i].is_ascii_digit() {
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_add(u64::from(v[i] - b'0')))?;
        i += 1;
    }
    if i == start {
        return None;
    }
    match v.get(i) {
        None => {}
        Some(&b) if is_space(b) || b == 0 => {}
        Some(_) => return None,
    }
    let out = if neg { acc.wrapping_neg() } else { acc };
    if (out as i64) < 0 && neg {
        return None;
    }
    Some(out)
}

/// Parts at least this long are written with streaming stores.
const STREAM_MIN: usize = 1024;

thread_local! {
    /// Set when this thread issued streaming stores that no fence has ordered yet.
    static UNFENCED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Orders the streaming stores this thread issued before whatever it stores next. The
/// shard guard calls this before it releases the lock, after which another thread may
/// read the item: fencing there rather than after each copy lets the stores drain while
/// the change is reported (encoding a 4 KiB value into the replication log, say).
pub(crate) fn fence_streams() {
    if UNFENCED.with(|u| u.replace(false)) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a fence has no preconditions.
        unsafe {
            std::arch::x86_64::_mm_sfence()
        };
    }
}

/// Copies `src` into `dst` (same length). A long value goes to memory with non-temporal
/// stores: the item it lands in is almost never in the cache (a set overwrites a key
/// last written long ago), and ordinary stores would first read every line of it.
fn copy_value(dst: &mut [u8], src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if dst.len() >= STREAM_MIN && dst.len() == src.len() {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let head = dst.as_ptr().align_offset(64).min(dst.len());
        let body = (dst.len() - head) & !63;
        let (d_head, d_rest) = dst.split_at_mut(head);
        let (d_body, d_tail) = d_rest.split_at_mut(body);
        let (s_head, s_rest) = src.split_at(head);
        let (s_body, s_tail) = s_rest.split_at(body);
        d_head.copy_from_slice(s_head);
        for (d, s) in d_body.chunks_exact_mut(16).zip(s_body.chunks_exact(16)) {
            // SAFETY: SSE2 is part of x86_64; `d` is 16 bytes at a 16-aligned address (the
            // body starts 64-aligned and goes in steps of 16), `s` is 16 readable bytes.
            unsafe {
                let v = _mm_loadu_si128(s.as_ptr().cast::<__m128i>());
                _mm_stream_si128(d.as_mut_ptr().cast::<__m128i>(), v);
            }
        }
        // Fenced by `fence_streams` before the shard lock is released.
        UNFENCED.with(|u| u.set(true));
        d_tail.copy_from_slice(s_tail);
        return;
    }
    dst.copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let d = build(
            b"key",
            &[b"va", b"lue"],
            0x0102_0304_0506_0708,
            77,
            0xdead_beef,
            9,
        );
        assert_eq!(d.len(), HDR_LONG + 3 + 5);
        assert_eq!(stored_len(&d), d.len());
        assert_eq!(version(&d), 0x0102_0304_0506_0708);
        assert_eq!(exptime(&d), 77);
        assert_eq!(flags(&d), 0xdead_beef);
        assert_eq!(time(&d), 9);
        assert_eq!(key(&d, 3), b"key");
        assert_eq!(value(&d, 3), b"value");
    }

    #[test]
    fn a_draft_writes_what_build_builds() {
        for (exptime, flags) in [(0, 0), (77, 0), (0, 5), (1, 2)] {
            let d = Draft {
                key: b"key",
                parts: &[b"va", b"", b"lue"],
                version: 42,
                exptime,
                flags,
                time: 9,
            };
            let built = d.build();
            assert_eq!(built.len(), d.len());
            assert_eq!(d.cost(), cost(&built));
            assert_eq!(d.payload_len(), payload_len(&built));
            let mut dst = vec![0xAAu8; d.len()];
            NewItem::from(d).write(&mut dst);
            assert_eq!(&dst[..], &built[..]);
            // A destination of the wrong length is left alone.
            let mut short = vec![0xAAu8; d.len() - 1];
            d.write(&mut short);
            assert!(short.iter().all(|&b| b == 0xAA));
        }
    }

    #[test]
    fn a_streamed_draft_writes_what_build_builds() {
        let value: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        // Lengths around the streaming threshold and the 64-byte body, and destinations
        // at every offset from a cache line, so the head, body and tail all vary.
        for len in [STREAM_MIN - 1, STREAM_MIN, STREAM_MIN + 1, 1087, 4096, 4999] {
            for at in 0..64 {
                let d = Draft {
                    key: b"k",
                    parts: &[&value[..len]],
                    version: 1,
                    exptime: 0,
                    flags: 3,
                    time: 0,
                };
                let built = d.build();
                let mut buf = vec![0x55u8; d.len() + 128];
                let dst = &mut buf[at..at + d.len()];
                d.write(dst);
                assert_eq!(&dst[..], &built[..], "len {len} at {at}");
                assert!(buf[..at].iter().all(|&b| b == 0x55));
                assert!(buf[at + d.len()..].iter().all(|&b| b == 0x55));
            }
        }
    }

    #[test]
    fn zero_exptime_and_flags_take_no_room() {
        let mut d = build(b"key", &[b"value"], 5, 0, 0, 9);
        assert_eq!(d.len(), HDR_SHORT + 8);
        assert_eq!(
            (exptime(&d), flags(&d), time(&d), version(&d)),
            (0, 0, 9, 5)
        );
        assert_eq!(value(&d, 3), b"value");
        assert!(set_exptime(&mut d, 0));
        assert!(!set_exptime(&mut d, 100), "no room in the short form");
        let mut l = with_exptime(&d, 3, 100);
        assert_eq!(
            (exptime(&l), flags(&l), time(&l), version(&l)),
            (100, 0, 9, 5)
        );
        assert_eq!((key(&l, 3), value(&l, 3)), (&b"key"[..], &b"value"[..]));
        assert!(set_exptime(&mut l, 0), "the long form keeps its room");
        assert_eq!(payload_len(&l), 8);
        // The benchmark's item: 32-byte key, 100-byte value.
        assert_eq!(cost(&l), cost(&d), "an exptime is paid for in advance");
    }

    #[test]
    fn realtime_rules() {
        let now = 1_700_000_000;
        assert_eq!(realtime(0, now), 0);
        assert_eq!(realtime(-1, now), 1);
        assert_eq!(realtime(1, now), now + 1);
        assert_eq!(realtime(REALTIME_MAXDELTA, now), now + 2_592_000);
        assert_eq!(realtime(REALTIME_MAXDELTA + 1, now), 2_592_001);
        assert_eq!(realtime(1_800_000_000, now), 1_800_000_000);
    }

    #[test]
    fn numbers_like_safe_strtoull() {
        // Each case was checked against memcached 1.6.18's incr.
        assert_eq!(parse_number(b"10"), Some(10));
        assert_eq!(parse_number(b" 5"), Some(5));
        assert_eq!(parse_number(b"+5"), Some(5));
        assert_eq!(parse_number(b"-0"), Some(0));
        assert_eq!(parse_number(b"-1"), None);
        assert_eq!(parse_number(b"5\0ab"), Some(5));
        assert_eq!(parse_number(b"5\tb"), Some(5));
        assert_eq!(parse_number(b"5ab"), None);
        assert_eq!(parse_number(b"9 "), Some(9));
        assert_eq!(parse_number(b""), None);
        assert_eq!(parse_number(b"  "), None);
        assert_eq!(parse_number(b"007"), Some(7));
        assert_eq!(parse_number(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_number(b"18446744073709551616"), None);
        assert_eq!(
            parse_number(b"-9223372036854775809"),
            Some(9_223_372_036_854_775_807)
        );
    }

    #[test]
    fn memcached_sizes() {
        // -I 1k: 964-byte value with a 1-byte key and flags 0 is the largest that fits.
        assert_eq!(memcached_item_size(1, 964, 0, true), 1024);
        assert_eq!(memcached_item_size(1, 960, 1, true), 1024);
        assert_eq!(memcached_item_size(1, 972, 0, false), 1024);
    }
}
