//! Pair harness for the replication tests: two repcached nodes on loopback that are each
//! other's peer, each restartable on the same ports, killable with SIGKILL and pausable with
//! SIGSTOP/SIGCONT, plus polling helpers (link state, digests, convergence) with deadlines.
//!
//! Unlike `Server::start`, a node can be spawned without waiting: a node that copies its
//! peer's data keeps its client port closed until the copy is done, and some tests observe
//! exactly that before they wait for readiness.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{find, free_fixed_port, running_as_root, Conn};

/// Heartbeat and peer timeout short enough that a lost peer is noticed in well under a second.
pub const FAST: [&str; 4] = ["--repl-heartbeat-ms", "100", "--repl-timeout-ms", "600"];

/// Upper bound for a node to open its client port (start-up copies included). Only a broken
/// server ever waits this long; a healthy one is ready in milliseconds to a second or two.
pub const READY_WITHIN: Duration = Duration::from_secs(20);

/// Upper bound for the link to come up or the nodes to converge in these small tests.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(15);

/// How long one stats probe may take (a stopped node never answers).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn repcached() -> &'static str {
    env!("CARGO_BIN_EXE_repcached")
}

/// Why a node did not become ready.
#[derive(Debug)]
pub struct NotReady {
    /// The node lost a port to another process: worth retrying with other ports.
    pub port_lost: bool,
    pub why: String,
}

/// One repcached process of a pair, with its ports fixed for its whole life so it can be
/// restarted where its peer expects it.
pub struct Node {
    pub name: &'static str,
    pub port: u16,
    pub repl_port: u16,
    pub peer_repl_port: u16,
    pub extra: Vec<String>,
    child: Option<Child>,
    /// stderr of every incarnation, each introduced by a marker line.
    log: Arc<Mutex<Vec<u8>>>,
    starts: u32,
    stopped: bool,
}

