//! Response writers: append memcached's reply formats to an output buffer. They only
//! ever grow the given `Vec`; nothing else allocates.

/// Appends `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n`.
pub fn write_value(out: &mut Vec<u8>, key: &[u8], flags: u32, value: &[u8], cas: Option<u64>) {
    // One reservation for the whole hit: the header is at most 6 + key + 3 * 21 bytes.
    out.reserve(key.len() + value.len() + 6 + 3 * 21 + 4);
    write_value_header(out, key, flags, value.len(), cas);
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends only `VALUE <key> <flags> <bytes>[ <cas>]\r\n`, for callers that send the data
/// and its `\r\n` separately (vectored writes, values stored in pieces).
pub fn write_value_header(
    out: &mut Vec<u8>,
    key: &[u8],
    flags: u32,
    nbytes: usize,
    cas: Option<u64>,
) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    write_u64(out, u64::from(flags));
    out.push(b' ');
    write_u64(out, nbytes as u64);
    if let Some(cas) = cas {
        out.push(b' ');
        write_u64(out, cas);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `n`.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let start = format_u64(n, &mut digits);
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// Appends the decimal digits of `n`, with a leading `-` when negative.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Appends `n` followed by `\r\n`: the reply to a successful incr/decr.
pub fn write_u64_line(out: &mut Vec<u8>, n: u64) {
    write_u64(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends `msg\r\n`.
pub fn write_line(out: &mut Vec<u8>, msg: &[u8]) {
    out.extend_from_slice(msg);
    out.extend_from_slice(b"\r\n");
}

/// Appends `END\r\n`, the terminator of get and stats replies.
pub fn write_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"END\r\n");
}

/// Appends `STAT <name> <value>\r\n`.
pub fn write_stat(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name);
    out.push(b' ');
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `STAT <name> <n>\r\n`.
pub fn write_stat_u64(out: &mut Vec<u8>, name: &[u8], n: u64) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name);
    out.push(b' ');
    write_u64(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends `STAT <name> <n>\r\n` for a signed value.
pub fn write_stat_i64(out: &mut Vec<u8>, name: &[u8], n: i64) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name);
    out.push(b' ');
    write_i64(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Two decimal digits per table entry halve the divisions for large numbers (CAS
/// values and byte counters are usually 5+ digits).
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `n` right-aligned into `buf`; returns the index of its first digit.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> usize {
    let mut i = buf.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_numbers_match_std_formatting() {
        let samples = [
            0,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            65_535,
            1 << 32,
            u64::MAX / 3,
            u64::MAX - 1,
            u64::MAX,
        ];
        for &n in &samples {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes(), "{n}");
        }
        // Every power of ten and its neighbours: the digit-pair boundaries.
        let mut p: u64 = 1;
        while let Some(next) = p.checked_mul(10) {
            for n in [p - 1, p, p + 1] {
                let mut out = Vec::new();
                write_u64(&mut out, n);
                assert_eq!(out, n.to_string().into_bytes());
            }
            p = next;
        }
    }

    #[test]
    fn signed_numbers() {
        for n in [0i64, -1, 1, i64::MIN, i64::MAX, -1234567] {
            let mut out = Vec::new();
            write_i64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn value_lines() {
        let mut out = Vec::new();
        write_value(&mut out, b"k", 5, b"hello", None);
        write_value(&mut out, b"kk", 0, b"", Some(42));
        assert_eq!(out, b"VALUE k 5 5\r\nhello\r\nVALUE kk 0 0 42\r\n\r\n");
        let mut hdr = Vec::new();
        write_value_header(&mut hdr, b"a", u32::MAX, 1_048_576, Some(u64::MAX));
        assert_eq!(
            hdr,
            b"VALUE a 4294967295 1048576 18446744073709551615\r\n".to_vec()
        );
    }

    #[test]
    fn simple_lines_and_stats() {
        let mut out = Vec::new();
        write_line(&mut out, b"STORED");
        write_u64_line(&mut out, 7);
        write_stat(&mut out, b"version", b"1.6.18");
        write_stat_u64(&mut out, b"curr_items", 12);
        write_stat_i64(&mut out, b"delta", -3);
        write_end(&mut out);
        assert_eq!(
            out,
            b"STORED\r\n7\r\nSTAT version 1.6.18\r\nSTAT curr_items 12\r\nSTAT delta -3\r\nEND\r\n"
                .to_vec()
        );
    }
}
