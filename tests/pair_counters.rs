//! Counters in a pair: clients on both nodes incrementing and decrementing the same keys at
//! once lose nothing, a `set` during the storm replaces the counter and counting goes on from
//! it, and the totals survive a partition and a SIGKILL/restart of one node.

mod common;
mod proxy;

use std::net::SocketAddr;
use std::thread;

use common::pair::{gets, wait_converged, wait_link, Node, Pair, SETTLE_WITHIN};
use common::{cmd, free_fixed_port, poll_until, Conn, Server};
use proxy::{Mode, Proxy};

/// Commands sent before their replies are read: a client that pipelines, as a web server's
/// connection pool would, so both nodes count at the same time.
const BATCH: usize = 200;

/// One arithmetic command of a storm.
#[derive(Clone, Copy)]
struct Op {
    key: &'static str,
    incr: bool,
    delta: u64,
}

/// Sends `ops` over a fresh connection to `addr`, pipelined, and returns every reply as a
/// number (panics on anything else).
fn run(addr: SocketAddr, ops: Vec<Op>) -> Vec<u64> {
    let mut c = Conn::connect(addr);
    let mut replies = Vec::with_capacity(ops.len());
    for chunk in ops.chunks(BATCH) {
        let mut req = Vec::new();
        for op in chunk {
            let verb = if op.incr { "incr" } else { "decr" };
            req.extend_from_slice(format!("{verb} {} {}\r\n", op.key, op.delta).as_bytes());
        }
        c.send(&req);
        for _ in chunk {
            let line = c.read_line();
            let text = String::from_utf8_lossy(&line);
            let n = text
                .trim_end()
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {text:?}"));
            replies.push(n);
        }
    }
    replies
}

/// Runs each (address, ops) client in its own thread at once; returns their replies.
fn storm(clients: Vec<(SocketAddr, Vec<Op>)>) -> Vec<Vec<u64>> {
    let handles: Vec<_> = clients
        .into_iter()
        .map(|(addr, ops)| thread::spawn(move || run(addr, ops)))
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect()
}

/// The net change `ops` make when nothing clamps.
fn net(ops: &[Op], key: &str) -> i64 {
    ops.iter()
        .filter(|o| o.key == key)
        .map(|o| {
            if o.incr {
                o.delta as i64
            } else {
                -(o.delta as i64)
            }
        })
        .sum()
}

fn incrs(key: &'static str, n: usize) -> Vec<Op> {
    vec![
        Op {
            key,
            incr: true,
            delta: 1,
        };
        n
    ]
}

/// `n` operations on `key`: three increments by 3 for every decrement by 2, interleaved.
fn mixed(key: &'static str, n: usize) -> Vec<Op> {
    (0..n)
        .map(|i| Op {
            key,
            incr: i % 4 != 0,
            delta: if i % 4 != 0 { 3 } else { 2 },
        })
        .collect()
}

/// The number a node shows for `key` (memcached pads shorter results with spaces).
fn number(c: &mut Conn, key: &str) -> Option<u64> {
    let g = gets(c, key)?;
    String::from_utf8_lossy(&g.value).trim_end().parse().ok()
}

fn numbers(a: &Node, b: &Node, key: &str) -> (Option<u64>, Option<u64>) {
    (number(&mut a.connect(), key), number(&mut b.connect(), key))
}

fn skip() -> bool {
    common::target_is_memcached()
}