impl Node {
    /// A node (not started) serving clients on `port`, listening for its peer on `repl_port`
    /// and dialling the peer on `peer_repl_port`.
    pub fn new(
        name: &'static str,
        port: u16,
        repl_port: u16,
        peer_repl_port: u16,
        extra: &[&str],
    ) -> Node {
        Node {
            name,
            port,
            repl_port,
            peer_repl_port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            starts: 0,
            stopped: false,
        }
    }

    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-l".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-X".into(),
            self.repl_port.to_string(),
            "-x".into(),
            format!("127.0.0.1:{}", self.peer_repl_port),
            "-v".into(),
        ];
        if running_as_root() {
            a.push("-u".into());
            a.push("root".into());
        }
        a.extend(FAST.iter().map(|s| s.to_string()));
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Starts the process and returns at once, without waiting for it to serve.
    pub fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "node {} is already running",
            self.name
        );
        self.starts += 1;
        if let Ok(mut l) = self.log.lock() {
            l.extend_from_slice(
                format!("--- {} start #{} ---\n", self.name, self.starts).as_bytes(),
            );
        }
        let mut child = Command::new(repcached())
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", repcached()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&self.log);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.extend_from_slice(&buf[..n]);
                    }
                }
            });
        }
        self.child = Some(child);
        self.stopped = false;
    }

    /// Waits until this process serves clients (answers `stats` with its own pid).
    pub fn wait_ready(&mut self, within: Duration) -> Result<(), NotReady> {
        let deadline = Instant::now() + within;
        let pid = self.pid();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                // The stderr reader may still be draining what the process wrote last.
                let drain = Instant::now() + Duration::from_millis(500);
                while Instant::now() < drain && !self.log().contains("ddress already in use") {
                    thread::sleep(Duration::from_millis(10));
                }
                let log = self.log();
                return Err(NotReady {
                    port_lost: log.contains("ddress already in use"),
                    why: format!("{} exited with {status}; log:\n{log}", self.name),
                });
            }
            if let Ok(s) = self.try_connect() {
                match stats_over(s, "") {
                    Some(st) if st.get("pid").and_then(|p| p.parse().ok()) == Some(pid) => {
                        return Ok(())
                    }
                    Some(_) => {
                        return Err(NotReady {
                            port_lost: true,
                            why: format!("port {} answered by another process", self.port),
                        })
                    }
                    // Accepted and closed, or too slow: look again.
                    None => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(NotReady {
                    port_lost: false,
                    why: format!(
                        "{} not serving on {} within {within:?}; log:\n{}",
                        self.name,
                        self.addr(),
                        self.log()
                    ),
                });
            }
            // Poll interval of a readiness wait bounded by the deadline above.
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Spawns the node and waits until it serves; panics with its log if it does not.
    pub fn start(&mut self) {
        self.spawn();
        if let Err(e) = self.wait_ready(READY_WITHIN) {
            panic!("{}", e.why);
        }
    }

    /// Starts a node that ran before, on the same ports.
    pub fn restart(&mut self) {
        self.start();
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("node {} is not running", self.name))
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A raw connect to the client port with a short timeout; `ConnectionRefused` while the
    /// node is not serving.
    pub fn try_connect(&self) -> std::io::Result<TcpStream> {
        TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500))
    }

    /// A client connection; panics if the node does not accept.
    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr())
    }

    /// SIGKILL by PID and reap: the node dies without a chance to send anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped = false;
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} {} failed", self.pid());
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn pause(&mut self) {
        self.signal("-STOP");
        self.stopped = true;
    }

    /// SIGCONT after `pause`.
    pub fn resume(&mut self) {
        self.signal("-CONT");
        self.stopped = false;
    }

    /// `stats [sub]`, or None when the node does not answer (not serving, stopped, dead).
    pub fn try_stats(&self, sub: &str) -> Option<HashMap<String, String>> {
        stats_over(self.try_connect().ok()?, sub)
    }

    /// `stats [sub]`; panics with the node's log when it does not answer.
    pub fn stats(&self, sub: &str) -> HashMap<String, String> {
        self.try_stats(sub).unwrap_or_else(|| {
            panic!(
                "{} does not answer `stats {sub}`; log:\n{}",
                self.name,
                self.log()
            )
        })
    }

    /// A numeric `stats repl` field.
    pub fn repl_u64(&self, name: &str) -> u64 {
        let st = self.stats("repl");
        let v = st
            .get(name)
            .unwrap_or_else(|| panic!("{}: stats repl has no {name}: {st:?}", self.name));
        v.parse()
            .unwrap_or_else(|_| panic!("{}: {name} = {v:?} is not a u64", self.name))
    }

    /// `repl_link_state`, or None when the node does not answer.
    pub fn link_state(&self) -> Option<String> {
        self.try_stats("repl")?.get("repl_link_state").cloned()
    }

    /// Everything every incarnation of this node wrote to stderr.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Child::kill is SIGKILL to exactly this PID; it ends a stopped process too.
        self.kill9();
        let log = self.log();
        if log.contains("panicked at") && !thread::panicking() {
            panic!("node {} panicked:\n{log}", self.name);
        }
    }
}

