//! The pair under faults, through the fault-injecting proxy: a partition with writes on
//! both sides heals with a partial resync (or a full one when the backlog overflowed), a
//! black-holed link is detected by heartbeats, a throttled link neither slows clients nor
//! grows memory without bound, and SIGTERM drains pending changes to the peer.

mod common;
mod proxy;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{cmd, free_fixed_port, poll_until, Server};
use proxy::{Mode, Proxy};

/// Two nodes whose links both run through proxies: A dials B through `ab`, B dials A
/// through `ba`; cutting both partitions the pair.
struct Pair {
    a: Server,
    b: Server,
    ab: Proxy,
    ba: Proxy,
}

const FAST: [&str; 4] = ["--repl-heartbeat-ms", "100", "--repl-timeout-ms", "600"];

impl Pair {
    fn start(extra: &[&str]) -> Pair {
        let (ra, rb) = (free_fixed_port(), free_fixed_port());
        let ab = Proxy::start(([127, 0, 0, 1], rb).into());
        let ba = Proxy::start(([127, 0, 0, 1], ra).into());
        let node = |own: u16, via: &Proxy| {
            let own = own.to_string();
            let peer = format!("127.0.0.1:{}", via.port());
            let mut args = vec!["-X", own.as_str(), "-x", peer.as_str()];
            args.extend_from_slice(&FAST);
            args.extend_from_slice(extra);
            Server::start(&args)
        };
        let a = node(ra, &ab);
        let b = node(rb, &ba);
        let p = Pair { a, b, ab, ba };
        assert!(
            p.wait_state("connected", Duration::from_secs(10)),
            "pair never connected"
        );
        p
    }

    fn set_links(&self, m: Mode) {
        self.ab.set(m);
        self.ba.set(m);
    }

    fn wait_state(&self, state: &str, within: Duration) -> bool {
        poll_until(within, || {
            link_state(&self.a) == state && link_state(&self.b) == state
        })
    }

    fn wait_converged(&self, within: Duration) -> bool {
        poll_until(within, || {
            let (ra, rb) = (self.a.stats("repl"), self.b.stats("repl"));
            let idle = |r: &HashMap<String, String>| {
                r.get("repl_pending_keys").map(String::as_str) == Some("0")
                    && r.get("repl_link_state").map(String::as_str) == Some("connected")
            };
            idle(&ra) && idle(&rb) && digest(&self.a) == digest(&self.b)
        })
    }
}

fn link_state(s: &Server) -> String {
    s.stats("repl")
        .get("repl_link_state")
        .cloned()
        .unwrap_or_default()
}

