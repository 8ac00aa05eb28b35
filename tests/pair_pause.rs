//! A frozen peer (SIGSTOP) is reported `down` within the peer timeout; writes made meanwhile
//! reach it once it runs again (SIGCONT), and the link comes back by itself.

mod common;
mod proxy;

use std::time::{Duration, Instant};

use common::cmd;
use common::pair::{poll, snapshot, wait_link, Pair, SETTLE_WITHIN};
use proxy::{Mode, Proxy};

#[test]
fn a_paused_peer_is_detected_and_catches_up_after_resume() {
    let mut p = Pair::start(&[]);
    let mut ca = p.a.connect();
    for i in 0..20 {
        assert_eq!(
            cmd(&mut ca, &format!("set pre{i} 0 0 3\r\npre\r\n")),
            "STORED\r\n"
        );
    }
    p.assert_converged(SETTLE_WITHIN);

    let boots_before = p.b.repl_u64("repl_bootstraps");
    let resyncs_before = p.a.repl_u64("repl_resyncs_partial");
    p.b.pause();
    let paused = Instant::now();
    // The timeout is 600 ms; the margin covers scheduling on a loaded machine.
    assert!(
        poll(Duration::from_secs(4), || p.a.link_state().as_deref()
            == Some("down")),
        "A still says {:?} {:?} after B froze\n{}",
        p.a.link_state(),
        paused.elapsed(),
        p.a.log()
    );
    let noticed = paused.elapsed();
    assert!(
        noticed >= Duration::from_millis(400),
        "down after {noticed:?}, before the 600 ms timeout could pass"
    );

    // A keeps serving alone, and what it takes is owed to B.
    for i in 0..100 {
        assert_eq!(
            cmd(&mut ca, &format!("set mid{i} 4 0 3\r\nmid\r\n")),
            "STORED\r\n"
        );
    }
    for i in 0..10 {
        assert_eq!(cmd(&mut ca, &format!("delete pre{i}\r\n")), "DELETED\r\n");
    }
    let pending: u64 = p.a.repl_u64("repl_pending_keys");
    assert!(pending >= 110, "A records only {pending} changes for B");

    p.b.resume();
    assert!(
        wait_link(&p.a, "connected", SETTLE_WITHIN) && wait_link(&p.b, "connected", SETTLE_WITHIN),
        "link did not come back: A {:?} B {:?}\n{}",
        p.a.link_state(),
        p.b.link_state(),
        p.logs()
    );
    p.assert_converged(SETTLE_WITHIN);
    let keys: Vec<String> = (0..100)
        .map(|i| format!("mid{i}"))
        .chain((0..20).map(|i| format!("pre{i}")))
        .collect();
    let (sa, sb) = (snapshot(&p.a, &keys), snapshot(&p.b, &keys));
    assert_eq!(sa, sb);
    assert!(sb[..100]
        .iter()
        .all(|g| g.as_ref().map(|g| g.flags) == Some(4)));
    assert!(
        sb[100..110].iter().all(Option::is_none),
        "deletes made during the pause lost"
    );
    assert!(sb[110..].iter().all(Option::is_some));
    assert!(p.a.repl_u64("repl_reconnects") >= 1);
    // B was never restarted: no second copy; the changes came as a partial resync.
    assert_eq!(p.b.repl_u64("repl_bootstraps"), boots_before);
    assert!(p.a.repl_u64("repl_resyncs_partial") > resyncs_before);
}

/// A node frozen in the middle of its start-up copy: its peer gives up on the link, and once
/// the node runs again it restarts the copy, gets everything (writes made meanwhile too), and
/// only then serves clients. The link runs through throttled proxies so the copy is surely
/// still going when the node is frozen.
#[test]
fn a_node_paused_during_its_copy_restarts_the_copy_and_converges() {
    const ITEMS: usize = 20_000;
    let mut p = common::pair::Pair::new(&[]);
    let ab = Proxy::start(([127, 0, 0, 1], p.b.repl_port).into());
    let ba = Proxy::start(([127, 0, 0, 1], p.a.repl_port).into());
    p.a.peer_repl_port = ab.port();
    p.b.peer_repl_port = ba.port();
    p.a.start();
    common::pair::load(&p.a, "boot", ITEMS, b"0123456789abcdef0123456789abcdef");
    // About 1.5 MB of copy at 256 KB/s: several seconds, while a heartbeat still gets
    // through every 20 ms window.
    ab.set(Mode::Throttle(256 * 1024));
    ba.set(Mode::Throttle(256 * 1024));
    p.b.spawn();
    assert!(
        poll(Duration::from_secs(10), || p
            .b
            .log()
            .contains("-> bootstrapping")),
        "B never started its copy:\n{}",
        p.logs()
    );
    p.b.pause();
    assert!(
        p.b.try_connect().is_err(),
        "B accepted a client in the middle of its copy"
    );
    assert!(
        poll(Duration::from_secs(4), || p.a.link_state().as_deref()
            == Some("down")),
        "A did not give up on the frozen B: {:?}\n{}",
        p.a.link_state(),
        p.a.log()
    );
    let mut ca = p.a.connect();
    for i in 0..50 {
        assert_eq!(
            cmd(&mut ca, &format!("set during{i} 0 0 1\r\nd\r\n")),
            "STORED\r\n"
        );
    }
    assert_eq!(cmd(&mut ca, "delete boot7\r\n"), "DELETED\r\n");
    ab.set(Mode::Pass);
    ba.set(Mode::Pass);
    p.b.resume();
    if let Err(e) = p.b.wait_ready(common::pair::READY_WITHIN) {
        panic!("{}\n{}", e.why, p.a.log());
    }
    p.assert_connected(SETTLE_WITHIN);
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(common::pair::digest(&p.b).0, ITEMS as u64 - 1 + 50);
    assert!(p.b.repl_u64("repl_bootstraps") >= 1);
    let mut cb = p.b.connect();
    assert_eq!(
        cmd(&mut cb, "get during49\r\n"),
        "VALUE during49 0 1\r\nd\r\nEND\r\n"
    );
    assert_eq!(cmd(&mut cb, "get boot7\r\n"), "END\r\n");
}
