//! Starting a pair: whichever node starts first (or both at once), the link ends `connected`
//! and the nodes converge; a node that starts while its peer holds data copies all of it,
//! live writes included, and refuses clients until the copy is done.

mod common;

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::cmd;
use common::pair::{digest, load, snapshot, Order, Pair, READY_WITHIN, SETTLE_WITHIN};

/// Starts a pair in `order`, writes on both sides and checks both see everything.
fn start_and_converge(order: Order) {
    let p = Pair::start_in(order, &[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    for i in 0..20 {
        assert_eq!(
            cmd(&mut ca, &format!("set a{i} 1 0 2\r\nA{}\r\n", i % 10)),
            "STORED\r\n"
        );
        assert_eq!(
            cmd(&mut cb, &format!("set b{i} 2 0 2\r\nB{}\r\n", i % 10)),
            "STORED\r\n"
        );
    }
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(digest(&p.a).0, 40, "{}", p.logs());
    let keys: Vec<String> = (0..20)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    let (sa, sb) = (snapshot(&p.a, &keys), snapshot(&p.b, &keys));
    assert!(sa.iter().all(Option::is_some), "A misses keys: {sa:?}");
    assert_eq!(sa, sb);
}

#[test]
fn a_then_b_connects_and_converges() {
    start_and_converge(Order::AThenB);
}

#[test]
fn b_then_a_connects_and_converges() {
    start_and_converge(Order::BThenA);
}

#[test]
fn both_at_once_connect_and_converge() {
    start_and_converge(Order::Together);
}

/// B starts while A holds 200,000 items and a client keeps writing to A: B refuses clients
/// until its copy is done, then holds exactly what A holds.
#[test]
fn a_starting_node_copies_a_large_data_set_under_writes_before_serving() {
    const ITEMS: usize = 200_000;
    let mut p = Pair::new(&[]);
    p.a.start();
    load(&p.a, "bulk", ITEMS, b"0123456789abcdef");
    assert_eq!(digest(&p.a).0, ITEMS as u64);

    // A writer that keeps changing A (new keys, overwrites of copied keys, deletes) for as
    // long as B is copying.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes) = (Arc::clone(&stop), Arc::clone(&writes));
        let mut c = p.a.connect();
        thread::spawn(move || {
            let mut i = 0u64;
            // Bounded even if the main thread never says stop.
            let until = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                assert_eq!(
                    cmd(&mut c, &format!("set live{i} 0 0 4\r\nlive\r\n")),
                    "STORED\r\n"
                );
                let k = (i * 7919) % ITEMS as u64;
                assert_eq!(
                    cmd(&mut c, &format!("set bulk{k} 5 0 3\r\nnew\r\n")),
                    "STORED\r\n"
                );
                if i % 3 == 0 {
                    let d = (i * 104_729 + 1) % ITEMS as u64;
                    let r = cmd(&mut c, &format!("delete bulk{d}\r\n"));
                    assert!(r == "DELETED\r\n" || r == "NOT_FOUND\r\n", "{r:?}");
                }
                i += 1;
                writes.store(i, Ordering::Relaxed);
            }
        })
    };
    // Let the writer get going so the copy overlaps live writes.
    assert!(common::poll_until(Duration::from_secs(5), || writes
        .load(Ordering::Relaxed)
        > 10));

    p.b.spawn();
    let spawned = Instant::now();
    let mut refused = 0u32;
    let mut refused_while_copying = 0u32;
    let ready_at = loop {
        match p.b.try_connect() {
            Ok(_) => break Instant::now(),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused += 1;
                // The copy is visibly under way once B's log says so: a refusal then is the
                // bootstrap holding the port closed, not a process still starting.
                if p.b.log().contains("-> bootstrapping") {
                    refused_while_copying += 1;
                }
            }
            Err(e) => panic!("connect to B: {e}"),
        }
        assert!(
            spawned.elapsed() < READY_WITHIN,
            "B never opened its port; log:\n{}",
            p.b.log()
        );
        thread::sleep(Duration::from_millis(2));
    };
    let writes_at_ready = writes.load(Ordering::Relaxed);
    if let Err(e) = p.b.wait_ready(READY_WITHIN) {
        panic!("{}", e.why);
    }
    // Keep writing a little past B's opening so live streaming is exercised too.
    assert!(common::poll_until(Duration::from_secs(5), || writes
        .load(Ordering::Relaxed)
        > writes_at_ready + 50));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");

    assert!(refused >= 1, "B accepted a client before its copy");
    assert!(
        refused_while_copying >= 1,
        "no refused connect observed while B was bootstrapping ({refused} refused in all); log:\n{}",
        p.b.log()
    );
    assert!(
        p.b.log().contains("full copy received"),
        "B served without a copy; log:\n{}",
        p.b.log()
    );
    let st = p.b.stats("repl");
    assert!(
        st.get("repl_bootstraps").map(String::as_str) == Some("1"),
        "{st:?}"
    );
    let copied: u64 = st["repl_last_bootstrap_items"].parse().expect("u64");
    assert!(copied >= ITEMS as u64, "copy held {copied} items: {st:?}");
    p.assert_connected(SETTLE_WITHIN);
    p.assert_converged(SETTLE_WITHIN);
    let (items, _) = digest(&p.b);
    assert!(items >= ITEMS as u64 / 2, "B holds only {items} items");
    // Spot checks beyond the digest: keys the writer touched last.
    let n = writes.load(Ordering::Relaxed);
    let keys: Vec<String> = (n.saturating_sub(20)..n)
        .map(|i| format!("live{i}"))
        .chain((0..20).map(|i| format!("bulk{}", (i * 7919) % ITEMS as u64)))
        .collect();
    assert_eq!(snapshot(&p.a, &keys), snapshot(&p.b, &keys));
    eprintln!(
        "copy: {copied} items, B ready {:?} after spawn, {refused} refused connects, {n} writer rounds",
        ready_at - spawned
    );
    // PAIR_LOGS=1 (with --nocapture) shows what the copy really moved: A's repl_sent_items
    // against the copy size, B's repl_rejected_older for states it already had.
    if std::env::var("PAIR_LOGS").is_ok() {
        eprintln!(
            "A repl {:?}\nB repl {:?}",
            p.a.stats("repl"),
            p.b.stats("repl")
        );
        eprintln!("{}", p.logs());
    }
}

