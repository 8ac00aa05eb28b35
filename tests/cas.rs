//! gets/cas: CAS values, EXISTS/NOT_FOUND, stats counters, and -C (CAS disabled).

mod common;

use common::{assert_bytes, stat_u64, Conn, Server};

fn gets_cas(c: &mut Conn, key: &str) -> u64 {
    let reply = c.request(format!("gets {key}\r\n").as_bytes());
    let text = String::from_utf8_lossy(&reply);
    let line = text.split("\r\n").next().unwrap_or("");
    let toks: Vec<&str> = line.split(' ').collect();
    assert_eq!(toks.len(), 5, "gets reply {text:?}");
    toks[4]
        .parse()
        .unwrap_or_else(|_| panic!("cas in {text:?}"))
}

#[test]
fn cas_succeeds_once_with_the_current_value_and_then_exists() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set k 0 0 1\r\na\r\n"), b"STORED\r\n");
    let c1 = gets_cas(&mut c, "k");
    assert_ne!(c1, 0);
    assert_bytes(
        &c.request(format!("cas k 9 0 1 {c1}\r\nb\r\n").as_bytes()),
        b"STORED\r\n",
    );
    assert_bytes(&c.request(b"get k\r\n"), b"VALUE k 9 1\r\nb\r\nEND\r\n");
    let c2 = gets_cas(&mut c, "k");
    assert_ne!(c1, c2, "a successful cas assigns a new CAS");
    assert_bytes(
        &c.request(format!("cas k 0 0 1 {c1}\r\nc\r\n").as_bytes()),
        b"EXISTS\r\n",
    );
    assert_bytes(&c.request(b"cas k 0 0 1 0\r\nc\r\n"), b"EXISTS\r\n");
    assert_bytes(&c.request(b"cas nokey 0 0 1 1\r\nc\r\n"), b"NOT_FOUND\r\n");
    assert_bytes(&c.request(b"get k\r\n"), b"VALUE k 9 1\r\nb\r\nEND\r\n");
    let st = s.stats("");
    assert_eq!(stat_u64(&st, "cas_hits"), 1);
    assert_eq!(stat_u64(&st, "cas_badval"), 2);
    assert_eq!(stat_u64(&st, "cas_misses"), 1);
}

#[test]
fn every_modification_changes_the_cas() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set k 0 0 1\r\n1\r\n"), b"STORED\r\n");
    let mut seen = vec![gets_cas(&mut c, "k")];
    for req in [
        &b"set k 0 0 1\r\n2\r\n"[..],
        b"append k 0 0 1\r\n3\r\n",
        b"prepend k 0 0 1\r\n4\r\n",
        b"replace k 0 0 1\r\n5\r\n",
        b"incr k 1\r\n",
    ] {
        c.request(req);
        let now = gets_cas(&mut c, "k");
        assert!(
            !seen.contains(&now),
            "CAS {now} reused after {}",
            common::escape(req)
        );
        seen.push(now);
    }
    // gets on several keys reports each key's own CAS.
    assert_bytes(&c.request(b"set j 0 0 1\r\nj\r\n"), b"STORED\r\n");
    let cj = gets_cas(&mut c, "j");
    let ck = gets_cas(&mut c, "k");
    let want = format!("VALUE j 0 1 {cj}\r\nj\r\nVALUE k 0 1 {ck}\r\n6\r\nEND\r\n");
    assert_bytes(&c.request(b"gets j k nokey\r\n"), want.as_bytes());
}

#[test]
fn disabled_cas_reports_zero_and_cas_never_stores() {
    let s = Server::start(&["-C"]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set k 0 0 1\r\na\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"gets k\r\n"), b"VALUE k 0 1 0\r\na\r\nEND\r\n");
    assert_bytes(
        &c.request(b"gats 100 k\r\n"),
        b"VALUE k 0 1 0\r\na\r\nEND\r\n",
    );
    assert_bytes(&c.request(b"cas k 0 0 1 0\r\nb\r\n"), b"EXISTS\r\n");
    assert_bytes(&c.request(b"cas k 0 0 1 1\r\nb\r\n"), b"EXISTS\r\n");
    assert_bytes(&c.request(b"cas nokey 0 0 1 0\r\nb\r\n"), b"NOT_FOUND\r\n");
    assert_bytes(&c.request(b"get k\r\n"), b"VALUE k 0 1\r\na\r\nEND\r\n");
    assert_eq!(
        s.stats("settings").get("cas_enabled").map(String::as_str),
        Some("no")
    );
}

#[test]
fn malformed_cas_lines() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set k 0 0 1\r\na\r\n"), b"STORED\r\n");
    // Bad cas token: error, and the data line is then parsed as a command.
    c.send(b"cas k 0 0 1 abc\r\nb\r\n");
    assert_bytes(&c.read_line(), b"CLIENT_ERROR bad command line format\r\n");
    assert_bytes(&c.read_line(), b"ERROR\r\n");
    // Missing cas token: wrong token count.
    c.send(b"cas k 0 0 1\r\nb\r\n");
    assert_bytes(&c.read_line(), b"ERROR\r\n");
    assert_bytes(&c.read_line(), b"ERROR\r\n");
    assert_bytes(&c.request(b"get k\r\n"), b"VALUE k 0 1\r\na\r\nEND\r\n");
}
