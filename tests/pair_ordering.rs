//! One client, two nodes, strictly sequential requests: a write acknowledged after another
//! request returned (on the other node) must not lose to it. The client saw the first reply
//! before it sent the second request, so the second is not concurrent with the first, and a
//! single memcached would keep it.
//!
//! Versions order writes by the nodes' clocks: two writes on different nodes a few tens of
//! microseconds apart must be ordered by time, not by node id (with a millisecond physical
//! part they were, and the later write lost in one direction most of the time). Both nodes
//! run on one machine here, so their clocks agree exactly.

mod common;

use common::cmd;
use common::pair::{gets, Pair, SETTLE_WITHIN};

const ROUNDS: usize = 30;

#[test]
fn a_later_set_on_the_other_node_wins() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    let mut lost = Vec::new();
    for swap in [false, true] {
        let (first, second, dir) = if swap {
            (&mut cb, &mut ca, "B then A")
        } else {
            (&mut ca, &mut cb, "A then B")
        };
        for i in 0..ROUNDS {
            assert_eq!(cmd(first, "set k 0 0 5\r\nfirst\r\n"), "STORED\r\n");
            assert_eq!(cmd(second, "set k 0 0 6\r\nsecond\r\n"), "STORED\r\n");
            p.assert_converged(SETTLE_WITHIN);
            let v = gets(second, "k").map(|g| g.value);
            if v.as_deref() != Some(&b"second"[..]) {
                lost.push(format!("{dir} round {i}"));
            }
        }
    }
    assert!(
        lost.is_empty(),
        "the later of two sequential sets lost {} times of {}: {lost:?}",
        lost.len(),
        2 * ROUNDS
    );
}

#[test]
fn a_set_after_flush_all_on_the_other_node_survives() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    let mut lost = Vec::new();
    for swap in [false, true] {
        let (flusher, writer, dir) = if swap {
            (&mut cb, &mut ca, "flush B, set A")
        } else {
            (&mut ca, &mut cb, "flush A, set B")
        };
        for i in 0..ROUNDS {
            assert_eq!(cmd(flusher, "flush_all\r\n"), "OK\r\n");
            assert_eq!(cmd(writer, "set after 0 0 1\r\nz\r\n"), "STORED\r\n");
            p.assert_converged(SETTLE_WITHIN);
            if gets(writer, "after").is_none() {
                lost.push(format!("{dir} round {i}"));
            }
        }
    }
    assert!(
        lost.is_empty(),
        "a set acknowledged after flush_all returned was flushed {} times of {}: {lost:?}",
        lost.len(),
        2 * ROUNDS
    );
}

#[test]
fn a_set_after_delete_on_the_other_node_survives() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    let mut lost = Vec::new();
    for swap in [false, true] {
        let (deleter, writer, dir) = if swap {
            (&mut cb, &mut ca, "delete B, set A")
        } else {
            (&mut ca, &mut cb, "delete A, set B")
        };
        for i in 0..ROUNDS {
            assert_eq!(cmd(deleter, "set d 0 0 1\r\nx\r\n"), "STORED\r\n");
            p.assert_converged(SETTLE_WITHIN);
            assert_eq!(cmd(deleter, "delete d\r\n"), "DELETED\r\n");
            assert_eq!(cmd(writer, "set d 0 0 1\r\ny\r\n"), "STORED\r\n");
            p.assert_converged(SETTLE_WITHIN);
            if gets(writer, "d").is_none() {
                lost.push(format!("{dir} round {i}"));
            }
        }
    }
    assert!(
        lost.is_empty(),
        "a set acknowledged after delete returned was deleted {} times of {}: {lost:?}",
        lost.len(),
        2 * ROUNDS
    );
}
