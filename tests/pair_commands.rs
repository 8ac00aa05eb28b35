//! Every mutating command replicates: what a client does on one node shows on the other with
//! the same value, flags, CAS and expiry, in both directions and in `noreply` form too.

mod common;

use std::time::{Duration, Instant};

use common::pair::{gets, snapshot, Got, Pair, SETTLE_WITHIN};
use common::{cmd, poll_until, store_req, Conn};

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Waits for convergence, then returns the keys as both nodes show them (asserted equal).
fn same_on_both(p: &Pair, names: &[&str]) -> Vec<Option<Got>> {
    p.assert_converged(SETTLE_WITHIN);
    let ks = keys(names);
    let (sa, sb) = (snapshot(&p.a, &ks), snapshot(&p.b, &ks));
    assert_eq!(sa, sb, "nodes disagree on {names:?}");
    sa
}

fn got(flags: u32, value: &str, cas: u64) -> Option<Got> {
    Some(Got {
        flags,
        value: value.as_bytes().to_vec(),
        cas,
    })
}

fn cas_of(c: &mut Conn, key: &str) -> u64 {
    gets(c, key).unwrap_or_else(|| panic!("{key} missing")).cas
}

#[test]
fn storage_commands_replicate_both_ways() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());

    // set, with flags at both ends of the 32-bit range.
    assert_eq!(
        cmd(&mut ca, "set s1 4294967295 0 3\r\none\r\n"),
        "STORED\r\n"
    );
    assert_eq!(cmd(&mut cb, "set s2 0 0 3\r\ntwo\r\n"), "STORED\r\n");
    assert_eq!(cmd(&mut ca, "set empty 7 0 0\r\n\r\n"), "STORED\r\n");
    // add: succeeds where the key is new, and the other node then refuses it.
    assert_eq!(cmd(&mut cb, "add ad 12345 0 2\r\nad\r\n"), "STORED\r\n");
    let s = same_on_both(&p, &["s1", "s2", "empty", "ad"]);
    let cas_s1 = cas_of(&mut ca, "s1");
    assert_eq!(s[0], got(4294967295, "one", cas_s1));
    assert_eq!(
        s[1].as_ref().map(|g| (g.flags, &g.value[..])),
        Some((0, &b"two"[..]))
    );
    assert_eq!(
        s[2].as_ref().map(|g| (g.flags, g.value.len())),
        Some((7, 0))
    );
    assert_eq!(s[3].as_ref().map(|g| g.flags), Some(12345));
    assert_eq!(cmd(&mut ca, "add ad 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");

    // replace: on the node that did not create the key.
    assert_eq!(cmd(&mut ca, "replace s2 9 0 4\r\nTWO!\r\n"), "STORED\r\n");
    assert_eq!(
        cmd(&mut cb, "replace nope 0 0 1\r\nx\r\n"),
        "NOT_STORED\r\n"
    );
    // append / prepend, alternating nodes; flags stay those of the item.
    assert_eq!(cmd(&mut cb, "append s1 0 0 4\r\n-end\r\n"), "STORED\r\n");
    let s = same_on_both(&p, &["s1"]);
    assert_eq!(s[0].as_ref().map(|g| &g.value[..]), Some(&b"one-end"[..]));
    assert_eq!(cmd(&mut ca, "prepend s1 0 0 6\r\nstart-\r\n"), "STORED\r\n");
    assert_eq!(cmd(&mut cb, "append nope 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
    let s = same_on_both(&p, &["s1", "s2", "nope"]);
    assert_eq!(
        s[0].as_ref().map(|g| (g.flags, &g.value[..])),
        Some((4294967295, &b"start-one-end"[..]))
    );
    assert_eq!(
        s[1].as_ref().map(|g| (g.flags, &g.value[..])),
        Some((9, &b"TWO!"[..]))
    );
    assert_eq!(s[2], None);
    // Every change made a new version, the same on both nodes.
    assert_ne!(s[0].as_ref().map(|g| g.cas), Some(cas_s1));

    // cas on each node with the token from the other.
    let t = cas_of(&mut cb, "s2");
    assert_eq!(
        cmd(&mut ca, &format!("cas s2 3 0 3 {t}\r\ncas\r\n")),
        "STORED\r\n"
    );
    let s = same_on_both(&p, &["s2"]);
    let t2 = s[0].as_ref().map(|g| g.cas).unwrap_or(0);
    assert_eq!(s[0], got(3, "cas", t2));
    assert_ne!(t2, t);
    assert_eq!(
        cmd(&mut cb, &format!("cas s2 0 0 3 {t2}\r\nCAS\r\n")),
        "STORED\r\n"
    );
    let s = same_on_both(&p, &["s2"]);
    assert_eq!(s[0].as_ref().map(|g| &g.value[..]), Some(&b"CAS"[..]));
}

/// One pipelined write of many commands: a node serves it as one batch, whose changes
/// reach the replication log together, short and long values alike.
#[test]
fn a_pipelined_batch_of_writes_reaches_the_peer_whole() {
    let p = Pair::start(&[]);
    let mut ca = p.a.connect();
    let names: Vec<String> = (0..48).map(|i| format!("batch{i}")).collect();
    let value = |i: usize| {
        // Every fifth value is longer than what a batch holds back.
        let len = if i % 5 == 0 { 3000 + i } else { 10 + i };
        vec![b'a' + (i % 26) as u8; len]
    };
    let mut req = Vec::new();
    let mut replies = Vec::new();
    for (i, k) in names.iter().enumerate() {
        req.extend(store_req("set", k, i as u64, 0, &value(i)));
        replies.push("STORED");
    }
    for k in names.iter().step_by(7) {
        req.extend(format!("delete {k}\r\n").into_bytes());
        replies.push("DELETED");
    }
    // Within one batch, the later write of a key is the one both nodes keep.
    req.extend(store_req("set", &names[1], 77, 0, b"second"));
    req.extend(store_req("append", &names[2], 0, 0, b"+tail"));
    replies.extend(["STORED", "STORED"]);
    ca.send(&req);
    for want in replies {
        let line = ca.read_line();
        assert_eq!(String::from_utf8_lossy(&line).trim_end(), want);
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let got = same_on_both(&p, &names);
    for (i, g) in got.iter().enumerate() {
        match (i, g) {
            (i, None) => assert_eq!(i % 7, 0, "{} missing", names[i]),
            (1, Some(g)) => assert_eq!((g.flags, &g.value[..]), (77, &b"second"[..])),
            (2, Some(g)) => {
                let mut want = value(2);
                want.extend_from_slice(b"+tail");
                assert_eq!(g.value, want);
            }
            (i, Some(g)) => {
                assert_ne!(i % 7, 0, "{} survived its delete", names[i]);
                assert_eq!((g.flags, &g.value), (i as u32, &value(i)));
            }
        }
    }
}

#[test]
fn incr_decr_replicate_with_their_results() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    assert_eq!(cmd(&mut ca, "set n 42 0 2\r\n10\r\n"), "STORED\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(cmd(&mut cb, "incr n 5\r\n"), "15\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(cmd(&mut ca, "incr n 100\r\n"), "115\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(cmd(&mut cb, "decr n 16\r\n"), "99\r\n");
    p.assert_converged(SETTLE_WITHIN);
    // decr never goes below zero, and the length shrinks: the state, not the op, travels.
    assert_eq!(cmd(&mut ca, "decr n 1000\r\n"), "0\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(
        cmd(&mut cb, "incr n 18446744073709551615\r\n"),
        "18446744073709551615\r\n"
    );
    // Wraps at 2^64 like memcached, which rewrites a shorter number in place padded with
    // spaces: the padded value is the state both nodes must hold.
    assert_eq!(cmd(&mut cb, "incr n 2\r\n"), "1\r\n");
    let s = same_on_both(&p, &["n"]);
    let padded = format!("1{}", " ".repeat(19));
    assert_eq!(
        s[0].as_ref().map(|g| (g.flags, &g.value[..])),
        Some((42, padded.as_bytes()))
    );
    assert_eq!(cmd(&mut ca, "incr missing 1\r\n"), "NOT_FOUND\r\n");
    assert_eq!(cmd(&mut cb, "get missing\r\n"), "END\r\n");
}

#[test]
fn delete_replicates_both_ways() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    for k in ["d1", "d2", "keep"] {
        assert_eq!(
            cmd(&mut ca, &format!("set {k} 0 0 1\r\nx\r\n")),
            "STORED\r\n"
        );
    }
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(cmd(&mut cb, "delete d1\r\n"), "DELETED\r\n");
    assert_eq!(cmd(&mut ca, "delete d2\r\n"), "DELETED\r\n");
    let s = same_on_both(&p, &["d1", "d2", "keep"]);
    assert_eq!(
        (s[0].is_none(), s[1].is_none(), s[2].is_some()),
        (true, true, true)
    );
    assert_eq!(cmd(&mut ca, "delete d1\r\n"), "NOT_FOUND\r\n");
    assert_eq!(cmd(&mut cb, "delete d2\r\n"), "NOT_FOUND\r\n");
    // A key deleted and then re-created comes back on both.
    assert_eq!(cmd(&mut cb, "set d1 5 0 4\r\nback\r\n"), "STORED\r\n");
    let s = same_on_both(&p, &["d1"]);
    assert_eq!(
        s[0].as_ref().map(|g| (g.flags, &g.value[..])),
        Some((5, &b"back"[..]))
    );
}

/// Expiry times are absolute: an item given a TTL on one node expires on both, whether the
/// TTL came with `set`, `touch`, `gat` or `gats`.
#[test]
fn ttls_from_set_touch_gat_gats_expire_on_both_nodes() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    for k in ["t_touch", "t_gat", "t_gats", "forever"] {
        assert_eq!(
            cmd(&mut ca, &format!("set {k} 3 0 2\r\nok\r\n")),
            "STORED\r\n"
        );
    }
    p.assert_converged(SETTLE_WITHIN);
    let given = Instant::now();
    assert_eq!(cmd(&mut cb, "set t_set 3 2 2\r\nok\r\n"), "STORED\r\n");
    assert_eq!(cmd(&mut cb, "touch t_touch 2\r\n"), "TOUCHED\r\n");
    assert_eq!(
        cmd(&mut ca, "gat 2 t_gat\r\n"),
        "VALUE t_gat 3 2\r\nok\r\nEND\r\n"
    );
    let r = cmd(&mut cb, "gats 2 t_gats\r\n");
    assert!(r.starts_with("VALUE t_gats 3 2 "), "{r:?}");
    assert_eq!(cmd(&mut ca, "touch nope 2\r\n"), "NOT_FOUND\r\n");
    let ttl = ["t_set", "t_touch", "t_gat", "t_gats"];
    let all = ["t_set", "t_touch", "t_gat", "t_gats", "forever"];
    // Before expiry both nodes hold all of them, at the same versions.
    let s = same_on_both(&p, &all);
    assert!(
        given.elapsed() < Duration::from_secs(1),
        "too slow to observe the items before they expire"
    );
    assert!(s.iter().all(Option::is_some), "{s:?}");
    // A 2 s TTL ends at most 3 s after it was given (whole-second clock).
    let gone = |c: &mut Conn| ttl.iter().all(|k| gets(c, k).is_none());
    assert!(
        poll_until(Duration::from_secs(6), || gone(&mut ca) && gone(&mut cb)),
        "A: {:?}\nB: {:?}\n{}",
        snapshot(&p.a, &keys(&ttl)),
        snapshot(&p.b, &keys(&ttl)),
        p.logs()
    );
    assert!(
        given.elapsed() >= Duration::from_secs(1),
        "expired too early"
    );
    let s = same_on_both(&p, &["forever"]);
    assert!(s[0].is_some(), "an item without TTL expired");
}

#[test]
fn flush_all_replicates_both_ways() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    for i in 0..10 {
        assert_eq!(
            cmd(&mut ca, &format!("set fa{i} 0 0 1\r\na\r\n")),
            "STORED\r\n"
        );
        assert_eq!(
            cmd(&mut cb, &format!("set fb{i} 0 0 1\r\nb\r\n")),
            "STORED\r\n"
        );
    }
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(cmd(&mut cb, "flush_all\r\n"), "OK\r\n");
    p.assert_converged(SETTLE_WITHIN);
    // Written on the other node once the flush has reached it: survives on both (a write
    // racing the flush frame is pair_ordering.rs's subject).
    assert_eq!(cmd(&mut ca, "set after 0 0 1\r\nz\r\n"), "STORED\r\n");
    let names: Vec<String> = (0..10)
        .flat_map(|i| [format!("fa{i}"), format!("fb{i}")])
        .collect();
    p.assert_converged(SETTLE_WITHIN);
    for node in [&p.a, &p.b] {
        assert!(
            snapshot(node, &names).iter().all(Option::is_none),
            "{} kept flushed items",
            node.name
        );
        assert!(
            snapshot(node, &keys(&["after"]))[0].is_some(),
            "{} lost a later write",
            node.name
        );
    }
    // And the other way round.
    assert_eq!(cmd(&mut ca, "flush_all\r\n"), "OK\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(common::pair::digest(&p.a).0, 0);
    assert_eq!(common::pair::digest(&p.b).0, 0);
}

#[test]
fn delayed_flush_all_empties_both_nodes_when_due() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    for i in 0..10 {
        assert_eq!(
            cmd(&mut cb, &format!("set dl{i} 0 0 1\r\nd\r\n")),
            "STORED\r\n"
        );
    }
    p.assert_converged(SETTLE_WITHIN);
    // memcached's delayed flush takes effect at the start of the second before the one
    // named, so `flush_all 3` hits between 1 and 2 s from now.
    let given = Instant::now();
    assert_eq!(cmd(&mut ca, "flush_all 3\r\n"), "OK\r\n");
    let names: Vec<String> = (0..10).map(|i| format!("dl{i}")).collect();
    // Not yet due: still there on both.
    p.assert_converged(SETTLE_WITHIN);
    let (sa, sb) = (snapshot(&p.a, &names), snapshot(&p.b, &names));
    assert!(
        given.elapsed() < Duration::from_secs(1),
        "too slow to observe the items before the flush"
    );
    assert!(
        sa.iter().chain(&sb).all(Option::is_some),
        "flushed early: {sa:?} {sb:?}"
    );
    let empty = |n: &common::pair::Node| snapshot(n, &names).iter().all(Option::is_none);
    assert!(
        poll_until(Duration::from_secs(6), || empty(&p.a) && empty(&p.b)),
        "delayed flush not applied on both: A {:?} B {:?}\n{}",
        snapshot(&p.a, &names),
        snapshot(&p.b, &names),
        p.logs()
    );
    assert!(
        given.elapsed() >= Duration::from_secs(1),
        "flushed too early"
    );
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(common::pair::digest(&p.a).0, 0);
}

/// The `noreply` forms change the same state and replicate the same way.
#[test]
fn noreply_variants_replicate() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    assert_eq!(cmd(&mut ca, "set base 1 0 1\r\nb\r\n"), "STORED\r\n");
    p.assert_converged(SETTLE_WITHIN);
    let base_cas = cas_of(&mut cb, "base");
    let batch = format!(
        "set nr_set 11 0 3 noreply\r\nset\r\n\
         add nr_add 12 0 3 noreply\r\nadd\r\n\
         set nr_rep 0 0 1 noreply\r\nx\r\n\
         replace nr_rep 13 0 3 noreply\r\nrep\r\n\
         set nr_app 14 0 1 noreply\r\nm\r\n\
         append nr_app 0 0 1 noreply\r\nz\r\n\
         prepend nr_app 0 0 1 noreply\r\na\r\n\
         cas base 15 0 3 {base_cas} noreply\r\ncas\r\n\
         set nr_num 16 0 2 noreply\r\n40\r\n\
         incr nr_num 5 noreply\r\n\
         decr nr_num 3 noreply\r\n\
         set nr_del 0 0 1 noreply\r\nd\r\n\
         delete nr_del noreply\r\n\
         set nr_touch 17 0 1 noreply\r\nt\r\n\
         touch nr_touch 2 noreply\r\n"
    );
    cb.send(batch.as_bytes());
    // One acknowledged command behind them: the batch has been executed.
    assert_eq!(
        cmd(&mut cb, "get nr_num\r\n"),
        "VALUE nr_num 16 2\r\n42\r\nEND\r\n"
    );
    let given = Instant::now();
    let s = same_on_both(
        &p,
        &[
            "nr_set", "nr_add", "nr_rep", "nr_app", "base", "nr_num", "nr_del", "nr_touch",
        ],
    );
    let fv = |g: &Option<Got>| {
        g.as_ref()
            .map(|g| (g.flags, String::from_utf8_lossy(&g.value).into_owned()))
    };
    let want = [
        Some((11, "set")),
        Some((12, "add")),
        Some((13, "rep")),
        Some((14, "amz")),
        Some((15, "cas")),
        Some((16, "42")),
        None,
        Some((17, "t")),
    ];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(fv(&s[i]), w.map(|(f, v)| (f, v.to_string())), "entry {i}");
    }
    assert!(
        given.elapsed() < Duration::from_secs(1),
        "too slow to see nr_touch before expiry"
    );
    // The touch's TTL reached A too.
    let mut ca2 = p.a.connect();
    assert!(
        poll_until(Duration::from_secs(6), || gets(&mut ca2, "nr_touch")
            .is_none()
            && gets(&mut cb, "nr_touch").is_none()),
        "touch noreply TTL did not expire on both"
    );
    assert!(gets(&mut ca, "nr_set").is_some());
}
