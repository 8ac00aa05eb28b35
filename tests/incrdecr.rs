//! incr/decr: arithmetic, wrap at 2^64, clamp at 0, non-numeric values, bad deltas, and the
//! in-place length quirk.

mod common;

use common::{assert_bytes, stat_u64, Server};

#[test]
fn incr_and_decr_return_the_new_value() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set n 3 0 1\r\n1\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"incr n 1\r\n"), b"2\r\n");
    assert_bytes(&c.request(b"incr n 8\r\n"), b"10\r\n");
    assert_bytes(&c.request(b"decr n 1\r\n"), b"9\r\n");
    assert_bytes(&c.request(b"decr n 9\r\n"), b"0\r\n");
    // Flags are preserved.
    assert_bytes(&c.request(b"incr n 123\r\n"), b"123\r\n");
    assert_bytes(&c.request(b"get n\r\n"), b"VALUE n 3 3\r\n123\r\nEND\r\n");
}

#[test]
fn shorter_result_is_padded_with_spaces_in_place() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set n 0 0 2\r\n10\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"decr n 1\r\n"), b"9\r\n");
    assert_bytes(&c.request(b"get n\r\n"), b"VALUE n 0 2\r\n9 \r\nEND\r\n");
    // A longer result grows the value.
    assert_bytes(&c.request(b"incr n 991\r\n"), b"1000\r\n");
    assert_bytes(&c.request(b"get n\r\n"), b"VALUE n 0 4\r\n1000\r\nEND\r\n");
}

#[test]
fn incr_wraps_at_2_pow_64_and_decr_clamps_at_zero() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(
        &c.request(b"set n 0 0 20\r\n18446744073709551615\r\n"),
        b"STORED\r\n",
    );
    assert_bytes(&c.request(b"incr n 1\r\n"), b"0\r\n");
    assert_bytes(
        &c.request(b"incr n 18446744073709551615\r\n"),
        b"18446744073709551615\r\n",
    );
    assert_bytes(&c.request(b"incr n 2\r\n"), b"1\r\n");
    assert_bytes(&c.request(b"decr n 5\r\n"), b"0\r\n");
    assert_bytes(&c.request(b"decr n 18446744073709551615\r\n"), b"0\r\n");
}

#[test]
fn bad_values_and_deltas_are_rejected() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    for v in [&b"abc"[..], b"", b"-1", b"18446744073709551616", b"1x"] {
        let mut req = format!("set s 0 0 {}\r\n", v.len()).into_bytes();
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
        assert_bytes(&c.request(&req), b"STORED\r\n");
        assert_bytes(
            &c.request(b"incr s 1\r\n"),
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        );
    }
    assert_bytes(&c.request(b"set n 0 0 1\r\n5\r\n"), b"STORED\r\n");
    for d in ["-1", "abc", "18446744073709551616", "1.0", "0x1"] {
        assert_bytes(
            &c.request(format!("incr n {d}\r\n").as_bytes()),
            b"CLIENT_ERROR invalid numeric delta argument\r\n",
        );
    }
    assert_bytes(&c.request(b"incr n\r\n"), b"ERROR\r\n");
    assert_bytes(&c.request(b"get n\r\n"), b"VALUE n 0 1\r\n5\r\nEND\r\n");
}

#[test]
fn misses_do_not_create_and_are_counted() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"incr nokey 1\r\n"), b"NOT_FOUND\r\n");
    assert_bytes(&c.request(b"decr nokey 1\r\n"), b"NOT_FOUND\r\n");
    assert_bytes(&c.request(b"get nokey\r\n"), b"END\r\n");
    assert_bytes(&c.request(b"set n 0 0 1\r\n1\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"incr n 1\r\n"), b"2\r\n");
    assert_bytes(&c.request(b"decr n 1\r\n"), b"1\r\n");
    assert_bytes(&c.request(b"decr n 1\r\n"), b"0\r\n");
    let st = s.stats("");
    assert_eq!(stat_u64(&st, "incr_misses"), 1);
    assert_eq!(stat_u64(&st, "decr_misses"), 1);
    assert_eq!(stat_u64(&st, "incr_hits"), 1);
    assert_eq!(stat_u64(&st, "decr_hits"), 2);
}