#[test]
fn four_clients_on_two_nodes_count_every_increment() {
    if skip() {
        return;
    }
    let p = Pair::start(&[]);
    let mut ca = p.a.connect();
    assert_eq!(cmd(&mut ca, "set hits 3 0 1\r\n7\r\n"), "STORED\r\n");
    assert_eq!(cmd(&mut ca, "set mix 0 0 7\r\n1000000\r\n"), "STORED\r\n");
    p.assert_converged(SETTLE_WITHIN);

    let per_client = 10_000;
    let mut clients = Vec::new();
    let mut expected_mix = 1_000_000i64;
    for node in [&p.a, &p.b, &p.a, &p.b] {
        // Each client interleaves the plain count with the mixed one.
        let mut ops = Vec::new();
        for (h, m) in incrs("hits", per_client)
            .into_iter()
            .zip(mixed("mix", per_client))
        {
            ops.push(h);
            ops.push(m);
        }
        expected_mix += net(&ops, "mix");
        clients.push((node.addr(), ops));
    }
    let replies = storm(clients);
    for r in &replies {
        // A node's replies to one client only go up: nothing of its own was lost.
        let hits: Vec<u64> = r.iter().step_by(2).copied().collect();
        assert!(hits.windows(2).all(|w| w[0] < w[1]), "replies went down");
    }
    p.assert_converged(SETTLE_WITHIN);
    let want_hits = 7 + 4 * per_client as u64;
    assert_eq!(
        numbers(&p.a, &p.b, "hits"),
        (Some(want_hits), Some(want_hits))
    );
    let want_mix = u64::try_from(expected_mix).expect("positive");
    assert_eq!(numbers(&p.a, &p.b, "mix"), (Some(want_mix), Some(want_mix)));
    // Flags and the CAS (the version) agree on both nodes.
    let (ga, gb) = (
        gets(&mut p.a.connect(), "hits"),
        gets(&mut p.b.connect(), "hits"),
    );
    assert_eq!(ga, gb);
    assert_eq!(ga.map(|g| g.flags), Some(3));
}

#[test]
fn a_set_during_the_storm_replaces_the_counter_and_counting_goes_on_from_it() {
    if skip() {
        return;
    }
    let p = Pair::start(&[]);
    let mut ca = p.a.connect();
    assert_eq!(cmd(&mut ca, "set k 0 0 1\r\n0\r\n"), "STORED\r\n");
    p.assert_converged(SETTLE_WITHIN);

    const SET_TO: u64 = 1_000_000_000;
    let per_client = 10_000;
    let clients: Vec<_> = [&p.a, &p.b, &p.a]
        .iter()
        .map(|n| (n.addr(), incrs("k", per_client)))
        .collect();
    // The fourth client, on B, sets the key halfway through its own increments, while the
    // other three keep counting.
    let b_addr = p.b.addr();
    let setter = thread::spawn(move || {
        let mut replies = run(b_addr, incrs("k", per_client / 2));
        let r = cmd(
            &mut Conn::connect(b_addr),
            &format!("set k 0 0 10\r\n{SET_TO}\r\n"),
        );
        replies.extend(run(b_addr, incrs("k", per_client / 2)));
        (replies, r)
    });
    let mut replies = storm(clients);
    let (own, set_reply) = setter.join().expect("setter");
    replies.push(own);
    assert_eq!(set_reply, "STORED\r\n");
    p.assert_converged(SETTLE_WITHIN);
    // The set is newer than the counter's base, so it wins on both nodes, and exactly the
    // increments that counted from it (their replies say so) survive on top of it.
    let after_set = replies.iter().flatten().filter(|&&n| n > SET_TO).count() as u64;
    assert!(after_set > 0, "no increment followed the set");
    let want = SET_TO + after_set;
    assert_eq!(numbers(&p.a, &p.b, "k"), (Some(want), Some(want)));
    // A later increment counts from the converged value on either node.
    assert_eq!(cmd(&mut ca, "incr k 1\r\n"), format!("{}\r\n", want + 1));
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(
        cmd(&mut p.b.connect(), "incr k 1\r\n"),
        format!("{}\r\n", want + 2)
    );
}

