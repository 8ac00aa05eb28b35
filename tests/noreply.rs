//! noreply: every command that takes it answers nothing (not even errors), yet takes effect.
//! Each case is followed by a request that does answer, whose reply must come first.

mod common;

use common::{assert_bytes, value_reply, Conn, Server};

/// Sends `quiet` then `probe`; the first bytes back must be exactly `want` (the probe's reply).
fn silent_then(c: &mut Conn, quiet: &[u8], probe: &[u8], want: &[u8]) {
    let mut req = quiet.to_vec();
    req.extend_from_slice(probe);
    c.send(&req);
    assert_bytes(&c.read_reply(), want);
}

#[test]
fn storage_commands_with_noreply_are_silent() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    silent_then(
        &mut c,
        b"set k 1 0 1 noreply\r\na\r\n",
        b"get k\r\n",
        &value_reply("k", 1, b"a"),
    );
    silent_then(
        &mut c,
        b"add k 0 0 1 noreply\r\nb\r\n",
        b"get k\r\n",
        &value_reply("k", 1, b"a"),
    );
    silent_then(
        &mut c,
        b"add n 2 0 1 noreply\r\nn\r\n",
        b"get n\r\n",
        &value_reply("n", 2, b"n"),
    );
    silent_then(
        &mut c,
        b"replace k 3 0 1 noreply\r\nc\r\n",
        b"get k\r\n",
        &value_reply("k", 3, b"c"),
    );
    silent_then(
        &mut c,
        b"replace zz 0 0 1 noreply\r\nc\r\n",
        b"get zz\r\n",
        b"END\r\n",
    );
    silent_then(
        &mut c,
        b"append k 0 0 1 noreply\r\n>\r\n",
        b"get k\r\n",
        &value_reply("k", 3, b"c>"),
    );
    silent_then(
        &mut c,
        b"prepend k 0 0 1 noreply\r\n<\r\n",
        b"get k\r\n",
        &value_reply("k", 3, b"<c>"),
    );
    silent_then(
        &mut c,
        b"cas k 0 0 1 1 noreply\r\nX\r\n",
        b"get k\r\n",
        &value_reply("k", 3, b"<c>"),
    );
    silent_then(
        &mut c,
        b"cas zz 0 0 1 1 noreply\r\nX\r\n",
        b"get zz\r\n",
        b"END\r\n",
    );
}

#[test]
fn cas_hit_with_noreply_is_silent() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set k 0 0 1\r\na\r\n"), b"STORED\r\n");
    let gets = String::from_utf8_lossy(&c.request(b"gets k\r\n")).into_owned();
    let cas = gets
        .split("\r\n")
        .next()
        .and_then(|l| l.split(' ').nth(4))
        .unwrap_or("?")
        .to_string();
    let req = format!("cas k 0 0 1 {cas} noreply\r\nb\r\n");
    silent_then(
        &mut c,
        req.as_bytes(),
        b"get k\r\n",
        &value_reply("k", 0, b"b"),
    );
}

#[test]
fn other_commands_with_noreply_are_silent() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set n 0 0 1\r\n5\r\n"), b"STORED\r\n");
    silent_then(
        &mut c,
        b"incr n 10 noreply\r\n",
        b"get n\r\n",
        &value_reply("n", 0, b"15"),
    );
    silent_then(
        &mut c,
        b"decr n 3 noreply\r\n",
        b"get n\r\n",
        &value_reply("n", 0, b"12"),
    );
    silent_then(
        &mut c,
        b"incr zz 1 noreply\r\ndecr zz 1 noreply\r\n",
        b"get zz\r\n",
        b"END\r\n",
    );
    silent_then(
        &mut c,
        b"touch n 100 noreply\r\ntouch zz 1 noreply\r\n",
        b"get n\r\n",
        &value_reply("n", 0, b"12"),
    );
    let version = version_of(&mut c);
    silent_then(&mut c, b"verbosity 1 noreply\r\n", b"version\r\n", &version);
    silent_then(
        &mut c,
        b"delete n noreply\r\ndelete n noreply\r\n",
        b"get n\r\n",
        b"END\r\n",
    );
    assert_bytes(&c.request(b"set a 0 0 1\r\na\r\n"), b"STORED\r\n");
    silent_then(&mut c, b"flush_all noreply\r\n", b"get a\r\n", b"END\r\n");
    assert_bytes(&c.request(b"set a 0 0 1\r\na\r\n"), b"STORED\r\n");
    silent_then(&mut c, b"flush_all 0 noreply\r\n", b"get a\r\n", b"END\r\n");
}

fn version_of(c: &mut Conn) -> Vec<u8> {
    let v = c.request(b"version\r\n");
    assert!(v.starts_with(b"VERSION "), "{}", common::escape(&v));
    v
}

#[test]
fn errors_are_silent_too_with_noreply() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set s 0 0 3\r\nabc\r\n"), b"STORED\r\n");
    silent_then(
        &mut c,
        b"incr s 1 noreply\r\n",
        b"get s\r\n",
        &value_reply("s", 0, b"abc"),
    );
    silent_then(
        &mut c,
        b"incr s x noreply\r\n",
        b"get s\r\n",
        &value_reply("s", 0, b"abc"),
    );
    silent_then(
        &mut c,
        b"touch s x noreply\r\n",
        b"get s\r\n",
        &value_reply("s", 0, b"abc"),
    );
    silent_then(
        &mut c,
        b"verbosity x noreply\r\n",
        b"get s\r\n",
        &value_reply("s", 0, b"abc"),
    );
    silent_then(
        &mut c,
        b"flush_all x noreply\r\n",
        b"get s\r\n",
        &value_reply("s", 0, b"abc"),
    );
    silent_then(
        &mut c,
        b"delete s 5 noreply\r\n",
        b"get s\r\n",
        &value_reply("s", 0, b"abc"),
    );
    // A value too large for -I: the error is silent and the data is still swallowed.
    let mut big = b"set s 0 0 2000000 noreply\r\n".to_vec();
    big.extend(vec![b'x'; 2_000_000]);
    big.extend_from_slice(b"\r\n");
    silent_then(&mut c, &big, b"get s\r\n", b"END\r\n");
}
