//! The replication port does not trust whoever connects: without the shared secret (or with
//! a wrong or replayed proof, or garbage) a connection gets no item and applies none, and a
//! stranger's connection does not disturb the real link.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{cmd, free_fixed_port, free_port, poll_until, Server};
use repcached::protocol::repl::{decode, encode, Frame, NONCE_LEN, PROTOCOL_VERSION};
use repcached::replication::auth::{self, Side};

const SECRET: &[u8] = b"correct horse battery staple";

fn secret_file(name: &str, secret: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("repcached-test-{}-{name}", std::process::id()));
    std::fs::write(&path, secret).expect("write secret");
    path.display().to_string()
}

/// A node whose peer never answers, so it serves alone at once; returns it and its
/// replication address.
fn lone_node(extra: &[&str]) -> (Server, SocketAddr) {
    let repl = free_fixed_port();
    let nowhere = format!("127.0.0.1:{}", free_port());
    let repl_s = repl.to_string();
    let mut args = vec![
        "-X",
        &repl_s,
        "-x",
        &nowhere,
        "--repl-heartbeat-ms",
        "100",
        "--repl-timeout-ms",
        "600",
    ];
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    (s, SocketAddr::from(([127, 0, 0, 1], repl)))
}

/// A hand-driven peer connection that records every frame the node sends it.
struct Fake {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Seen {
    run_id: u64,
    nonce: [u8; NONCE_LEN],
    data_frames: usize,
    closed: bool,
}

impl Fake {
    fn connect(addr: SocketAddr) -> Fake {
        let stream = TcpStream::connect(addr).expect("connect to the replication port");
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        Fake {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, f: &Frame) {
        let mut out = Vec::new();
        encode(f, &mut out);
        let _ = self.stream.write_all(&out);
    }

    fn send_raw(&mut self, b: &[u8]) {
        let _ = self.stream.write_all(b);
    }

    /// Reads for `window`, then reports the node's hello and how many data frames came.
    fn observe(&mut self, window: Duration) -> Seen {
        let until = Instant::now() + window;
        let mut closed = false;
        let mut chunk = [0u8; 4096];
        while Instant::now() < until && !closed {
            match self.stream.read(&mut chunk) {
                Ok(0) => closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => closed = true,
            }
        }
        let mut seen = Seen {
            run_id: 0,
            nonce: [0; NONCE_LEN],
            data_frames: 0,
            closed,
        };
        let mut at = 0;
        while let Ok(Some((f, used))) = decode(&self.buf[at..]) {
            match f {
                Frame::Hello { run_id, nonce, .. } => {
                    seen.run_id = run_id;
                    seen.nonce = nonce;
                }
                Frame::Auth { .. } | Frame::Heartbeat { .. } => {}
                _ => seen.data_frames += 1,
            }
            at += used;
        }
        seen
    }
}

fn hello(run_id: u64, nonce: [u8; NONCE_LEN], auth: bool, wants_bootstrap: bool) -> Frame<'static> {
    Frame::Hello {
        version: PROTOCOL_VERSION,
        node_id: 77,
        run_id,
        wants_bootstrap,
        auth,
        nonce,
        cluster: b"repcached",
    }
}

fn evil_state() -> Frame<'static> {
    Frame::State {
        version: u64::MAX - 1,
        flags: 0,
        exptime: 0,
        meta: 0,
        key: b"evil",
        counter: None,
        value: b"pwned",
    }
}

fn assert_untouched(node: &Server) {
    let mut c = node.connect();
    assert_eq!(
        cmd(&mut c, "get evil\r\n"),
        "END\r\n",
        "a stranger's state was applied"
    );
    assert_eq!(cmd(&mut c, "get k\r\n"), "VALUE k 0 6\r\nsecret\r\nEND\r\n");
}

fn node_with_data(extra: &[&str]) -> (Server, SocketAddr) {
    let (s, repl) = lone_node(extra);
    let mut c = s.connect();
    assert_eq!(cmd(&mut c, "set k 0 0 6\r\nsecret\r\n"), "STORED\r\n");
    (s, repl)
}

