//! Client flags: an opaque unsigned 32-bit number stored and returned with the item.

mod common;

use common::{assert_bytes, Server};

#[test]
fn flags_round_trip_across_the_32_bit_range() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    for f in [0u64, 1, 65535, 65536, 2_147_483_648, 4_294_967_295] {
        assert_bytes(
            &c.request(format!("set k {f} 0 1\r\nx\r\n").as_bytes()),
            b"STORED\r\n",
        );
        let want = format!("VALUE k {f} 1\r\nx\r\nEND\r\n");
        assert_bytes(&c.request(b"get k\r\n"), want.as_bytes());
        let gets = c.request(b"gets k\r\n");
        assert!(gets.starts_with(format!("VALUE k {f} 1 ").as_bytes()));
    }
}

#[test]
fn flags_beyond_32_bits_follow_memcached_1_6_18() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    // memcached 1.6.18 parses flags as an unsigned long and keeps the low 32 bits, so 2^32 is
    // stored as 0 and 2^32+1 as 1 (later releases reject them); only values beyond 2^64-1
    // fail to parse.
    assert_bytes(&c.request(b"set k 4294967296 0 1\r\nx\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"get k\r\n"), b"VALUE k 0 1\r\nx\r\nEND\r\n");
    assert_bytes(&c.request(b"set k 4294967297 0 1\r\nx\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"get k\r\n"), b"VALUE k 1 1\r\nx\r\nEND\r\n");
    c.send(b"set k 18446744073709551616 0 1\r\ny\r\n");
    assert_bytes(&c.read_line(), b"CLIENT_ERROR bad command line format\r\n");
    assert_bytes(&c.read_line(), b"ERROR\r\n");
}

#[test]
fn negative_or_non_numeric_flags_are_rejected_without_swallowing() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    for f in ["-1", "abc", "1x", "0x10"] {
        c.send(format!("set k {f} 0 1\r\ny\r\n").as_bytes());
        assert_bytes(&c.read_line(), b"CLIENT_ERROR bad command line format\r\n");
        assert_bytes(&c.read_line(), b"ERROR\r\n");
    }
    assert_bytes(&c.request(b"get k\r\n"), b"END\r\n");
}

#[test]
fn append_keeps_the_original_flags() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set k 4294967295 0 1\r\na\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"append k 1 0 1\r\nb\r\n"), b"STORED\r\n");
    assert_bytes(
        &c.request(b"get k\r\n"),
        b"VALUE k 4294967295 2\r\nab\r\nEND\r\n",
    );
}
