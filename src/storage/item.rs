//! One item = one heap buffer: a 20-byte header, the key, the value. Also the memory cost
//! model (what the allocator really hands out per item) and memcached's number rules.

/// Header layout (little-endian): version u64 | exptime u32 | flags u32 | last access u32.
/// Key length and the state bits live in the arena slot (see `shard::Slot`) so that a
/// 32-byte key + 100-byte value item is a 152-byte request, which glibc serves from a
/// 160-byte chunk; two more header bytes would push it into the 176-byte chunk.
pub(crate) const HDR: usize = 20;
const OFF_VERSION: usize = 0;
const OFF_EXPTIME: usize = 8;
const OFF_FLAGS: usize = 12;
const OFF_TIME: usize = 16;

/// Largest key the item format can hold (the protocol limits keys to 250 bytes).
pub(crate) const MAX_KEY: usize = 255;

/// Seconds in 30 days: exptimes up to this are relative (memcached's REALTIME_MAXDELTA).
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// Bytes of arena slot per item (fat box pointer + two packed links).
pub(crate) const SLOT_BYTES: usize = 24;
/// Per-item share of the hash index: a 4-byte index plus a control byte per bucket, at a
/// typical hashbrown load of about 5/8.
pub(crate) const TABLE_SHARE: usize = 8;

/// Builds an item buffer. `value_parts` are concatenated (append/prepend build from two).
pub(crate) fn build(
    key: &[u8],
    value_parts: &[&[u8]],
    version: u64,
    exptime: u32,
    flags: u32,
    time: u32,
) -> Box<[u8]> {
    let vlen: usize = value_parts.iter().map(|p| p.len()).sum();
    let mut v = Vec::with_capacity(HDR + key.len() + vlen);
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&exptime.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&time.to_le_bytes());
    v.extend_from_slice(key);
    for p in value_parts {
        v.extend_from_slice(p);
    }
    // Capacity equals length, so this does not reallocate.
    v.into_boxed_slice()
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
    rd32(d, OFF_EXPTIME)
}
pub(crate) fn set_exptime(d: &mut [u8], v: u32) {
    wr32(d, OFF_EXPTIME, v)
}
pub(crate) fn flags(d: &[u8]) -> u32 {
    rd32(d, OFF_FLAGS)
}
pub(crate) fn time(d: &[u8]) -> u32 {
    rd32(d, OFF_TIME)
}
pub(crate) fn set_time(d: &mut [u8], v: u32) {
    wr32(d, OFF_TIME, v)
}
pub(crate) fn key(d: &[u8], klen: usize) -> &[u8] {
    d.get(HDR..HDR + klen).unwrap_or(&[])
}
pub(crate) fn value(d: &[u8], klen: usize) -> &[u8] {
    d.get(HDR + klen..).unwrap_or(&[])
}
pub(crate) fn value_mut(d: &mut [u8], klen: usize) -> &mut [u8] {
    d.get_mut(HDR + klen..).unwrap_or(&mut [])
}

/// What glibc malloc really consumes for a request of `n` bytes: 8 bytes of chunk header,
/// 16-byte granularity, 32-byte minimum; large requests are page-rounded mmaps.
pub(crate) fn malloc_cost(n: usize) -> usize {
    const MMAP_THRESHOLD: usize = 128 * 1024;
    if n >= MMAP_THRESHOLD {
        (n + 16 + 4095) & !4095
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

/// Accounted bytes of an item with an allocation of `alloc_len` bytes.
pub(crate) fn cost(alloc_len: usize) -> usize {
    malloc_cost(alloc_len) + SLOT_BYTES + TABLE_SHARE
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
        assert_eq!(d.len(), HDR + 3 + 5);
        assert_eq!(version(&d), 0x0102_0304_0506_0708);
        assert_eq!(exptime(&d), 77);
        assert_eq!(flags(&d), 0xdead_beef);
        assert_eq!(time(&d), 9);
        assert_eq!(key(&d, 3), b"key");
        assert_eq!(value(&d, 3), b"value");
    }

    #[test]
    fn malloc_model() {
        assert_eq!(malloc_cost(1), 32);
        assert_eq!(malloc_cost(152), 160);
        assert_eq!(malloc_cost(153), 176);
        assert_eq!(cost(152), 160 + SLOT_BYTES + TABLE_SHARE);
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