fn stat(s: &Server, name: &str) -> u64 {
    s.stats("repl")
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn digest(s: &Server) -> (String, String) {
    let d = s.stats("digest");
    (
        d.get("digest_items").cloned().unwrap_or_default(),
        d.get("digest").cloned().unwrap_or_default(),
    )
}

/// Every key's (value, CAS) as `gets` shows it on one node.
fn snapshot(s: &Server, keys: &[String]) -> Vec<Option<(String, String)>> {
    let mut c = s.connect();
    keys.iter()
        .map(|k| {
            let r = cmd(&mut c, &format!("gets {k}\r\n"));
            let mut lines = r.split("\r\n");
            let head = lines.next()?;
            let cas = head.strip_prefix("VALUE ")?.split(' ').nth(3)?.to_string();
            Some((lines.next()?.to_string(), cas))
        })
        .collect()
}

fn skip() -> bool {
    common::target_is_memcached()
}

#[test]
fn partition_with_writes_on_both_sides_heals_by_partial_resync() {
    if skip() {
        return;
    }
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    for i in 0..20 {
        assert_eq!(
            cmd(&mut ca, &format!("set gone{i} 0 0 1\r\nx\r\n")),
            "STORED\r\n"
        );
    }
    assert!(p.wait_converged(Duration::from_secs(10)));

    p.set_links(Mode::Cut);
    assert!(
        p.wait_state("down", Duration::from_secs(5)),
        "the cut was not noticed"
    );
    let mut keys = Vec::new();
    for i in 0..50 {
        // Different keys on each side, and the same keys written on both.
        cmd(&mut ca, &format!("set a{i} 0 0 2\r\nA{}\r\n", i % 10));
        cmd(&mut cb, &format!("set b{i} 0 0 2\r\nB{}\r\n", i % 10));
        cmd(&mut ca, &format!("set both{i} 0 0 1\r\na\r\n"));
        cmd(&mut cb, &format!("set both{i} 0 0 1\r\nb\r\n"));
        keys.extend([format!("a{i}"), format!("b{i}"), format!("both{i}")]);
    }
    for i in 0..20 {
        // Deletes on one side of keys both sides hold.
        let (side, key) = if i % 2 == 0 {
            (&mut ca, format!("gone{i}"))
        } else {
            (&mut cb, format!("gone{i}"))
        };
        assert_eq!(cmd(side, &format!("delete {key}\r\n")), "DELETED\r\n");
        keys.push(key);
    }
    let before = stat(&p.a, "repl_resyncs_partial") + stat(&p.b, "repl_resyncs_partial");
    p.set_links(Mode::Pass);
    assert!(
        p.wait_converged(Duration::from_secs(15)),
        "no convergence after healing"
    );

    let (sa, sb) = (snapshot(&p.a, &keys), snapshot(&p.b, &keys));
    assert_eq!(sa, sb, "nodes disagree on some key");
    for (k, v) in keys.iter().zip(&sa) {
        if k.starts_with("gone") {
            assert!(v.is_none(), "{k} was deleted and came back");
        } else {
            assert!(v.is_some(), "{k} was lost");
        }
    }
    let after = stat(&p.a, "repl_resyncs_partial") + stat(&p.b, "repl_resyncs_partial");
    assert!(after > before, "no partial resync counted");
}

/// A pair with a 1 MiB backlog, partitioned, after 20,001 sets on A: far more pending
/// keys than the backlog holds, so only a full copy (about 1.2 MB) can repair B.
fn overflowed_pair() -> Pair {
    let p = Pair::start(&["--repl-backlog-mb", "1", "-v"]);
    p.set_links(Mode::Cut);
    assert!(p.wait_state("down", Duration::from_secs(5)));
    let mut ca = p.a.connect();
    let mut batch = String::new();
    for i in 0..20_000 {
        batch.push_str(&format!(
            "set {}{i:06} 0 0 1 noreply\r\nv\r\n",
            "k".repeat(40)
        ));
    }
    ca.send(batch.as_bytes());
    assert_eq!(cmd(&mut ca, "set last 0 0 1\r\nv\r\n"), "STORED\r\n");
    p
}

#[test]
fn an_overflowing_backlog_heals_by_full_exchange() {
    if skip() {
        return;
    }
    let p = overflowed_pair();
    // Some pending keys on B too.
    let mut cb = p.b.connect();
    assert_eq!(cmd(&mut cb, "set onb 0 0 1\r\nv\r\n"), "STORED\r\n");
    let before = stat(&p.a, "repl_resyncs_full") + stat(&p.b, "repl_resyncs_full");
    p.set_links(Mode::Pass);
    assert!(
        p.wait_converged(Duration::from_secs(20)),
        "no convergence after overflow: A {:?} {:?}\nB {:?} {:?}\nA log:\n{}\nB log:\n{}",
        digest(&p.a),
        p.a.stats("repl"),
        digest(&p.b),
        p.b.stats("repl"),
        p.a.stderr_text(),
        p.b.stderr_text()
    );
    assert_eq!(digest(&p.a).0, "20002");
    let after = stat(&p.a, "repl_resyncs_full") + stat(&p.b, "repl_resyncs_full");
    assert!(after > before, "no full resync counted");
}

#[test]
fn a_full_copy_cut_off_part_way_is_sent_again_in_full() {
    if skip() {
        return;
    }
    let p = overflowed_pair();
    // A slow link: A's copy trickles to B while B's own small copy and its
    // acknowledgements reach A at once. Cut the link once part of A's copy has arrived.
    p.set_links(Mode::Throttle(256 * 1024));
    assert!(
        poll_until(Duration::from_secs(20), || stat(
            &p.b,
            "repl_received_items"
        ) >= 3_000),
        "A's copy never started: A {:?}\nB {:?}",
        p.a.stats("repl"),
        p.b.stats("repl")
    );
    p.set_links(Mode::Cut);
    assert!(p.wait_state("down", Duration::from_secs(5)));
    assert!(
        stat(&p.b, "repl_received_items") < 20_000,
        "the copy was not cut off"
    );
    p.set_links(Mode::Pass);
    assert!(
        p.wait_converged(Duration::from_secs(20)),
        "no convergence after the cut copies: A {:?} {:?}\nB {:?} {:?}\nA log:\n{}",
        digest(&p.a),
        p.a.stats("repl"),
        digest(&p.b),
        p.b.stats("repl"),
        p.a.stderr_text()
    );
    assert_eq!(digest(&p.b).0, "20001");
}

#[test]
fn a_black_holed_link_is_detected_by_heartbeats() {
    if skip() {
        return;
    }
    let p = Pair::start(&[]);
    let started = Instant::now();
    p.set_links(Mode::BlackHole);
    // Existing connections keep running but carry nothing: only the peer timeout (600 ms)
    // can notice. Allow generous scheduling slack on a loaded 2-core machine.
    assert!(
        p.wait_state("down", Duration::from_secs(5)),
        "silence not detected"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "down before any timeout could pass"
    );
    p.set_links(Mode::Pass);
    assert!(
        p.wait_state("connected", Duration::from_secs(10)),
        "link did not come back"
    );
}

/// Changes written to a link that swallows them (the link still looks up) were sent but
/// never acknowledged: when the silence takes the link down they must be sent again.
#[test]
fn changes_sent_into_a_black_hole_are_sent_again() {
    if skip() {
        return;
    }
    let p = Pair::start(&[]);
    let mut ca = p.a.connect();
    p.set_links(Mode::BlackHole);
    let mut keys = Vec::new();
    for i in 0..300 {
        assert_eq!(
            cmd(
                &mut ca,
                &format!("set hole{i} 0 0 3\r\nv{:02}\r\n", i % 100)
            ),
            "STORED\r\n"
        );
        keys.push(format!("hole{i}"));
    }
    assert!(
        p.wait_state("down", Duration::from_secs(5)),
        "silence not detected"
    );
    p.set_links(Mode::Pass);
    assert!(
        p.wait_converged(Duration::from_secs(15)),
        "no convergence after the link came back"
    );
    let (sa, sb) = (snapshot(&p.a, &keys), snapshot(&p.b, &keys));
    assert!(sa.iter().all(Option::is_some));
    assert_eq!(sa, sb, "B lacks changes that went into the black hole");
}

#[test]
fn a_throttled_link_does_not_slow_clients_or_grow_memory() {
    if skip() {
        return;
    }
    let p = Pair::start(&[]);
    p.set_links(Mode::Throttle(32 * 1024));
    let mut ca = p.a.connect();
    let value = "v".repeat(200);
    let mut worst = Duration::ZERO;
    let mut latencies = Vec::new();
    // About 1.2 MB of writes against a 32 KB/s link: replication falls far behind.
    for i in 0..4000 {
        let t = Instant::now();
        assert_eq!(
            cmd(&mut ca, &format!("set t{i} 0 0 200\r\n{value}\r\n")),
            "STORED\r\n"
        );
        let d = t.elapsed();
        worst = worst.max(d);
        latencies.push(d);
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    // Loose bounds: a worker never waits for replication, so even the worst request is far
    // below what a blocked write (seconds at this rate) would take.
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    assert!(worst < Duration::from_millis(500), "worst {worst:?}");
    let behind = stat(&p.a, "repl_pending_keys") + stat(&p.a, "repl_unacked_keys");
    assert!(
        behind > 0,
        "the link was not the bottleneck: {:?}",
        p.a.stats("repl")
    );
    // Pending memory is bounded by the backlog (64 MiB by default) and here far below it.
    assert!(stat(&p.a, "repl_pending_bytes") < 64 << 20);
    p.set_links(Mode::Pass);
    assert!(p.wait_converged(Duration::from_secs(20)));
    assert_eq!(digest(&p.b).0, "4000");
}

#[test]
fn sigterm_drains_pending_changes_to_the_peer() {
    if skip() {
        return;
    }
    let mut p = Pair::start(&[]);
    p.set_links(Mode::Throttle(64 * 1024));
    let mut ca = p.a.connect();
    let value = "d".repeat(100);
    let mut batch = String::new();
    for i in 0..3000 {
        batch.push_str(&format!("set drain{i} 0 0 100 noreply\r\n{value}\r\n"));
    }
    ca.send(batch.as_bytes());
    assert_eq!(cmd(&mut ca, "set drain_last 0 0 1\r\nz\r\n"), "STORED\r\n");
    drop(ca);
    p.a.terminate();
    let code = p.a.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "SIGTERM must exit 0");
    let mut cb = p.b.connect();
    assert_eq!(
        digest(&p.b).0,
        "3001",
        "the peer lost writes made before SIGTERM"
    );
    assert_eq!(
        cmd(&mut cb, "get drain_last\r\n"),
        "VALUE drain_last 0 1\r\nz\r\nEND\r\n"
    );
}
