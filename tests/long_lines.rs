//! Line-length rules: a non-get line without a newline in its first 2048 bytes closes the
//! connection; get/gets lines may be any length; keys are at most 250 bytes.

mod common;

use common::{assert_bytes, value_reply, Server};
use std::time::Duration;

#[test]
fn a_long_line_without_newline_closes_the_connection() {
    let s = Server::start(&[]);
    for verb in ["set", "gat 0", "foo", "incr"] {
        let mut c = s.connect();
        let mut req = format!("{verb} ").into_bytes();
        req.extend(vec![b'x'; 3000]);
        c.send(&req);
        assert!(
            c.closed_within(Duration::from_secs(5)),
            "{verb}: connection not closed"
        );
        assert_bytes(c.pending(), b"");
    }
    // The server itself is fine.
    let mut c = s.connect();
    assert!(c.request(b"version\r\n").starts_with(b"VERSION "));
}

#[test]
fn a_long_get_line_is_served() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set k1 0 0 2\r\nv1\r\n"), b"STORED\r\n");
    // Sent in two parts so the server sees >2048 bytes before any newline.
    let mut head = b"get".to_vec();
    for i in 0..400 {
        head.extend_from_slice(format!(" miss{i}").as_bytes());
    }
    assert!(head.len() > 2048);
    c.send(&head);
    c.send(b" k1\r\n");
    assert_bytes(&c.read_reply(), &value_reply("k1", 0, b"v1"));
    let mut gets = b"gets ".to_vec();
    gets.extend(vec![b' '; 3000]);
    c.send(&gets);
    c.send(b"k1\r\n");
    let r = c.read_reply();
    assert!(r.starts_with(b"VALUE k1 0 2 "), "{}", common::escape(&r));
}

#[test]
fn keys_of_250_bytes_work_and_251_are_rejected() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    let k250 = "k".repeat(250);
    let k251 = "k".repeat(251);
    assert_bytes(
        &c.request(format!("set {k250} 0 0 1\r\nx\r\n").as_bytes()),
        b"STORED\r\n",
    );
    assert_bytes(
        &c.request(format!("get {k250}\r\n").as_bytes()),
        &value_reply(&k250, 0, b"x"),
    );
    let bad = b"CLIENT_ERROR bad command line format\r\n";
    // Storage: the error comes before the data, which is then read as a command.
    c.send(format!("set {k251} 0 0 1\r\nx\r\n").as_bytes());
    assert_bytes(&c.read_line(), bad);
    assert_bytes(&c.read_line(), b"ERROR\r\n");
    for req in [
        format!("get {k251}\r\n"),
        format!("get {k250} {k251}\r\n"),
        format!("gets a {k251} b\r\n"),
        format!("delete {k251}\r\n"),
        format!("incr {k251} 1\r\n"),
        format!("touch {k251} 1\r\n"),
        format!("gat 1 {k251}\r\n"),
    ] {
        assert_bytes(&c.request(req.as_bytes()), bad);
    }
}
