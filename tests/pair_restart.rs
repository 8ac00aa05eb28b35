//! A node killed with SIGKILL and restarted on the same ports copies what it missed (writes
//! and deletes) from its peer before serving, and the pair converges; either node may be the
//! one that dies.

mod common;

use common::cmd;
use common::pair::{digest, snapshot, wait_link, Node, Pair, SETTLE_WITHIN};

fn kill_and_restart(p: &mut Pair, victim_is_b: bool) {
    let (survivor, victim): (&mut Node, &mut Node) = if victim_is_b {
        (&mut p.a, &mut p.b)
    } else {
        (&mut p.b, &mut p.a)
    };
    let mut cv = victim.connect();
    for i in 0..100 {
        assert_eq!(
            cmd(&mut cv, &format!("set old{i} 1 0 3\r\nold\r\n")),
            "STORED\r\n"
        );
    }
    drop(cv);
    // Converged before the kill, so the victim held what it wrote.
    assert!(
        common::pair::wait_converged(survivor, victim, SETTLE_WITHIN),
        "no convergence before the kill"
    );
    victim.kill9();
    assert!(
        wait_link(survivor, "down", SETTLE_WITHIN),
        "{} did not notice its peer died",
        survivor.name
    );

    let mut cs = survivor.connect();
    for i in 0..100 {
        assert_eq!(
            cmd(&mut cs, &format!("set new{i} 2 0 3\r\nnew\r\n")),
            "STORED\r\n"
        );
    }
    for i in 0..50 {
        assert_eq!(cmd(&mut cs, &format!("delete old{i}\r\n")), "DELETED\r\n");
    }
    for i in 50..60 {
        assert_eq!(
            cmd(&mut cs, &format!("set old{i} 3 0 7\r\nchanged\r\n")),
            "STORED\r\n"
        );
    }

    victim.restart();
    let st = victim.stats("repl");
    let boots: u64 = st["repl_bootstraps"].parse().expect("u64");
    assert!(boots >= 1, "{} served without a copy: {st:?}", victim.name);
    assert!(
        common::pair::wait_converged(survivor, victim, SETTLE_WITHIN),
        "no convergence after the restart: {:?} vs {:?}\n{}\n{}",
        common::pair::try_digest(survivor),
        common::pair::try_digest(victim),
        survivor.log(),
        victim.log()
    );
    assert!(wait_link(victim, "connected", SETTLE_WITHIN));
    assert!(wait_link(survivor, "connected", SETTLE_WITHIN));
    assert_eq!(digest(victim).0, 150);
    let keys: Vec<String> = (0..100)
        .flat_map(|i| [format!("old{i}"), format!("new{i}")])
        .collect();
    let (ss, sv) = (snapshot(survivor, &keys), snapshot(victim, &keys));
    assert_eq!(ss, sv);
    for (k, g) in keys.iter().zip(&sv) {
        let i: usize = k
            .trim_start_matches(|c: char| c.is_alphabetic())
            .parse()
            .expect("n");
        let want = match (&k[..3], i) {
            ("old", 0..=49) => None,
            ("old", 50..=59) => Some((3, &b"changed"[..])),
            ("old", _) => Some((1, &b"old"[..])),
            _ => Some((2, &b"new"[..])),
        };
        assert_eq!(g.as_ref().map(|g| (g.flags, &g.value[..])), want, "{k}");
    }
    // Writes on the restarted node reach the survivor.
    let mut cv = victim.connect();
    assert_eq!(cmd(&mut cv, "set after 0 0 5\r\nafter\r\n"), "STORED\r\n");
    assert!(common::pair::wait_converged(
        survivor,
        victim,
        SETTLE_WITHIN
    ));
    assert_eq!(
        cmd(&mut cs, "get after\r\n"),
        "VALUE after 0 5\r\nafter\r\nEND\r\n"
    );
}

#[test]
fn b_killed_and_restarted_catches_up() {
    let mut p = Pair::start(&[]);
    kill_and_restart(&mut p, true);
}

#[test]
fn a_killed_and_restarted_catches_up() {
    let mut p = Pair::start(&[]);
    kill_and_restart(&mut p, false);
}