#[test]
fn concurrent_decrements_past_zero_clamp_and_converge() {
    if skip() {
        return;
    }
    let p = Pair::start(&[]);
    let mut ca = p.a.connect();
    assert_eq!(cmd(&mut ca, "set z 0 0 3\r\n100\r\n"), "STORED\r\n");
    p.assert_converged(SETTLE_WITHIN);
    let dec = |n| {
        vec![
            Op {
                key: "z",
                incr: false,
                delta: 1,
            };
            n
        ]
    };
    let replies = storm(vec![(p.a.addr(), dec(80)), (p.b.addr(), dec(80))]);
    // Each node clamps at 0 on what it sees, as memcached does.
    assert!(replies.iter().flatten().all(|&n| n <= 100));
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(numbers(&p.a, &p.b, "z"), (Some(0), Some(0)));
    // Counting from 0 again, on both nodes.
    assert_eq!(cmd(&mut ca, "incr z 5\r\n"), "5\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(cmd(&mut p.b.connect(), "incr z 2\r\n"), "7\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(numbers(&p.a, &p.b, "z"), (Some(7), Some(7)));
}

/// A pair whose links both run through proxies, so the link can be cut.
struct CutPair {
    a: Server,
    b: Server,
    ab: Proxy,
    ba: Proxy,
}

impl CutPair {
    fn start() -> CutPair {
        let (ra, rb) = (free_fixed_port(), free_fixed_port());
        let ab = Proxy::start(([127, 0, 0, 1], rb).into());
        let ba = Proxy::start(([127, 0, 0, 1], ra).into());
        let node = |own: u16, via: &Proxy| {
            let own = own.to_string();
            let peer = format!("127.0.0.1:{}", via.port());
            let mut args = vec!["-X", own.as_str(), "-x", peer.as_str()];
            args.extend_from_slice(&common::pair::FAST);
            Server::start(&args)
        };
        let a = node(ra, &ab);
        let b = node(rb, &ba);
        let p = CutPair { a, b, ab, ba };
        assert!(p.wait_state("connected"), "pair never connected");
        p
    }

    fn set_links(&self, m: Mode) {
        self.ab.set(m);
        self.ba.set(m);
    }

    fn state(s: &Server) -> String {
        s.stats("repl")
            .get("repl_link_state")
            .cloned()
            .unwrap_or_default()
    }

    fn wait_state(&self, state: &str) -> bool {
        poll_until(SETTLE_WITHIN, || {
            Self::state(&self.a) == state && Self::state(&self.b) == state
        })
    }

    fn wait_converged(&self) -> bool {
        let sig = |s: &Server| {
            let (r, d) = (s.stats("repl"), s.stats("digest"));
            (
                r.get("repl_pending_keys").cloned(),
                r.get("repl_link_state").cloned(),
                d.get("digest").cloned(),
                d.get("digest_items").cloned(),
            )
        };
        poll_until(SETTLE_WITHIN, || {
            let (a, b) = (sig(&self.a), sig(&self.b));
            a.0.as_deref() == Some("0") && a.1.as_deref() == Some("connected") && a == b
        })
    }
}

#[test]
fn counts_on_both_sides_of_a_partition_add_up_when_it_heals() {
    if skip() {
        return;
    }
    let p = CutPair::start();
    let mut ca = p.a.connect();
    assert_eq!(cmd(&mut ca, "set k 0 0 3\r\n500\r\n"), "STORED\r\n");
    assert!(p.wait_converged(), "the set did not reach B");
    // Increments before the cut, replicated.
    storm(vec![
        (p.a.addr(), incrs("k", 100)),
        (p.b.addr(), incrs("k", 100)),
    ]);
    assert!(p.wait_converged(), "no convergence before the cut");

    p.set_links(Mode::Cut);
    assert!(p.wait_state("down"), "the cut was not noticed");
    let ops = |n| mixed("k", n);
    let clients = vec![
        (p.a.addr(), ops(2_000)),
        (p.b.addr(), ops(2_000)),
        (p.a.addr(), incrs("k", 1_000)),
        (p.b.addr(), incrs("k", 1_000)),
    ];
    let total: i64 = clients.iter().map(|(_, o)| net(o, "k")).sum();
    let side: i64 = net(&ops(2_000), "k") + 1_000;
    storm(clients);
    // Apart, each side sees only its own counts.
    let base = 500 + 200;
    let (na, nb) = (
        number(&mut p.a.connect(), "k"),
        number(&mut p.b.connect(), "k"),
    );
    let alone = u64::try_from(base + side).expect("positive");
    assert_eq!((na, nb), (Some(alone), Some(alone)));

    p.set_links(Mode::Pass);
    assert!(p.wait_converged(), "no convergence after the heal");
    let want = u64::try_from(base + total).expect("positive");
    let (na, nb) = (
        number(&mut p.a.connect(), "k"),
        number(&mut p.b.connect(), "k"),
    );
    assert_eq!((na, nb), (Some(want), Some(want)));
}

#[test]
fn replicated_counts_survive_a_kill_and_restart_of_either_node() {
    if skip() {
        return;
    }
    for victim_is_b in [true, false] {
        let mut p = Pair::start(&[]);
        let mut ca = p.a.connect();
        // High enough that no decrement clamps.
        assert_eq!(cmd(&mut ca, "set k 0 0 4\r\n1000\r\n"), "STORED\r\n");
        assert!(wait_converged(&p.a, &p.b, SETTLE_WITHIN));
        storm(vec![
            (p.a.addr(), incrs("k", 3_000)),
            (p.b.addr(), incrs("k", 3_000)),
            (p.a.addr(), mixed("k", 2_000)),
            (p.b.addr(), mixed("k", 2_000)),
        ]);
        let mut want = 1_000 + 6_000 + 2 * net(&mixed("k", 2_000), "k") as u64;
        assert!(wait_converged(&p.a, &p.b, SETTLE_WITHIN));
        assert_eq!(numbers(&p.a, &p.b, "k"), (Some(want), Some(want)));

        let (survivor, victim) = if victim_is_b {
            (&mut p.a, &mut p.b)
        } else {
            (&mut p.b, &mut p.a)
        };
        victim.kill9();
        assert!(wait_link(survivor, "down", SETTLE_WITHIN));
        // The survivor keeps counting alone.
        storm(vec![(survivor.addr(), incrs("k", 500))]);
        want += 500;
        victim.restart();
        assert!(wait_converged(survivor, victim, SETTLE_WITHIN));
        assert_eq!(numbers(survivor, victim, "k"), (Some(want), Some(want)));
        // Both count again after the restart, concurrently.
        storm(vec![
            (survivor.addr(), incrs("k", 2_000)),
            (victim.addr(), incrs("k", 2_000)),
        ]);
        want += 4_000;
        assert!(wait_converged(survivor, victim, SETTLE_WITHIN));
        assert_eq!(numbers(survivor, victim, "k"), (Some(want), Some(want)));
    }
}

/// `n` meta increments (`ma key`) pipelined over one connection; every reply must be `HD`.
fn run_ma(addr: SocketAddr, key: &'static str, n: usize) {
    let mut c = Conn::connect(addr);
    for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
        c.send(format!("ma {key}\r\n").repeat(chunk.len()).as_bytes());
        for _ in chunk {
            assert_eq!(c.read_line(), b"HD\r\n");
        }
    }
}

