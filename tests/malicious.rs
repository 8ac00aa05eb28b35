//! Hostile clients: garbage bytes, huge declared lengths, connection churn, and a client that
//! pipelines without reading. The server must keep serving others with bounded memory.

mod common;

use common::{assert_bytes, Server};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// xorshift: deterministic garbage.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn healthy(s: &Server) {
    let mut c = s.connect();
    assert_bytes(&c.request(b"set alive 0 0 2\r\nok\r\n"), b"STORED\r\n");
    assert_bytes(
        &c.request(b"get alive\r\n"),
        b"VALUE alive 0 2\r\nok\r\nEND\r\n",
    );
}

#[test]
fn random_garbage_does_not_hurt_the_server() {
    let mut s = Server::start(&[]);
    for seed in 1..=20u64 {
        let mut c = s.connect();
        // Garbage with and without newlines; the server may answer or close, but must not die.
        let mut g = garbage(seed, 4096 + seed as usize * 97);
        if seed % 2 == 0 {
            for (i, b) in g.iter_mut().enumerate() {
                if i % 61 == 0 {
                    *b = b'\n';
                }
            }
        }
        let _ = c.stream.write_all(&g);
        c.shutdown_write();
        let _ = c.closed_within(Duration::from_secs(5));
    }
    assert!(
        s.is_running(),
        "server died on garbage; stderr: {}",
        s.stderr_text()
    );
    healthy(&s);
}

#[test]
fn huge_declared_lengths_are_refused() {
    let s = Server::start(&[]);
    // Over -I with the whole block sent: refused, the block swallowed, the stream in sync.
    let mut c = s.connect();
    let mut req = b"set k 0 0 5000000\r\n".to_vec();
    req.extend(vec![b'd'; 5_000_000]);
    req.extend_from_slice(b"\r\nget k\r\n");
    c.send(&req);
    assert_bytes(
        &c.read_line(),
        b"SERVER_ERROR object too large for cache\r\n",
    );
    assert_bytes(&c.read_reply(), b"END\r\n");
    // A 2 GB declaration followed by only some of the data: the server must not reserve the
    // declared size. (memcached sends its SERVER_ERROR only once the block is swallowed, so
    // no reply is expected here.)
    let rss_before = s.rss_kib().unwrap_or(0);
    let mut liar = s.connect();
    liar.send(b"set k 0 0 2147483000\r\n");
    liar.send(&vec![b'd'; 20_000_000]);
    healthy(&s);
    let rss_after = s.rss_kib().unwrap_or(0);
    assert!(
        rss_after < rss_before + 100 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB on a 2 GB declared length"
    );
    drop(liar);
    let mut c = s.connect();
    for req in [
        &b"set k 0 0 2147483647\r\n"[..],
        b"set k 0 0 99999999999999999999\r\n",
        b"set k 0 0 -5\r\n",
    ] {
        assert_bytes(&c.request(req), b"CLIENT_ERROR bad command line format\r\n");
    }
    healthy(&s);
}

#[test]
fn many_connections_opened_and_closed() {
    let mut s = Server::start(&[]);
    let start = Instant::now();
    for i in 0..300 {
        let mut c = s.connect();
        if i % 3 == 0 {
            assert_bytes(&c.request(b"get x\r\n"), b"END\r\n");
        }
        // Every third is dropped without a word, every third mid-request.
        if i % 3 == 2 {
            c.send(b"set k 0 0 10\r\nabc");
        }
    }
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..200 {
        held.push(TcpStream::connect(s.addr()).expect("connect"));
    }
    healthy(&s);
    drop(held);
    assert!(s.is_running());
    assert!(start.elapsed() < Duration::from_secs(20));
    // Closed connections are eventually accounted for.
    assert!(common::poll_until(Duration::from_secs(5), || {
        common::stat_u64(&s.stats(""), "curr_connections") < 10
    }));
}

#[test]
fn a_client_that_never_reads_cannot_grow_memory_or_block_others() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    let value = vec![b'v'; 100_000];
    assert_bytes(
        &c.request(&common::store_req("set", "big", 0, 0, &value)),
        b"STORED\r\n",
    );
    let rss_before = s.rss_kib().unwrap_or(0);

    // Pipeline gets of a 100 KB value without reading a byte of the replies: about 2 GB of
    // answers requested. The server has to stop reading from us when we stop reading from it.
    let hog = TcpStream::connect(s.addr()).expect("connect");
    hog.set_write_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let batch = b"get big\r\n".repeat(1000);
    let mut sent = 0usize;
    let mut w = &hog;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && sent < 20_000 * 1000 {
        match w.write(&batch) {
            Ok(n) => sent += n,
            Err(_) => break, // write blocked for 500 ms: the server has stopped reading us
        }
    }
    assert!(
        sent < 20_000 * 1000,
        "the server read all {sent} bytes of requests from a client that never reads"
    );

    // Others are still served promptly.
    let t = Instant::now();
    healthy(&s);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "server slow while one client hogs it"
    );

    let rss_after = s.rss_kib().unwrap_or(0);
    assert!(
        rss_after < rss_before + 200 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB for one stalled client"
    );
    drop(hog);
    healthy(&s);
}