/// Sends `stats [sub]` on `s` and parses the reply; None on any failure or timeout.
fn stats_over(mut s: TcpStream, sub: &str) -> Option<HashMap<String, String>> {
    s.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let req = if sub.is_empty() {
        "stats\r\n".to_string()
    } else {
        format!("stats {sub}\r\n")
    };
    s.write_all(req.as_bytes()).ok()?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while find(&got, b"END\r\n").is_none() {
        if Instant::now() >= deadline {
            return None;
        }
        match s.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&got);
    Some(
        text.lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap_or((l, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
    )
}

/// The order in which `Pair::start_in` starts the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// A serves first (alone), then B starts and copies from A.
    AThenB,
    /// B serves first, then A copies from B.
    BThenA,
    /// Both processes are spawned before either is waited for.
    Together,
}

/// Two nodes that are each other's peer.
pub struct Pair {
    pub a: Node,
    pub b: Node,
}

impl Pair {
    /// Both nodes on fresh free ports, neither started.
    pub fn new(extra: &[&str]) -> Pair {
        let (pa, pb, ra, rb) = (
            free_fixed_port(),
            free_fixed_port(),
            free_fixed_port(),
            free_fixed_port(),
        );
        Pair {
            a: Node::new("A", pa, ra, rb, extra),
            b: Node::new("B", pb, rb, ra, extra),
        }
    }

    /// A, then B; returns once both report `connected`.
    pub fn start(extra: &[&str]) -> Pair {
        Pair::start_in(Order::AThenB, extra)
    }

    /// Starts both nodes in `order` and waits until both serve and report `connected`.
    /// A port lost to another process between choosing and binding it means new ports and
    /// another try.
    pub fn start_in(order: Order, extra: &[&str]) -> Pair {
        let mut last = String::new();
        for _attempt in 0..5 {
            let mut p = Pair::new(extra);
            let res = match order {
                Order::AThenB => {
                    p.a.spawn();
                    p.a.wait_ready(READY_WITHIN).and_then(|()| {
                        p.b.spawn();
                        p.b.wait_ready(READY_WITHIN)
                    })
                }
                Order::BThenA => {
                    p.b.spawn();
                    p.b.wait_ready(READY_WITHIN).and_then(|()| {
                        p.a.spawn();
                        p.a.wait_ready(READY_WITHIN)
                    })
                }
                Order::Together => {
                    p.a.spawn();
                    p.b.spawn();
                    p.a.wait_ready(READY_WITHIN)
                        .and_then(|()| p.b.wait_ready(READY_WITHIN))
                }
            };
            match res {
                Ok(()) => {
                    p.assert_connected(SETTLE_WITHIN);
                    return p;
                }
                Err(e) if e.port_lost => last = e.why,
                Err(e) => panic!("{}\n{}", e.why, p.logs()),
            }
        }
        panic!("pair did not start: {last}");
    }

    /// Both nodes' logs, for failure messages.
    pub fn logs(&self) -> String {
        format!("{}\n{}", self.a.log(), self.b.log())
    }

    /// Panics (with both logs) unless both nodes report `connected` within `within`.
    pub fn assert_connected(&self, within: Duration) {
        let ok = poll(within, || {
            self.a.link_state().as_deref() == Some("connected")
                && self.b.link_state().as_deref() == Some("connected")
        });
        assert!(
            ok,
            "link not connected within {within:?}: A {:?}, B {:?}\n{}",
            self.a.link_state(),
            self.b.link_state(),
            self.logs()
        );
    }

    /// Panics (with both nodes' digests, repl stats and logs) unless they converge.
    pub fn assert_converged(&self, within: Duration) {
        if wait_converged(&self.a, &self.b, within) {
            return;
        }
        panic!(
            "no convergence within {within:?}\nA digest {:?} repl {:?}\nB digest {:?} repl {:?}\n{}",
            self.a.try_stats("digest"),
            self.a.try_stats("repl"),
            self.b.try_stats("digest"),
            self.b.try_stats("repl"),
            self.logs()
        );
    }
}

/// Polls `f` until it holds or `within` passes (the harness's one polling loop).
pub fn poll(within: Duration, f: impl FnMut() -> bool) -> bool {
    super::poll_until(within, f)
}

/// Waits until `node` reports `repl_link_state` = `state`.
pub fn wait_link(node: &Node, state: &str, within: Duration) -> bool {
    poll(within, || node.link_state().as_deref() == Some(state))
}

/// (`digest_items`, `digest`) of `stats digest`, or None when the node does not answer.
pub fn try_digest(node: &Node) -> Option<(u64, String)> {
    let d = node.try_stats("digest")?;
    Some((
        d.get("digest_items")?.parse().ok()?,
        d.get("digest")?.clone(),
    ))
}

/// (`digest_items`, `digest`) of `stats digest`.
pub fn digest(node: &Node) -> (u64, String) {
    try_digest(node).unwrap_or_else(|| panic!("{}: no digest; log:\n{}", node.name, node.log()))
}

/// True once both nodes have nothing left to send and hold the same items at the same
/// versions.
pub fn wait_converged(a: &Node, b: &Node, within: Duration) -> bool {
    let idle = |n: &Node| {
        n.try_stats("repl")
            .and_then(|r| r.get("repl_pending_keys").cloned())
            .as_deref()
            == Some("0")
    };
    poll(within, || {
        idle(a) && idle(b) && {
            let (da, db) = (try_digest(a), try_digest(b));
            da.is_some() && da == db
        }
    })
}

/// Waits until `node` holds no change its peer has not acknowledged (`repl_unacked_keys`
/// is 0; a server without that field has nothing to wait for).
pub fn wait_acked(node: &Node, within: Duration) -> bool {
    poll(within, || {
        node.try_stats("repl")
            .is_some_and(|r| r.get("repl_unacked_keys").map_or(true, |v| v == "0"))
    })
}

/// One key as `gets` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub flags: u32,
    pub value: Vec<u8>,
    pub cas: u64,
}