/// A meta request whose reply is `VA <len> <flags>` and a data line: both lines.
fn va(c: &mut Conn, req: &str) -> String {
    c.send(req.as_bytes());
    let head = String::from_utf8_lossy(&c.read_line()).into_owned();
    assert!(head.starts_with("VA "), "{req:?}: {head:?}");
    head + &String::from_utf8_lossy(&c.read_line())
}

#[test]
fn meta_arithmetic_counts_on_both_nodes_too() {
    if skip() {
        return;
    }
    let p = Pair::start(&[]);
    let mut ca = p.a.connect();
    // Auto-created by the first `ma` with N, on A.
    assert_eq!(va(&mut ca, "ma m N0 J10 v\r\n"), "VA 2\r\n10\r\n");
    p.assert_converged(SETTLE_WITHIN);
    let handles: Vec<_> = [p.a.addr(), p.b.addr(), p.a.addr(), p.b.addr()]
        .into_iter()
        .map(|addr| thread::spawn(move || run_ma(addr, "m", 3_000)))
        .collect();
    for h in handles {
        h.join().expect("ma client");
    }
    // A decrement through `ma` on B and one through classic `decr` on A.
    assert_eq!(cmd(&mut p.b.connect(), "ma m MD D5\r\n"), "HD\r\n");
    assert!(cmd(&mut ca, "decr m 5\r\n").ends_with("\r\n"));
    p.assert_converged(SETTLE_WITHIN);
    let want = 10 + 12_000 - 10;
    assert_eq!(numbers(&p.a, &p.b, "m"), (Some(want), Some(want)));
    // `ma` replies with the node's value and CAS; once quiet, B shows the same.
    let ra = va(&mut ca, "ma m D0 v c\r\n");
    assert!(ra.ends_with(&format!("\r\n{want}\r\n")), "{ra}");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(va(&mut p.b.connect(), "mg m v c\r\n"), ra);
}