#[test]
fn strangers_get_nothing_and_change_nothing() {
    if common::target_is_memcached() {
        return; // replication is repcached\'s own
    }
    let file = secret_file("strangers", SECRET);
    let (node, repl) = node_with_data(&["--repl-secret-file", &file]);

    // Garbage that is not a frame at all.
    let mut f = Fake::connect(repl);
    f.send_raw(b"get k\r\n");
    let seen = f.observe(Duration::from_millis(500));
    assert!(seen.closed, "garbage must close the connection");
    assert_eq!(seen.data_frames, 0);

    // A hello without authentication, asking for a full copy, then a state anyway.
    let mut f = Fake::connect(repl);
    f.send(&hello(1, [1; NONCE_LEN], false, true));
    f.send(&Frame::BootstrapReq);
    f.send(&evil_state());
    let seen = f.observe(Duration::from_millis(500));
    assert!(seen.closed);
    assert_eq!(
        seen.data_frames, 0,
        "no data to a peer that does not authenticate"
    );

    // A hello with authentication but a proof made with the wrong secret.
    let mut f = Fake::connect(repl);
    let mine = [2; NONCE_LEN];
    f.send(&hello(2, mine, true, true));
    let theirs = f.observe(Duration::from_millis(200));
    let me = Side {
        run_id: 2,
        nonce: mine,
    };
    let node_side = Side {
        run_id: theirs.run_id,
        nonce: theirs.nonce,
    };
    f.send(&Frame::Auth {
        proof: auth::proof(b"wrong secret", me, node_side),
    });
    f.send(&Frame::BootstrapReq);
    f.send(&evil_state());
    let seen = f.observe(Duration::from_millis(500));
    assert!(seen.closed, "a wrong proof must close the connection");
    assert_eq!(seen.data_frames, 0);

    // Data before any handshake.
    let mut f = Fake::connect(repl);
    f.send(&evil_state());
    let seen = f.observe(Duration::from_millis(500));
    assert!(seen.closed);
    assert_eq!(seen.data_frames, 0);

    assert_untouched(&node);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_replayed_proof_is_refused() {
    if common::target_is_memcached() {
        return; // replication is repcached\'s own
    }
    let file = secret_file("replay", SECRET);
    let (node, repl) = node_with_data(&["--repl-secret-file", &file]);
    // A genuine handshake, as an eavesdropper would have recorded it.
    let mine = [5; NONCE_LEN];
    let mut genuine = Fake::connect(repl);
    genuine.send(&hello(5, mine, true, false));
    let theirs = genuine.observe(Duration::from_millis(200));
    let proof = auth::proof(
        SECRET,
        Side {
            run_id: 5,
            nonce: mine,
        },
        Side {
            run_id: theirs.run_id,
            nonce: theirs.nonce,
        },
    );
    genuine.send(&Frame::Auth { proof });
    drop(genuine);
    // The same bytes on a new connection: the node's nonce is new, the proof is not.
    let mut replay = Fake::connect(repl);
    replay.send(&hello(5, mine, true, true));
    replay.send(&Frame::Auth { proof });
    replay.send(&Frame::BootstrapReq);
    replay.send(&evil_state());
    let seen = replay.observe(Duration::from_millis(500));
    assert!(seen.closed, "a replayed proof must close the connection");
    assert_eq!(seen.data_frames, 0);
    assert_untouched(&node);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn the_right_secret_gets_a_copy() {
    if common::target_is_memcached() {
        return; // replication is repcached\'s own
    }
    // The other tests would pass against a node that refuses everyone: this one shows the
    // same fake peer is served once it proves the secret.
    let file = secret_file("right", SECRET);
    let (_node, repl) = node_with_data(&["--repl-secret-file", &file]);
    let mine = [9; NONCE_LEN];
    let mut f = Fake::connect(repl);
    f.send(&hello(9, mine, true, true));
    let theirs = f.observe(Duration::from_millis(200));
    let proof = auth::proof(
        SECRET,
        Side {
            run_id: 9,
            nonce: mine,
        },
        Side {
            run_id: theirs.run_id,
            nonce: theirs.nonce,
        },
    );
    f.send(&Frame::Auth { proof });
    f.send(&Frame::BootstrapReq);
    let mut data = 0;
    assert!(
        poll_until(Duration::from_secs(5), || {
            data = f.observe(Duration::from_millis(50)).data_frames;
            data >= 3
        }),
        "expected BootstrapBegin, the item and BootstrapEnd, got {data} data frames"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_stranger_does_not_disturb_the_real_link() {
    if common::target_is_memcached() {
        return; // replication is repcached\'s own
    }
    let file = secret_file("pair", SECRET);
    let (ra, rb) = (free_fixed_port(), free_fixed_port());
    let (ra_s, rb_s) = (ra.to_string(), rb.to_string());
    let (peer_a, peer_b) = (format!("127.0.0.1:{rb}"), format!("127.0.0.1:{ra}"));
    let common_args = [
        "--repl-secret-file",
        &file,
        "--repl-heartbeat-ms",
        "100",
        "--repl-timeout-ms",
        "600",
    ];
    let mut args_a = vec!["-X", &ra_s, "-x", &peer_a];
    args_a.extend_from_slice(&common_args);
    let mut args_b = vec!["-X", &rb_s, "-x", &peer_b];
    args_b.extend_from_slice(&common_args);
    let a = Server::start(&args_a);
    let b = Server::start(&args_b);
    let connected = |s: &Server| {
        s.stats("repl").get("repl_link_state").map(String::as_str) == Some("connected")
    };
    assert!(poll_until(Duration::from_secs(10), || connected(&a) && connected(&b)));
    let reconnects = a.stats("repl").get("repl_reconnects").cloned();

    // Strangers knock on A's replication port while the link is up.
    let repl_a = SocketAddr::from(([127, 0, 0, 1], ra));
    for attempt in 0..3u64 {
        let mut f = Fake::connect(repl_a);
        f.send(&hello(
            1000 + attempt,
            [attempt as u8; NONCE_LEN],
            attempt != 0,
            true,
        ));
        f.send(&evil_state());
        let seen = f.observe(Duration::from_millis(300));
        assert_eq!(seen.data_frames, 0);
    }
    let mut f = Fake::connect(repl_a);
    f.send_raw(&[0xff; 64]);
    assert_eq!(f.observe(Duration::from_millis(300)).data_frames, 0);

    // The real link is the same one and still carries writes.
    assert!(connected(&a) && connected(&b));
    assert_eq!(a.stats("repl").get("repl_reconnects").cloned(), reconnects);
    let mut ca = a.connect();
    assert_eq!(cmd(&mut ca, "set after 0 0 2\r\nok\r\n"), "STORED\r\n");
    let mut cb = b.connect();
    assert!(poll_until(Duration::from_secs(5), || cmd(
        &mut cb,
        "get after\r\n"
    )
        == "VALUE after 0 2\r\nok\r\nEND\r\n"));
    assert_eq!(cmd(&mut cb, "get evil\r\n"), "END\r\n");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn one_side_without_the_secret_never_links() {
    if common::target_is_memcached() {
        return; // replication is repcached\'s own
    }
    let file = secret_file("half", SECRET);
    let (ra, rb) = (free_fixed_port(), free_fixed_port());
    let (ra_s, rb_s) = (ra.to_string(), rb.to_string());
    let (peer_a, peer_b) = (format!("127.0.0.1:{rb}"), format!("127.0.0.1:{ra}"));
    let a = Server::start(&["-X", &ra_s, "-x", &peer_a, "--repl-secret-file", &file]);
    let mut ca = a.connect();
    assert_eq!(cmd(&mut ca, "set k 0 0 6\r\nsecret\r\n"), "STORED\r\n");
    let b = Server::start(&["-X", &rb_s, "-x", &peer_b, "--repl-bootstrap-timeout", "1"]);
    let mut cb = b.connect();
    assert_eq!(
        cmd(&mut cb, "get k\r\n"),
        "END\r\n",
        "B without the secret got A's data"
    );
    assert_ne!(
        a.stats("repl").get("repl_link_state").map(String::as_str),
        Some("connected")
    );
    let _ = std::fs::remove_file(&file);
}
