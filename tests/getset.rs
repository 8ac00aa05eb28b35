//! Storage and retrieval: set/get/add/replace/append/prepend, values near the -I limit, binary
//! values, asserted on the exact reply bytes.

mod common;

use common::{assert_bytes, store_req, value_reply, Server};

#[test]
fn set_then_get_returns_value_and_flags() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(
        &c.request(&store_req("set", "foo", 123, 0, b"fooval")),
        b"STORED\r\n",
    );
    assert_bytes(
        &c.request(b"get foo\r\n"),
        &value_reply("foo", 123, b"fooval"),
    );
    assert_bytes(&c.request(b"get nokey\r\n"), b"END\r\n");
    // set overwrites value and flags
    assert_bytes(
        &c.request(&store_req("set", "foo", 7, 0, b"x")),
        b"STORED\r\n",
    );
    assert_bytes(&c.request(b"get foo\r\n"), &value_reply("foo", 7, b"x"));
}

#[test]
fn add_only_stores_missing_keys_and_replace_only_existing() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(
        &c.request(&store_req("add", "k", 1, 0, b"first")),
        b"STORED\r\n",
    );
    assert_bytes(
        &c.request(&store_req("add", "k", 2, 0, b"second")),
        b"NOT_STORED\r\n",
    );
    assert_bytes(&c.request(b"get k\r\n"), &value_reply("k", 1, b"first"));
    assert_bytes(
        &c.request(&store_req("replace", "nokey", 0, 0, b"v")),
        b"NOT_STORED\r\n",
    );
    assert_bytes(&c.request(b"get nokey\r\n"), b"END\r\n");
    assert_bytes(
        &c.request(&store_req("replace", "k", 3, 0, b"third")),
        b"STORED\r\n",
    );
    assert_bytes(&c.request(b"get k\r\n"), &value_reply("k", 3, b"third"));
}

#[test]
fn append_and_prepend_keep_flags_and_need_an_existing_item() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(
        &c.request(&store_req("append", "k", 0, 0, b"x")),
        b"NOT_STORED\r\n",
    );
    assert_bytes(
        &c.request(&store_req("prepend", "k", 0, 0, b"x")),
        b"NOT_STORED\r\n",
    );
    assert_bytes(
        &c.request(&store_req("set", "k", 5, 0, b"mid")),
        b"STORED\r\n",
    );
    assert_bytes(
        &c.request(&store_req("append", "k", 9, 0, b">>")),
        b"STORED\r\n",
    );
    assert_bytes(
        &c.request(&store_req("prepend", "k", 9, 0, b"<<")),
        b"STORED\r\n",
    );
    assert_bytes(&c.request(b"get k\r\n"), &value_reply("k", 5, b"<<mid>>"));
}

#[test]
fn zero_length_and_binary_values_round_trip() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(
        &c.request(&store_req("set", "empty", 0, 0, b"")),
        b"STORED\r\n",
    );
    assert_bytes(
        &c.request(b"get empty\r\n"),
        b"VALUE empty 0 0\r\n\r\nEND\r\n",
    );
    let all: Vec<u8> = (0u8..=255)
        .chain(b"\r\nEND\r\n\0".iter().copied())
        .collect();
    assert_bytes(
        &c.request(&store_req("set", "bin", 0, 0, &all)),
        b"STORED\r\n",
    );
    assert_bytes(&c.request(b"get bin\r\n"), &value_reply("bin", 0, &all));
}

#[test]
fn large_values_under_the_limit_round_trip_and_over_it_are_swallowed() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    // Default -I is 1 MiB for the whole item; a 1,000,000-byte value fits, 1 MiB of value does not.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_bytes(
        &c.request(&store_req("set", "big", 1, 0, &big)),
        b"STORED\r\n",
    );
    assert_bytes(&c.request(b"get big\r\n"), &value_reply("big", 1, &big));
    let too_big = vec![b'z'; 1024 * 1024];
    assert_bytes(
        &c.request(&store_req("set", "big", 0, 0, &too_big)),
        b"SERVER_ERROR object too large for cache\r\n",
    );
    // The data block was swallowed (the next reply is for the next request), and the failed set
    // removed the old value rather than leaving it stale.
    assert_bytes(&c.request(b"get big\r\n"), b"END\r\n");
    let stats = s.stats("");
    assert_eq!(common::stat_u64(&stats, "store_too_large"), 1);
}

#[test]
fn data_block_must_end_with_crlf() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.send(b"set k 0 0 3\r\nabcde\r\n");
    assert_bytes(&c.read_line(), b"CLIENT_ERROR bad data chunk\r\n");
    // What followed the declared length is parsed as a command line.
    assert_bytes(&c.read_line(), b"ERROR\r\n");
    assert_bytes(&c.request(b"get k\r\n"), b"END\r\n");
}
