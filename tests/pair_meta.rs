//! Meta commands across a pair: what `ms`, `ma`, `md I` and `mg N` do on one node shows on
//! the other, client-chosen versions (`E`) take part in last-writer-wins, and a vivify race
//! between clients of one node hands out exactly one win.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::meta;
use common::pair::{digest, Pair, SETTLE_WITHIN};

#[test]
fn meta_writes_replicate() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());

    let stored = meta(&mut ca, "ms k 5 F33 T1000 c\r\nhello\r\n");
    let cas = stored
        .trim_end()
        .strip_prefix("HD c")
        .unwrap_or_else(|| panic!("{stored:?}"))
        .to_string();
    p.assert_converged(SETTLE_WITHIN);
    let on_b = meta(&mut cb, "mg k v f c\r\n");
    assert_eq!(on_b, format!("VA 5 f33 c{cas}\r\nhello\r\n"));
    let ttl = meta(&mut cb, "mg k t\r\n");
    let secs: u32 = ttl
        .trim_end()
        .strip_prefix("HD t")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{ttl:?}"));
    assert!((990..=1000).contains(&secs), "ttl on B {secs}");

    // Append on B, compare-and-swap on A with B's CAS.
    assert_eq!(meta(&mut cb, "ms k 1 MA\r\n!\r\n"), "HD\r\n");
    p.assert_converged(SETTLE_WITHIN);
    let got = meta(&mut ca, "mg k v c\r\n");
    assert!(got.ends_with("\r\nhello!\r\n"), "{got:?}");
    let cas_b = got
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        meta(
            &mut ca,
            &format!("ms k 2 {}\r\nhi\r\n", cas_b.replace('c', "C"))
        ),
        "HD\r\n"
    );
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(meta(&mut cb, "mg k v\r\n"), "VA 2\r\nhi\r\n");

    // Base64 keys keep their binary mark on the peer.
    assert_eq!(meta(&mut ca, "ms AAEC 2 b\r\nbk\r\n"), "HD\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(meta(&mut cb, "mg AAEC b k v\r\n"), "VA 2 kAAEC b\r\nbk\r\n");

    // md on B removes the key on A.
    assert_eq!(meta(&mut cb, "md k q\r\nmn\r\n"), "MN\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(meta(&mut ca, "mg k v\r\n"), "EN\r\n");
}

#[test]
fn meta_arithmetic_replicates() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    assert_eq!(meta(&mut ca, "ma hits N0 J10 v\r\n"), "VA 2\r\n10\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(meta(&mut cb, "ma hits D5 v\r\n"), "VA 2\r\n15\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(meta(&mut ca, "ma hits MD D3 v\r\n"), "VA 2\r\n12\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(meta(&mut cb, "mg hits v\r\n"), "VA 2\r\n12\r\n");
    // Auto-create with a TTL on B shows on A with that TTL.
    assert_eq!(meta(&mut cb, "ma fresh N500 J1\r\n"), "HD\r\n");
    p.assert_converged(SETTLE_WITHIN);
    let t = meta(&mut ca, "mg fresh t v\r\n");
    assert!(
        t.starts_with("VA 1 t4") || t.starts_with("VA 1 t500"),
        "{t:?}"
    );
}

#[test]
fn invalidation_shows_stale_on_both_nodes() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    assert_eq!(meta(&mut ca, "ms page 4 T300\r\nhtml\r\n"), "HD\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(meta(&mut cb, "md page I T30\r\n"), "HD\r\n");
    p.assert_converged(SETTLE_WITHIN);
    // Each node hands out one recache win for the stale item; later readers see Z.
    assert_eq!(meta(&mut ca, "mg page v\r\n"), "VA 4 X W\r\nhtml\r\n");
    assert_eq!(meta(&mut ca, "mg page v\r\n"), "VA 4 Z X\r\nhtml\r\n");
    assert_eq!(meta(&mut cb, "mg page v\r\n"), "VA 4 X W\r\nhtml\r\n");
    assert_eq!(meta(&mut cb, "mg page v\r\n"), "VA 4 Z X\r\nhtml\r\n");
    // The winner's recache (a plain set) clears the stale state on both nodes.
    assert_eq!(meta(&mut ca, "ms page 5 T300\r\nhtml2\r\n"), "HD\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(meta(&mut cb, "mg page v\r\n"), "VA 5\r\nhtml2\r\n");
}

#[test]
fn vivify_race_on_one_node_has_one_winner() {
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 20;
    let p = Pair::start(&[]);
    for round in 0..ROUNDS {
        let key = format!("lease{round}");
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let mut c = p.a.connect();
                let (key, barrier) = (key.clone(), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    meta(&mut c, &format!("mg {key} N30 s\r\n"))
                })
            })
            .collect();
        let replies: Vec<String> = handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect();
        let wins = replies.iter().filter(|r| r.contains(" W")).count();
        assert_eq!(wins, 1, "round {round}: {replies:?}");
        let zs = replies.iter().filter(|r| r.contains(" Z")).count();
        assert_eq!(zs, CLIENTS - 1, "round {round}: {replies:?}");
    }
    p.assert_converged(SETTLE_WITHIN);
}

#[test]
fn explicit_versions_take_part_in_last_writer_wins() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    // A higher chosen version on A beats a later, clock-versioned write on B only if it is
    // higher; here B's E is higher, so B's value wins on both nodes.
    assert_eq!(meta(&mut ca, "ms v 1 E100000\r\na\r\n"), "HD\r\n");
    assert_eq!(meta(&mut cb, "ms v 1 E200000\r\nb\r\n"), "HD\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(meta(&mut ca, "mg v v c\r\n"), "VA 1 c200000\r\nb\r\n");
    assert_eq!(meta(&mut ca, "ms v 1 E150000\r\nc\r\n"), "EX\r\n");
    // The same chosen version with different values on both nodes: both end the same.
    for i in 0..20 {
        let key = format!("tie{i}");
        meta(&mut ca, &format!("ms {key} 1 E9000000\r\nA\r\n"));
        meta(&mut cb, &format!("ms {key} 1 E9000000\r\nB\r\n"));
    }
    p.assert_converged(SETTLE_WITHIN);
    for i in 0..20 {
        let req = format!("mg tie{i} v c\r\n");
        assert_eq!(meta(&mut ca, &req), meta(&mut cb, &req), "tie{i}");
    }
    // A far-future version does not drag the peer's clock: other keys keep clock versions.
    let far = u64::MAX - 5;
    assert_eq!(
        meta(&mut ca, &format!("ms far 1 E{far}\r\nx\r\n")),
        "HD\r\n"
    );
    p.assert_converged(SETTLE_WITHIN);
    assert!(meta(&mut cb, "ms near 1\r\ny\r\n").starts_with("HD"));
    let near = meta(&mut cb, "mg near c\r\n");
    let near: u64 = near
        .trim_end()
        .strip_prefix("HD c")
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{near:?}"));
    assert!(near < u64::MAX / 2, "B's clock jumped: {near}");
    // A plain set on B of the far key still wins over it everywhere.
    assert_eq!(meta(&mut cb, "ms far 1\r\nz\r\n"), "HD\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(meta(&mut ca, "mg far v\r\n"), "VA 1\r\nz\r\n");
    assert_eq!(digest(&p.a), digest(&p.b));
}
