//! Pipelined requests: many requests arriving in one write are answered in order, each one
//! exactly once, including around requests that change how the bytes after them are read
//! (a refused value's data block, `quit`) and replies that back up the connection's output;
//! and many connections with one request each, woken together, each get their own replies.

mod common;

use common::{assert_bytes, store_req, Conn, Server};

/// The reply to `get` of one key holding `data` (flags 0), with its `END`.
fn hit(key: &str, data: &[u8]) -> Vec<u8> {
    common::value_reply(key, 0, data)
}

/// The reply to `get` of two keys that both hit: (key, flags, data) each, one `END`.
fn two_hits(a: (&str, u64, &[u8]), b: (&str, u64, &[u8])) -> Vec<u8> {
    let mut w = common::value_reply(a.0, a.1, a.2);
    w.truncate(w.len() - b"END\r\n".len());
    w.extend(common::value_reply(b.0, b.1, b.2));
    w
}

#[test]
fn a_long_pipeline_is_answered_in_order() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    let (mut req, mut want) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let key = format!("p{i}");
        let val = format!("value-{i}");
        req.extend(store_req("set", &key, 0, 0, val.as_bytes()));
        want.extend_from_slice(b"STORED\r\n");
        // A read of the key just written, and of one written a few requests back, which
        // may sit in the same parsed batch as its write.
        req.extend(format!("get {key}\r\n").bytes());
        want.extend(hit(&key, val.as_bytes()));
        if i >= 3 {
            let old = format!("p{}", i - 3);
            req.extend(format!("get {old} nosuch{i}\r\n").bytes());
            // Keys with i % 7 == 0 were deleted, added again and incremented to 5.
            let now = match (i - 3) % 7 {
                0 => "5".to_string(),
                _ => format!("value-{}", i - 3),
            };
            want.extend(hit(&old, now.as_bytes()));
        }
        if i % 7 == 0 {
            req.extend(format!("delete {key}\r\nget {key}\r\n").bytes());
            want.extend_from_slice(b"DELETED\r\nEND\r\n");
            req.extend(store_req("add", &key, 0, 0, b"0"));
            want.extend_from_slice(b"STORED\r\n");
            req.extend(format!("incr {key} 5\r\n").bytes());
            want.extend_from_slice(b"5\r\n");
        }
    }
    c.send(&req);
    assert_bytes(&c.read_n(want.len()), &want);
    assert_bytes(&c.request(b"get p1\r\n"), &hit("p1", b"value-1"));
}

#[test]
fn a_refused_value_and_quit_end_the_requests_read_with_them() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    // The refused value is made of request lines: they are data to throw away, never
    // requests, even when they arrived in the same read as the line before them.
    let junk = b"get a\r\n".repeat(160_000);
    let mut req = store_req("set", "a", 0, 0, b"1");
    req.extend(store_req("set", "big", 0, 0, &junk));
    req.extend_from_slice(b"get a\r\nquit\r\nget a\r\nset b 0 0 1\r\n2\r\n");
    c.send(&req);
    let mut want = b"STORED\r\nSERVER_ERROR object too large for cache\r\n".to_vec();
    want.extend(hit("a", b"1"));
    assert_bytes(&c.read_to_eof(), &want);
    let mut c = s.connect();
    assert_bytes(&c.request(b"get b\r\n"), b"END\r\n");
}

#[test]
fn replies_past_the_output_bound_keep_their_order() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    // 40 replies of 300 kB: a batch of them outgrows the connection's output bound, so
    // the server stops, writes, and comes back for the rest of the requests it has read.
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    assert_bytes(
        &c.request(&store_req("set", "big", 0, 0, &big)),
        b"STORED\r\n",
    );
    assert_bytes(
        &c.request(&store_req("set", "small", 0, 0, b"s")),
        b"STORED\r\n",
    );
    let (mut req, mut want) = (Vec::new(), Vec::new());
    for i in 0..40 {
        let key = if i % 5 == 4 { "small" } else { "big" };
        req.extend(format!("get {key}\r\n").bytes());
        want.extend(hit(key, if key == "big" { &big } else { b"s" }));
    }
    c.send(&req);
    assert_bytes(&c.read_n(want.len()), &want);
}

