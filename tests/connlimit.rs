//! `-c`: with maxconns_fast (the default) a client over the limit is told
//! `ERROR Too many open connections` and closed; with `-o no_maxconns_fast` it waits in the
//! backlog and is served as soon as another client leaves.

mod common;

use common::{assert_bytes, poll_until, stat_u64, stats, Conn, Server};
use std::time::Duration;

fn hold(s: &Server, n: usize) -> Vec<Conn> {
    // The readiness probe may still be counted for a moment; wait until it is gone.
    assert!(poll_until(Duration::from_secs(5), || {
        stat_u64(&s.stats(""), "curr_connections") <= 1
    }));
    let mut held: Vec<Conn> = (0..n)
        .map(|_| {
            let mut c = s.connect();
            assert_bytes(&c.request(b"version\r\n")[..8], b"VERSION ");
            c
        })
        .collect();
    // The probe's close may still be on its way to the server: ask through a held
    // connection until only the held ones are counted, so the next client's slot is free.
    assert!(poll_until(Duration::from_secs(5), || {
        stat_u64(&stats(&mut held[0], ""), "curr_connections") <= n as u64
    }));
    held
}

#[test]
fn over_the_limit_is_refused_with_memcacheds_error() {
    if common::target_is_memcached() {
        // memcached reserves descriptors of its own out of -c; the count differs.
        return;
    }
    let s = Server::start(&["-c", "4"]);
    let _held = hold(&s, 3);
    // The fourth client (stats above used one slot and left) is still within the limit.
    let mut fourth = s.connect();
    assert_bytes(&fourth.request(b"version\r\n")[..8], b"VERSION ");
    let mut fifth = s.connect();
    assert_bytes(&fifth.read_to_eof(), b"ERROR Too many open connections\r\n");
    drop(fourth);
    // Once the server has seen the fourth client go, a new one is served again.
    let mut reply = Vec::new();
    assert!(poll_until(Duration::from_secs(5), || {
        let mut c = s.connect();
        reply = c.request(b"stats\r\n");
        reply.starts_with(b"STAT ")
    }));
    let text = String::from_utf8_lossy(&reply);
    let rejected = text
        .lines()
        .find_map(|l| l.strip_prefix("STAT rejected_connections "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(rejected >= Some(1), "{text}");
}

#[test]
fn without_maxconns_fast_a_client_waits_for_a_free_slot() {
    if common::target_is_memcached() {
        return;
    }
    let s = Server::start(&["-c", "3", "-o", "no_maxconns_fast"]);
    let mut held = hold(&s, 3);
    let mut waiting = s.connect();
    waiting.send(b"version\r\n");
    // Not served while the limit is reached.
    waiting.deadline = Duration::from_millis(300);
    assert!(!waiting.closed_within(Duration::from_millis(300)));
    assert!(waiting.pending().is_empty(), "served over the limit");
    held.pop();
    waiting.deadline = Duration::from_secs(5);
    assert_bytes(&waiting.read_line()[..8], b"VERSION ");
    drop(waiting);
    drop(held);
    let st = s.stats("");
    assert!(stat_u64(&st, "listen_disabled_num") >= 1);
}
