//! Expiration: relative and absolute times, negative times, and touch/gat changing a TTL.
//! Waits are polls with deadlines; each test takes a few seconds at most.

mod common;

use common::{assert_bytes, poll_until, stat_u64, Conn, Server};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn hit(c: &mut Conn, key: &str) -> bool {
    let r = c.request(format!("get {key}\r\n").as_bytes());
    r.starts_with(b"VALUE ")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[test]
fn relative_ttl_expires_within_its_window() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set k 0 2 1\r\nx\r\n"), b"STORED\r\n");
    // The clock ticks once a second, so a TTL of 2 lives at least one full second.
    assert!(hit(&mut c, "k"), "a 2 s item vanished at once");
    assert!(
        poll_until(Duration::from_secs(4), || !hit(&mut c, "k")),
        "a 2 s item was still there after 4 s"
    );
    assert!(stat_u64(&s.stats(""), "get_expired") >= 1);
}

#[test]
fn negative_ttl_expires_immediately_but_stores() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set k 0 -1 1\r\nx\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"get k\r\n"), b"END\r\n");
    // The expired item does not block an add.
    assert_bytes(&c.request(b"add k 0 0 1\r\ny\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"get k\r\n"), b"VALUE k 0 1\r\ny\r\nEND\r\n");
}

#[test]
fn absolute_times_in_the_past_and_future() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    let past = unix_now() - 1000;
    let future = unix_now() + 1000;
    assert_bytes(
        &c.request(format!("set p 0 {past} 1\r\nx\r\n").as_bytes()),
        b"STORED\r\n",
    );
    assert_bytes(&c.request(b"get p\r\n"), b"END\r\n");
    assert_bytes(
        &c.request(format!("set f 0 {future} 1\r\nx\r\n").as_bytes()),
        b"STORED\r\n",
    );
    assert_bytes(&c.request(b"get f\r\n"), b"VALUE f 0 1\r\nx\r\nEND\r\n");
    // Exactly 30 days is still relative; one more second is an absolute time long past.
    assert_bytes(&c.request(b"set r 0 2592000 1\r\nx\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"get r\r\n"), b"VALUE r 0 1\r\nx\r\nEND\r\n");
    assert_bytes(&c.request(b"set r 0 2592001 1\r\nx\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"get r\r\n"), b"END\r\n");
}

#[test]
fn touch_and_gat_extend_a_ttl() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    for k in ["control", "touched", "gatted"] {
        assert_bytes(
            &c.request(format!("set {k} 0 2 1\r\nx\r\n").as_bytes()),
            b"STORED\r\n",
        );
    }
    assert_bytes(&c.request(b"touch touched 100\r\n"), b"TOUCHED\r\n");
    assert_bytes(
        &c.request(b"gat 100 gatted\r\n"),
        b"VALUE gatted 0 1\r\nx\r\nEND\r\n",
    );
    assert!(
        poll_until(Duration::from_secs(4), || !hit(&mut c, "control")),
        "control item never expired"
    );
    assert!(hit(&mut c, "touched"), "touch did not extend the TTL");
    assert!(hit(&mut c, "gatted"), "gat did not extend the TTL");
}

#[test]
fn touch_and_gat_can_shorten_a_ttl() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set t 0 0 1\r\nx\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"set g 0 0 1\r\nx\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"touch t 1\r\n"), b"TOUCHED\r\n");
    assert!(c.request(b"gats 1 g\r\n").starts_with(b"VALUE g 0 1 "));
    assert!(
        poll_until(Duration::from_secs(4), || !hit(&mut c, "t")
            && !hit(&mut c, "g")),
        "items touched to 1 s did not expire"
    );
    assert_bytes(&c.request(b"touch t 10\r\n"), b"NOT_FOUND\r\n");
    assert_bytes(&c.request(b"touch nokey 10\r\n"), b"NOT_FOUND\r\n");
    let st = s.stats("");
    assert!(stat_u64(&st, "touch_hits") >= 2);
    assert!(stat_u64(&st, "touch_misses") >= 2);
}

#[test]
fn delayed_flush_hides_items_once_due() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    assert_bytes(&c.request(b"set k 0 0 1\r\nx\r\n"), b"STORED\r\n");
    assert_bytes(&c.request(b"flush_all 2\r\n"), b"OK\r\n");
    assert!(
        poll_until(Duration::from_secs(4), || !hit(&mut c, "k")),
        "flush_all 2 never took effect"
    );
}
