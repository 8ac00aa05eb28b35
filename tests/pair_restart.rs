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