/// `gets key` on `c`: None on a miss.
pub fn gets(c: &mut Conn, key: &str) -> Option<Got> {
    let reply = c.request(format!("gets {key}\r\n").as_bytes());
    if reply == b"END\r\n" {
        return None;
    }
    let eol = find(&reply, b"\r\n").unwrap_or_else(|| panic!("gets {key}: {reply:?}"));
    let head = String::from_utf8_lossy(&reply[..eol]).into_owned();
    let f: Vec<&str> = head.split(' ').collect();
    assert!(
        f.len() == 5 && f[0] == "VALUE" && f[1] == key,
        "gets {key}: unexpected header {head:?}"
    );
    let len: usize = f[3]
        .parse()
        .unwrap_or_else(|_| panic!("bad length in {head:?}"));
    Some(Got {
        flags: f[2]
            .parse()
            .unwrap_or_else(|_| panic!("bad flags in {head:?}")),
        value: reply[eol + 2..eol + 2 + len].to_vec(),
        cas: f[4]
            .parse()
            .unwrap_or_else(|_| panic!("bad cas in {head:?}")),
    })
}

/// Every key's `gets` on one node, over one connection.
pub fn snapshot(node: &Node, keys: &[String]) -> Vec<Option<Got>> {
    let mut c = node.connect();
    keys.iter().map(|k| gets(&mut c, k)).collect()
}

/// Stores `n` items `{prefix}{i}` with pipelined `noreply` sets, ending with one acknowledged
/// command so the call returns once the node has taken them all.
pub fn load(node: &Node, prefix: &str, n: usize, value: &[u8]) {
    let mut c = node.connect();
    // Large writes: give the node time to read everything on a loaded machine.
    c.deadline = Duration::from_secs(60);
    let mut batch = Vec::with_capacity(64 << 10);
    for i in 0..n {
        batch.extend_from_slice(
            format!("set {prefix}{i} 0 0 {} noreply\r\n", value.len()).as_bytes(),
        );
        batch.extend_from_slice(value);
        batch.extend_from_slice(b"\r\n");
        if batch.len() >= 60 << 10 {
            c.send(&batch);
            batch.clear();
        }
    }
    batch.extend_from_slice(b"version\r\n");
    c.send(&batch);
    let done = c.read_line();
    assert!(
        done.starts_with(b"VERSION "),
        "{}: load did not end cleanly: {:?}",
        node.name,
        String::from_utf8_lossy(&done)
    );
}