/// The nice values of a process's threads by name, from `/proc`.
#[cfg(target_os = "linux")]
fn thread_nice(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(t.path().join("comm")),
            std::fs::read_to_string(t.path().join("stat")),
        ) else {
            continue;
        };
        // Fields after the parenthesised name: state is field 3, nice field 19.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(nice) = rest.split_whitespace().nth(16).and_then(|n| n.parse().ok()) {
            out.push((comm.trim().to_string(), nice));
        }
    }
    out
}

/// A starting node runs its start-up (the copy) on a thread of its own at nice 13, which
/// gives it about the default 5% copy share of a CPU it shares with a busy peer; once it
/// serves, that thread is gone and the live link runs at the process's own priority.
#[cfg(target_os = "linux")]
#[test]
fn the_start_up_copy_runs_at_a_low_priority_and_the_live_link_does_not() {
    // A peer that accepts the connection and never answers the handshake: the node stays
    // in its start-up until the bootstrap timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let mut b = common::pair::Node::new(
        "b",
        common::free_fixed_port(),
        common::free_fixed_port(),
        silent_port,
        &["--repl-timeout-ms", "3000", "--repl-bootstrap-timeout", "1"],
    );
    b.spawn();
    let pid = b.pid();
    let mut seen = Vec::new();
    let found = common::poll_until(Duration::from_secs(5), || {
        seen = thread_nice(pid);
        seen.iter().any(|(n, _)| n == "replication-sta")
    });
    assert!(found, "no start-up thread: {seen:?}\n{}", b.log());
    let own = |threads: &[(String, i64)], name: &str| {
        threads
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, nice)| nice)
    };
    let base = own(&seen, "replication").expect("replication thread");
    assert_eq!(
        own(&seen, "replication-sta"),
        Some(base.max(13)),
        "{seen:?}"
    );
    assert!(b.try_connect().is_err(), "serving during its start-up");
    if let Err(e) = b.wait_ready(READY_WITHIN) {
        panic!("{}", e.why);
    }
    let after = thread_nice(pid);
    assert_eq!(own(&after, "replication-sta"), None, "{after:?}");
    assert_eq!(own(&after, "replication"), Some(base), "{after:?}");
    drop(silent);
}