/// Forty connections each send one request per round before any reply is read, so the
/// worker finds many of them ready at once and reads them ahead together. Each still gets
/// exactly its own replies, and so do the odd ones of the last round: a request that
/// arrives in two pieces around everyone else's, `quit`, a client that shuts its sending
/// side after its request, and a refused value followed by a request.
#[test]
fn connections_woken_together_each_get_their_own_replies() {
    const CONNS: usize = 40;
    let s = Server::start(&["-t", "1"]);
    let mut conns: Vec<Conn> = (0..CONNS).map(|_| s.connect()).collect();
    let value = |round: usize, i: usize| format!("round{round}-conn{i}");
    for round in 0..12 {
        let mut want = Vec::with_capacity(CONNS);
        for (i, c) in conns.iter_mut().enumerate() {
            let key = format!("k{i}");
            if round % 2 == 0 {
                c.send(&store_req(
                    "set",
                    &key,
                    i as u64,
                    0,
                    value(round, i).as_bytes(),
                ));
                want.push(b"STORED\r\n".to_vec());
            } else {
                // Its own key and its neighbour's, both written in the round before.
                let j = (i + 1) % CONNS;
                c.send(format!("get k{i} k{j}\r\n").as_bytes());
                want.push(two_hits(
                    (&key, i as u64, value(round - 1, i).as_bytes()),
                    (&format!("k{j}"), j as u64, value(round - 1, j).as_bytes()),
                ));
            }
        }
        for (c, w) in conns.iter_mut().zip(&want) {
            assert_bytes(&c.read_n(w.len()), w);
        }
    }

    let split = store_req("set", "k0", 0, 0, b"two pieces");
    let (head, tail) = split.split_at(split.len() / 2);
    conns[0].send(head);
    conns[1].send(b"get k1\r\nquit\r\n");
    conns[2].send(&store_req("set", "k2", 0, 0, b"then eof"));
    conns[2].shutdown_write();
    conns[3].send(b"set k3 0 0 2000000\r\n");
    conns[3].send(&vec![b'x'; 2_000_002]);
    conns[3].send(b"get k3\r\n");
    for c in conns.iter_mut().skip(4) {
        c.send(b"get nosuch\r\n");
    }
    conns[0].send(tail);
    assert_bytes(&conns[0].read_n(8), b"STORED\r\n");
    let last = value(10, 1);
    let mut w = common::value_reply("k1", 1, last.as_bytes());
    assert_bytes(&conns[1].read_to_eof(), &w);
    assert_bytes(&conns[2].read_to_eof(), b"STORED\r\n");
    // As in memcached, a refused set also drops the value the key had.
    w = b"SERVER_ERROR object too large for cache\r\nEND\r\n".to_vec();
    assert_bytes(&conns[3].read_n(w.len()), &w);
    for c in conns.iter_mut().skip(4) {
        assert_bytes(&c.read_n(5), b"END\r\n");
    }
    let mut c = s.connect();
    assert_bytes(
        &c.request(b"get k0 k2\r\n"),
        &two_hits(("k0", 0, b"two pieces"), ("k2", 0, b"then eof")),
    );
}

/// With `-R 2` a pipelining connection gives up the thread after every two requests: ten
/// connections that each pipeline 100 requests, sent before any reply is read, are all
/// answered in full and in order, and the yields are counted.
#[test]
fn connections_that_yield_after_each_few_requests_are_answered_in_order() {
    let s = Server::start(&["-t", "1", "-R", "2"]);
    let mut conns: Vec<Conn> = (0..10).map(|_| s.connect()).collect();
    let mut wants = Vec::new();
    for (c, n) in conns.iter_mut().zip(0..) {
        let (mut req, mut want) = (Vec::new(), Vec::new());
        for i in 0..50 {
            let key = format!("y{n}-{i}");
            let val = format!("{n}:{i}");
            req.extend(store_req("set", &key, 0, 0, val.as_bytes()));
            want.extend_from_slice(b"STORED\r\n");
            req.extend(format!("get {key}\r\n").bytes());
            want.extend(hit(&key, val.as_bytes()));
        }
        c.send(&req);
        wants.push(want);
    }
    for (c, want) in conns.iter_mut().zip(&wants) {
        assert_bytes(&c.read_n(want.len()), want);
    }
    let yields = common::stat_u64(&s.stats(""), "conn_yields");
    assert!(yields >= 10, "conn_yields {yields}");
}