/// Items flushed on the survivor (but not yet swept from memory) must not come back through
/// the copy a restarted node takes: the flush happened before the restart.
#[test]
fn a_restarted_node_does_not_copy_flushed_items() {
    let mut p = Pair::start(&[]);
    common::pair::load(&p.a, "f", 1000, b"flushed");
    p.assert_converged(SETTLE_WITHIN);
    let mut ca = p.a.connect();
    assert_eq!(cmd(&mut ca, "flush_all\r\n"), "OK\r\n");
    assert_eq!(cmd(&mut ca, "set kept 0 0 4\r\nkept\r\n"), "STORED\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(digest(&p.b).0, 1, "the flush did not reach B");
    // B has acknowledged everything, the flush included: A owes it nothing any more, so
    // only the copy itself can tell the new B about the flush.
    assert!(common::pair::wait_acked(&p.a, SETTLE_WITHIN));

    p.b.kill9();
    p.b.restart();
    assert!(
        common::pair::wait_converged(&p.a, &p.b, SETTLE_WITHIN),
        "restarted B differs from A after a flush: A {:?} B {:?}; B repl {:?}\n{}",
        common::pair::try_digest(&p.a),
        common::pair::try_digest(&p.b),
        p.b.try_stats("repl"),
        p.logs()
    );
    let mut cb = p.b.connect();
    assert_eq!(cmd(&mut cb, "get f0 f999\r\n"), "END\r\n");
    assert_eq!(digest(&p.b).0, 1);
}

/// A delayed flush announced before a node restarted still empties it when it falls due.
#[test]
fn a_restarted_node_honours_a_pending_delayed_flush() {
    let mut p = Pair::start(&[]);
    common::pair::load(&p.a, "df", 100, b"doomed");
    p.assert_converged(SETTLE_WITHIN);
    let mut ca = p.a.connect();
    let given = std::time::Instant::now();
    // Due between 1 and 2 s from now (memcached's rule, see pair_commands).
    assert_eq!(cmd(&mut ca, "flush_all 3\r\n"), "OK\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert!(common::pair::wait_acked(&p.a, SETTLE_WITHIN));
    p.b.kill9();
    p.b.restart();
    p.assert_converged(SETTLE_WITHIN);
    assert!(
        given.elapsed() < std::time::Duration::from_secs(1),
        "too slow to restart B before the flush fell due"
    );
    assert_eq!(digest(&p.b).0, 100, "B did not copy the items");
    let empty = |n: &Node| common::pair::try_digest(n).map(|d| d.0) == Some(0);
    assert!(
        common::pair::poll(std::time::Duration::from_secs(6), || empty(&p.a)
            && empty(&p.b)),
        "after the delayed flush: A {:?} B {:?}\n{}",
        common::pair::try_digest(&p.a),
        common::pair::try_digest(&p.b),
        p.logs()
    );
}

/// A restarted node whose peer is frozen gives up on its copy after the bootstrap timeout and
/// serves alone; once the peer runs again, the two must still end with the same data: the
/// peer's older items (already acknowledged by the node's previous incarnation) included.
#[test]
fn a_node_that_served_alone_after_a_bootstrap_timeout_still_converges() {
    let mut p = Pair::start(&["--repl-bootstrap-timeout", "1"]);
    common::pair::load(&p.a, "old", 100, b"from-a");
    p.assert_converged(SETTLE_WITHIN);
    assert!(common::pair::wait_acked(&p.a, SETTLE_WITHIN));

    p.b.kill9();
    p.a.pause();
    // A's kernel still accepts B's dial, but nobody answers the handshake: B waits for its
    // copy until the 1 s bootstrap timeout, then serves alone.
    p.b.restart();
    let mut cb = p.b.connect();
    assert_eq!(
        cmd(&mut cb, "get old0\r\n"),
        "END\r\n",
        "B cannot have a copy"
    );
    for i in 0..10 {
        assert_eq!(
            cmd(&mut cb, &format!("set alone{i} 0 0 1\r\nb\r\n")),
            "STORED\r\n"
        );
    }
    p.a.resume();
    p.assert_connected(SETTLE_WITHIN);
    assert!(
        common::pair::wait_converged(&p.a, &p.b, SETTLE_WITHIN),
        "no convergence: A {:?} B {:?}\nA repl {:?}\nB repl {:?}\n{}",
        common::pair::try_digest(&p.a),
        common::pair::try_digest(&p.b),
        p.a.try_stats("repl"),
        p.b.try_stats("repl"),
        p.logs()
    );
    assert_eq!(digest(&p.b).0, 110);
    assert_eq!(
        cmd(&mut cb, "get old0\r\n"),
        "VALUE old0 0 6\r\nfrom-a\r\nEND\r\n"
    );
}
