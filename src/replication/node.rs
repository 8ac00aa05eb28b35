//! The replication thread's event loop: dialling and accepting the peer, the handshake and
//! one-link tie-break, streaming changed keys, serving and receiving full copies,
//! heartbeats and the peer timeout.

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::changelog::encode_state;
use crate::protocol::repl::{decode, encode, Frame, PROTOCOL_VERSION};
use crate::stats::bump;
use crate::storage::{Applied, CopyCursor, FlushState, RemoteState, Store};

use super::auth::{self, Side};
use super::link::{Link, PeerHello, ReadResult};
use super::pace::CopyPace;
use super::{LinkState, Replicator};
use crate::clock::wall_ms;

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);
const FIRST_LINK: usize = 2;

/// Stop queueing more frames for the peer while this much is unsent: changed keys then wait,
/// coalesced, in the dirty set, and a copy waits at its cursor.
const SEND_HIGH_WATER: usize = 4 << 20;
/// A receiver acknowledges at least this often (in data frames), besides every heartbeat,
/// so the sender's record of unacknowledged keys stays small on a busy link.
const ACK_EVERY: u64 = 1024;
/// ... or this many bytes of them: the sender then recycles its change-log buffers while
/// they are still in the cache (at 4 KiB values, 1024 frames kept 4 MiB of logs in flight,
/// and a worker encoding into a cold buffer cost node 1 about 5% more per set).
const ACK_BYTES: usize = 256 * 1024;
/// Why the loser of the one-link race is closed.
const DUPLICATE: &str = "duplicate connection";
/// Longest stretch spent queueing and writing before the loop looks at other events.
const FILL_SLICE: Duration = Duration::from_millis(20);
/// Frames whose lookups are started together (see `prefetch_ahead`).
const PREFETCH_FRAMES: usize = 16;
/// Bytes read from a link before what arrived is applied.
const READ_CAP: usize = 1 << 20;
/// Changed keys taken from the dirty set per step.
const DRAIN_BATCH: usize = 1024;
/// Tombstones younger than this outlive even a caught-up peer, covering clock jitter.
const TOMBSTONE_MARGIN_SECS: u32 = 5;
/// Items a copy takes from the store per step, so a shard lock is never held for long.
const COPY_CHUNK: usize = 256;

/// An outgoing full copy in progress.
struct Copy {
    cursor: CopyCursor,
    items: u64,
}

/// An incoming full copy in progress.
struct Receiving {
    started: Instant,
    items: u64,
    bytes: u64,
}

pub struct Node {
    repl: Arc<Replicator>,
    store: Arc<Store>,
    shutdown: Arc<AtomicBool>,
    poll: Poll,
    listener: TcpListener,
    links: Vec<Option<Link>>,
    /// The link that carries data; others are in their handshake.
    active: Option<usize>,
    run_id: u64,
    node_id: u8,
    /// Still in start-up: wants a full copy before the node serves clients.
    starting: bool,
    start_deadline: Instant,
    next_dial: Instant,
    backoff: Duration,
    next_heartbeat: Instant,
    copy: Option<Copy>,
    /// Keeps a copy to its share of the time while clients keep the node busy.
    pace: CopyPace,
    /// The copy has used its share: it resumes at this time.
    copy_paused_until: Option<Instant>,
    receiving: Option<Receiving>,
    /// Run id of the peer incarnation last linked with, to tell a reconnect from a restart.
    last_peer_run: Option<u64>,
    keys: Vec<Box<[u8]>>,
    /// Work was left over with the socket ready for more: poll without sleeping.
    busy: bool,
    /// Serving without ever having exchanged full data with the peer (it started alone):
    /// the peer may hold older data this node never saw, so the next link starts with a
    /// full exchange.
    unsynced: bool,
    /// This node's pending record is incomplete (it overflowed, or a full copy cleared it)
    /// and no full copy has reached the peer since: the next link starts with one. Only the
    /// peer's acknowledgement of the copy's last frame clears it; a copy written to a link
    /// that then breaks may never have arrived.
    copy_owed: bool,
    /// Data-frame count on the active link at the end of the last full copy sent.
    copy_end: Option<u64>,
    /// Data frames sent on the active link, and the changed keys among them the peer has
    /// not acknowledged yet: if the link breaks, those go back to the dirty set, because
    /// whatever was still in buffers or in flight never reached the peer.
    sent: u64,
    unacked: VecDeque<(u64, Box<[u8]>)>,
    /// Log buffers queued on the active link, kept until acknowledged: (the count of the
    /// last frame in it, its frames, the bytes, shared with the link until written).
    unacked_logs: VecDeque<(u64, usize, Arc<Vec<u8>>)>,
    unacked_log_frames: usize,
    /// Logs taken for sending (reused).
    taken: Vec<(Vec<u8>, usize)>,
    unacked_flush: Option<(u64, FlushState)>,
    /// Data frames received on the active link (acknowledged back every ACK_EVERY).
    received: u64,
    /// Bytes of data frames received since the last acknowledgement.
    unacked_in: usize,
    /// The peer's latest acknowledgement on the active link.
    acked: u64,
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, resolved now (DNS may change between dials).
pub fn resolve_peer(peer: &str, default_port: u16) -> Option<SocketAddr> {
    let with_port = if peer.starts_with('[') {
        if peer.contains("]:") {
            peer.to_string()
        } else {
            format!("{peer}:{default_port}")
        }
    } else if peer.matches(':').count() == 1 {
        peer.to_string()
    } else if peer.contains(':') {
        format!("[{peer}]:{default_port}")
    } else {
        format!("{peer}:{default_port}")
    };
    with_port.to_socket_addrs().ok()?.next()
}

impl Node {
    pub fn new(
        repl: Arc<Replicator>,
        store: Arc<Store>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Node, String> {
        let poll = Poll::new().map_err(|e| format!("replication poll: {e}"))?;
        let waker =
            Waker::new(poll.registry(), WAKE).map_err(|e| format!("replication waker: {e}"))?;
        repl.dirty.set_waker(waker);
        let addr = repl.cfg.listen;
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .map_err(|e| e.to_string())?;
        sock.set_reuse_address(true).map_err(|e| e.to_string())?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        sock.bind(&addr.into())
            .map_err(|e| format!("failed to listen for the peer on {addr}: {e}"))?;
        sock.listen(16).map_err(|e| e.to_string())?;
        let mut listener = TcpListener::from_std(sock.into());
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| e.to_string())?;
        log::info!("listening for the peer on {addr}");
        let now = Instant::now();
        let copy_share = repl.cfg.copy_share;
        let run_id = random_u64();
        Ok(Node {
            start_deadline: now + repl.cfg.bootstrap_timeout,
            node_id: store.node_id(),
            repl,
            store,
            shutdown,
            poll,
            listener,
            links: Vec::new(),
            active: None,
            run_id,
            starting: true,
            next_dial: now,
            backoff: Duration::from_millis(50),
            next_heartbeat: now,
            copy: None,
            receiving: None,
            last_peer_run: None,
            keys: Vec::new(),
            busy: false,
            pace: CopyPace::new(copy_share, now),
            copy_paused_until: None,
            unsynced: false,
            copy_owed: false,
            copy_end: None,
            sent: 0,
            unacked: VecDeque::new(),
            unacked_logs: VecDeque::new(),
            unacked_log_frames: 0,
            taken: Vec::new(),
            unacked_flush: None,
            received: 0,
            unacked_in: 0,
            acked: 0,
        })
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        // The first dial decides whether a starting node has anyone to copy from.
        self.dial(true);
        if !self.starting || self.run_start_up(&mut events) {
            self.run_until(&mut events, |_| false);
        }
        self.drain_before_exit(&mut events);
    }

    /// Runs the loop until the node may serve clients, on a thread of its own at a low
    /// priority: the start-up copy is the node's only work then, and where the pair shares
    /// CPUs it would otherwise take them from the peer's clients, beyond the share the
    /// peer's pacing gives the copy. The thread ends with the start-up, so the live link
    /// goes on at normal priority without the privilege to raise it back.
    /// False when the loop failed.
    fn run_start_up(&mut self, events: &mut Events) -> bool {
        let nice = super::sched::nice_for_share(self.repl.cfg.copy_share);
        let ran = std::thread::scope(|s| {
            let started = std::thread::Builder::new()
                .name("replication-start".into())
                .spawn_scoped(s, || {
                    super::sched::lower_priority(nice);
                    self.run_until(events, |n| !n.starting)
                });
            match started {
                Ok(t) => Some(t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
                Err(e) => {
                    log::warn!(
                        "cannot start the start-up thread ({e}); copying at normal priority"
                    );
                    None
                }
            }
        });
        ran.unwrap_or_else(|| self.run_until(events, |n| !n.starting))
    }

    /// The event loop, until shutdown or until `done` says so; false when polling failed.
    fn run_until(&mut self, events: &mut Events, done: impl Fn(&Node) -> bool) -> bool {
        while !self.shutdown.load(Ordering::SeqCst) && !done(self) {
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("replication poll failed: {e}");
                    return false;
                }
            }
            self.repl.dirty.answered();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKE => {}
                    Token(t) => self.service(t - FIRST_LINK, ev.is_writable()),
                }
            }
            self.tick();
        }
        true
    }

    /// On shutdown: the client listeners are closed and the workers stopped, so nothing
    /// new is changing; send the peer every change still pending and wait until it has
    /// acknowledged them (bytes still in socket buffers are not delivered yet), bounded by
    /// the drain timeout, so a clean stop loses no write the peer could have had.
    fn drain_before_exit(&mut self, events: &mut Events) {
        let Some(i) = self.active else {
            return;
        };
        let deadline = Instant::now() + self.repl.cfg.drain_timeout;
        let mut asked: Option<Instant> = None;
        loop {
            self.service(i, true);
            if self.active != Some(i) {
                log::warn!("peer link lost while draining; exiting");
                return;
            }
            let unsent = self.links[i].as_ref().map_or(0, Link::pending_output);
            let queued = unsent > 0 || self.copy.is_some() || !self.repl.dirty.is_empty();
            let unacked = self.unacked_count() + usize::from(self.unacked_flush.is_some());
            if !queued && unacked == 0 {
                log::info!("replication drained; exiting");
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                log::warn!(
                    "exiting with {} changed keys pending and {unacked} unacknowledged \
                     (drain timeout)",
                    self.repl.dirty.pending_keys()
                );
                return;
            }
            // Everything is queued: ask for an acknowledgement (again if it is slow).
            if !queued && asked.map_or(true, |t| now - t > self.repl.cfg.heartbeat) {
                self.heartbeat();
                asked = Some(now);
                continue;
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            let _ = self.poll.poll(events, Some(wait));
        }
    }

    fn timeout(&mut self) -> Duration {
        if std::mem::take(&mut self.busy) {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut next = self.next_heartbeat;
        if self.active.is_none() {
            next = next.min(self.next_dial);
        }
        if let Some(t) = self.copy_paused_until {
            next = next.min(t);
        }
        next.saturating_duration_since(now)
            .min(Duration::from_millis(250))
    }

    /// Lets the node serve clients. `copied` says whether it has its peer's data; if not,
    /// the first link with the peer starts with a full exchange.
    fn finish_start(&mut self, why: &str, copied: bool) {
        if self.starting {
            self.starting = false;
            self.unsynced = !copied;
            log::info!("serving clients: {why}");
            self.repl.set_ready();
        }
    }

    fn add_link(&mut self, mut stream: TcpStream, dialed: bool, connecting: bool) {
        let idx = match self.links.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.links.push(None);
                self.links.len() - 1
            }
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Token(idx + FIRST_LINK), interest)
        {
            log::warn!("cannot watch a peer connection: {e}");
            return;
        }
        let mut link = Link::new(stream, dialed, connecting);
        if !connecting {
            self.hello(&mut link);
        }
        self.links[idx] = Some(link);
    }

    fn hello(&self, link: &mut Link) {
        let cluster = self.repl.cfg.cluster.as_bytes();
        encode(
            &Frame::Hello {
                version: PROTOCOL_VERSION,
                node_id: self.node_id,
                run_id: self.run_id,
                wants_bootstrap: self.starting,
                auth: self.repl.cfg.secret.is_some(),
                nonce: link.nonce,
                cluster: &cluster[..cluster.len().min(255)],
            },
            &mut link.wbuf,
        );
    }

    fn dial(&mut self, first: bool) {
        let dialing = self
            .links
            .iter()
            .flatten()
            .any(|l| l.dialed && l.peer.is_none());
        if dialing {
            return;
        }
        let Some(addr) = resolve_peer(&self.repl.cfg.peer, self.repl.cfg.repl_port) else {
            log::warn!("cannot resolve peer {}", self.repl.cfg.peer);
            if first {
                self.finish_start("peer address does not resolve", false);
            }
            self.schedule_redial();
            return;
        };
        if first {
            // A blocking connect with a short bound answers "is anyone there?" before the
            // node decides to serve alone: refused comes back at once on a live host.
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    if s.set_nonblocking(true).is_ok() {
                        self.add_link(TcpStream::from_std(s), true, false);
                        self.repl.set_state(LinkState::Connecting);
                        return;
                    }
                }
                Err(e) => {
                    log::info!("peer {addr} not reachable at start ({e})");
                    self.repl.set_state(LinkState::Down);
                    self.finish_start("no peer to copy from", false);
                    self.schedule_redial();
                    return;
                }
            }
        }
        match TcpStream::connect(addr) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                self.add_link(s, true, true);
            }
            Err(e) => {
                log::debug!("dial {addr}: {e}");
                self.schedule_redial();
            }
        }
    }

    fn schedule_redial(&mut self) {
        // Jittered exponential backoff so two nodes that lost each other do not dial in
        // lock-step forever.
        let jitter = (random_u64() % 1000) as f64 / 1000.0 * 0.5 + 0.75;
        self.next_dial = Instant::now() + self.backoff.mul_f64(jitter);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((s, addr)) => {
                    log::debug!("peer connection from {addr}");
                    let _ = s.set_nodelay(true);
                    self.add_link(s, false, false);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accept on the replication port: {e}");
                    return;
                }
            }
        }
    }

    fn close(&mut self, idx: usize, why: &str) {
        let Some(mut link) = self.links.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut link.stream);
        if self.active == Some(idx) {
            log::warn!("peer link lost: {why}");
            self.active = None;
            // A copy cut short, or sent but not acknowledged, leaves copy_owed set: the
            // next link starts another.
            self.copy = None;
            self.copy_end = None;
            // Changes go back to the key set, which coalesces them while the peer is away.
            self.repl.dirty.set_streaming(false);
            self.repl.dirty.unlog();
            self.requeue_unacked();
            if self.receiving.take().is_some() {
                log::warn!("full copy from the peer interrupted; it restarts on reconnect");
            }
            self.repl.set_state(LinkState::Down);
            self.backoff = Duration::from_millis(50);
            self.schedule_redial();
        } else {
            log::debug!("peer connection closed: {why}");
            if link.dialed && link.peer.is_none() {
                self.schedule_redial();
                // Something accepted the connection but no peer answered (a proxy or a
                // load balancer with nothing behind it): at start-up that is no peer to
                // copy from. Once a peer was seen, a broken copy is retried instead.
                if self.starting && self.active.is_none() && self.last_peer_run.is_none() {
                    self.repl.set_state(LinkState::Down);
                    self.finish_start("the peer did not complete a handshake", false);
                }
            }
        }
    }

    /// Queues a heartbeat (which the peer answers with an acknowledgement) on the active link.
    fn heartbeat(&mut self) {
        let Some(a) = self.active else { return };
        let hlc = self.store.clock_now();
        // Unacknowledged changes and a copy in progress are pending work too: a broken
        // link sends them again.
        let pending = self.repl.dirty.pending_keys() as u64
            + self.unacked_count() as u64
            + u64::from(self.copy.is_some());
        if let Some(l) = self.links[a].as_mut() {
            let frame = Frame::Heartbeat {
                wall_ms: wall_ms(),
                hlc,
                pending,
            };
            encode(&frame, &mut l.wbuf);
        }
    }

    /// Changes sent on the active link and not acknowledged yet.
    fn unacked_count(&self) -> usize {
        self.unacked.len() + self.unacked_log_frames
    }

    /// Puts back what the lost link carried without acknowledgement, so it is sent again.
    fn requeue_unacked(&mut self) {
        let n = self.unacked_count();
        for (_, key) in self.unacked.drain(..) {
            self.repl.dirty.add(&key);
        }
        for (_, _, buf) in self.unacked_logs.drain(..) {
            self.repl.dirty.requeue_frames(&buf);
            if let Ok(buf) = Arc::try_unwrap(buf) {
                self.repl.dirty.recycle(buf);
            }
        }
        self.unacked_log_frames = 0;
        if let Some((_, f)) = self.unacked_flush.take() {
            self.repl.dirty.add_flush(f);
        }
        self.repl.stats.unacked.store(0, Ordering::Relaxed);
        if n > 0 {
            log::info!("{n} changes sent but not acknowledged will be sent again");
        }
    }

    /// Reads, handles and writes one link.
    fn service(&mut self, idx: usize, writable: bool) {
        let Some(link) = self.links.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if link.connecting {
            if !writable {
                return;
            }
            match link.stream.peer_addr() {
                Ok(_) => {
                    link.connecting = false;
                    let mut l = self.links[idx].take();
                    if let Some(l) = l.as_mut() {
                        self.hello(l);
                    }
                    self.links[idx] = l;
                }
                Err(_) => {
                    self.close(idx, "connect failed");
                    return;
                }
            }
        }
        loop {
            let read = match self.links[idx].as_mut() {
                Some(l) => l.read_some(READ_CAP),
                None => return,
            };
            if let Err(why) = self.handle_frames(idx) {
                // A refused handshake (wrong secret, cluster or version) is an operator's
                // problem and is said at warning level; losing the one-link race is normal.
                if self.active != Some(idx) && why != DUPLICATE {
                    log::warn!("peer connection refused: {why}");
                }
                self.close(idx, &why);
                return;
            }
            if matches!(read, ReadResult::Closed) {
                self.close(idx, "closed by the other side");
                return;
            }
            self.fill_and_flush(idx);
            if matches!(read, ReadResult::Drained) {
                return;
            }
        }
    }

    /// Queues what is pending and writes it, for as long as the socket keeps taking it:
    /// a socket that drained completely gives no WRITABLE event to come back on.
    fn fill_and_flush(&mut self, idx: usize) {
        // Bounded, so a long copy still lets the loop read the peer's frames in between.
        let until = Instant::now() + FILL_SLICE;
        loop {
            let active = self.active == Some(idx);
            let copying = active && self.copy.is_some();
            let started = Instant::now();
            if active {
                self.fill(idx);
            }
            let (failed, drained) = match self.links[idx].as_mut() {
                Some(l) => (l.flush().is_err(), l.pending_output() == 0),
                None => return,
            };
            if copying && self.copy_paused_until.is_none() {
                // Encoding and sending both count: on a busy node that is what the copy
                // takes from the clients.
                self.pace.charge(started.elapsed());
            }
            if failed {
                self.close(idx, "write failed");
                return;
            }
            let copy_ready = self.copy.is_some() && self.copy_paused_until.is_none();
            let more = active && (copy_ready || !self.repl.dirty.is_empty());
            if !(drained && more) {
                return;
            }
            if Instant::now() >= until {
                // Come straight back after a look at other events.
                self.busy = true;
                return;
            }
        }
    }

    /// Decodes and handles every complete frame a link has received. The link is taken out
    /// of the table meanwhile so frames (which borrow its buffer) can be handled with the
    /// whole node at hand.
    fn handle_frames(&mut self, idx: usize) -> Result<(), String> {
        let Some(mut link) = self.links.get_mut(idx).and_then(Option::take) else {
            return Ok(());
        };
        let res = self.handle_input(idx, &mut link);
        self.links[idx] = Some(link);
        res
    }

    fn handle_input(&mut self, idx: usize, link: &mut Link) -> Result<(), String> {
        // One clock reading per batch of frames: a full copy applies a million states in
        // well under a second, and expiry works in whole seconds.
        let now = crate::clock::unix_now();
        let mut ahead = 0usize;
        loop {
            // A full copy arrives in the sender's shard order, so its lookups already
            // find their lines in cache: warming them would mostly add locking.
            if ahead == 0 && link.peer.is_some() && self.receiving.is_none() {
                ahead = self.prefetch_ahead(link.split().0);
            }
            ahead = ahead.saturating_sub(1);
            let handshaken = link.peer.is_some();
            let my_nonce = link.nonce;
            // A copy, written back only once the frame is consumed: an incomplete frame
            // returns early and must leave the handshake state as it was.
            let mut pending = link.pending;
            let (input, wbuf) = link.split();
            let (frame, used) = match decode(input) {
                Ok(Some(x)) => x,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("bad frame from peer: {e}")),
            };
            let step = match frame {
                Frame::Hello { nonce, .. } => {
                    if handshaken || pending.is_some() {
                        return Err("second hello on one connection".into());
                    }
                    let hello = self.check_hello(&frame)?;
                    match &self.repl.cfg.secret {
                        Some(secret) => {
                            let me = Side {
                                run_id: self.run_id,
                                nonce: my_nonce,
                            };
                            let peer = Side {
                                run_id: hello.run_id,
                                nonce,
                            };
                            let proof = auth::proof(secret, me, peer);
                            encode(&Frame::Auth { proof }, wbuf);
                            pending = Some((hello, nonce));
                            None
                        }
                        None => Some(hello),
                    }
                }
                Frame::Auth { proof } => {
                    let (Some(secret), Some((hello, nonce))) =
                        (&self.repl.cfg.secret, pending.take())
                    else {
                        return Err("unexpected authentication frame".into());
                    };
                    let me = Side {
                        run_id: self.run_id,
                        nonce: my_nonce,
                    };
                    let peer = Side {
                        run_id: hello.run_id,
                        nonce,
                    };
                    if !auth::verify(secret, peer, me, &proof) {
                        return Err("peer failed authentication (wrong secret?)".into());
                    }
                    Some(hello)
                }
                _ => {
                    self.handle_frame(&frame, handshaken, wbuf, now)?;
                    None
                }
            };
            link.consume(used);
            link.pending = pending;
            if let Some(h) = step {
                link.peer = Some(h);
                if !self.on_hello(idx, link, h) {
                    return Err(DUPLICATE.into());
                }
            }
        }
    }

    /// Starts loading what applying the next frames of `input` will read, so the lookups'
    /// cache misses overlap; returns how many frames that covered.
    fn prefetch_ahead(&self, input: &[u8]) -> usize {
        let mut keys: [&[u8]; PREFETCH_FRAMES] = [&[]; PREFETCH_FRAMES];
        let (mut off, mut frames, mut n, mut newest) = (0, 0, 0, 0);
        while frames < PREFETCH_FRAMES {
            let Ok(Some((f, used))) = decode(input.get(off..).unwrap_or_default()) else {
                break;
            };
            if let Frame::State { key, version, .. } | Frame::Tombstone { key, version } = f {
                keys[n] = key;
                newest = newest.max(version);
                n += 1;
            }
            off += used;
            frames += 1;
        }
        if n > 1 {
            self.store.prefetch(&keys[..n]);
        }
        // Observing the newest version before any of these frames is applied leaves each
        // apply's own observation a plain load: one atomic update per batch, not per frame.
        self.store.observe(newest);
        frames.max(1)
    }

    /// Runs the one-link rule for a link that just completed its handshake; false when this
    /// link is the one to drop.
    fn on_hello(&mut self, idx: usize, link: &mut Link, hello: PeerHello) -> bool {
        if hello.node_id == self.node_id && self.run_id < hello.run_id {
            // Both nodes picked the same id: the one with the smaller run id moves, so
            // versions stay unique across the pair from now on.
            let new_id = self.store.reroll_node_id(hello.node_id);
            log::info!("node id {} taken by the peer; now {new_id}", self.node_id);
            self.node_id = new_id;
        }
        if let Some(a) = self.active {
            let (old_peer, old_dialed) = match self.links[a].as_ref() {
                Some(l) => (l.peer, l.dialed),
                None => (None, false),
            };
            let keep_new = match old_peer {
                // A new incarnation of the peer: whatever the old connection still carries
                // must not be applied any more.
                Some(old) if old.run_id != hello.run_id => true,
                _ => {
                    let dialer = |dialed: bool| if dialed { self.run_id } else { hello.run_id };
                    let (new_dialer, old_dialer) = (dialer(link.dialed), dialer(old_dialed));
                    // Both nodes see the same two connections and keep the one opened by the
                    // node with the smaller run id; two dials from one side: keep the newer.
                    new_dialer <= old_dialer
                }
            };
            if !keep_new {
                return false;
            }
            self.close(a, "superseded by a newer connection");
        }
        self.activate(idx, link, hello);
        true
    }

    /// Validates a peer's hello: protocol version, cluster name, authentication on both
    /// sides or neither, and not ourselves.
    fn check_hello(&self, f: &Frame) -> Result<PeerHello, String> {
        let Frame::Hello {
            version,
            node_id,
            run_id,
            wants_bootstrap,
            auth,
            cluster,
            ..
        } = *f
        else {
            return Err("expected a hello".into());
        };
        let cfg = &self.repl.cfg;
        if version != PROTOCOL_VERSION {
            return Err(format!(
                "peer speaks replication protocol {version}, not {PROTOCOL_VERSION}"
            ));
        }
        if cluster != cfg.cluster.as_bytes() {
            return Err(format!(
                "peer belongs to cluster {:?}, not {:?}",
                String::from_utf8_lossy(cluster),
                cfg.cluster
            ));
        }
        match (cfg.secret.is_some(), auth) {
            (true, false) => return Err("peer does not authenticate; a secret is required".into()),
            (false, true) => {
                return Err("peer requires authentication: set --repl-secret-file here too".into())
            }
            _ => {}
        }
        if run_id == self.run_id {
            return Err("connected to itself".into());
        }
        Ok(PeerHello {
            node_id,
            run_id,
            wants_bootstrap,
        })
    }

    /// Applies one data frame of an established link.
    fn handle_frame(
        &mut self,
        f: &Frame,
        handshaken: bool,
        wbuf: &mut Vec<u8>,
        now: u32,
    ) -> Result<(), String> {
        let repl = Arc::clone(&self.repl);
        match *f {
            Frame::Hello { .. } | Frame::Auth { .. } => {
                return Err("handshake frame out of place".into());
            }
            _ if !handshaken => return Err("data before the handshake".into()),
            Frame::State {
                version,
                flags,
                exptime,
                meta,
                key,
                counter,
                value,
            } => {
                let st = RemoteState {
                    key,
                    version,
                    flags,
                    exptime,
                    meta,
                    value: Some(value),
                    counter,
                };
                let size = key.len() + value.len() + counter.map_or(0, <[u8]>::len);
                self.applied(self.store.apply(st, now), size);
                self.count_received(wbuf, size);
            }
            Frame::Tombstone { version, key } => {
                let st = RemoteState {
                    key,
                    version,
                    flags: 0,
                    exptime: 0,
                    meta: 0,
                    value: None,
                    counter: None,
                };
                self.applied(self.store.apply(st, now), key.len());
                self.count_received(wbuf, key.len());
            }
            Frame::Flush { watermark, at } => {
                self.store.apply_flush_state(FlushState {
                    oldest_live: at,
                    oldest_version: watermark,
                });
                self.count_received(wbuf, 0);
            }
            Frame::Ack { received } => {
                while self.unacked.front().is_some_and(|(n, _)| *n <= received) {
                    self.unacked.pop_front();
                }
                while self
                    .unacked_logs
                    .front()
                    .is_some_and(|(n, ..)| *n <= received)
                {
                    if let Some((_, frames, buf)) = self.unacked_logs.pop_front() {
                        self.unacked_log_frames -= frames;
                        // The link let go of it once it was written, which it was: the
                        // peer has its frames.
                        if let Ok(buf) = Arc::try_unwrap(buf) {
                            repl.dirty.recycle(buf);
                        }
                    }
                }
                repl.stats
                    .unacked
                    .store(self.unacked_count() as u64, Ordering::Relaxed);
                if self.unacked_flush.is_some_and(|(n, _)| n <= received) {
                    self.unacked_flush = None;
                }
                self.acked = self.acked.max(received);
                self.settle_copy();
            }
            Frame::Heartbeat {
                wall_ms: theirs,
                hlc,
                pending,
            } => {
                self.store.observe(hlc);
                let skew = theirs as i64 - wall_ms() as i64;
                repl.stats.clock_skew_ms.store(skew, Ordering::Relaxed);
                // Acknowledge what arrived: the sender keeps its copies until then.
                self.ack(wbuf);
                if pending == 0 {
                    // Everything the peer changed before this heartbeat is already here
                    // (the link is ordered), so older states of keys deleted a while ago
                    // can no longer arrive: their tombstones may go.
                    self.store
                        .set_tombstone_horizon(now.saturating_sub(TOMBSTONE_MARGIN_SECS));
                }
            }
            Frame::BootstrapReq => {
                if self.copy.is_none() {
                    self.start_copy(wbuf);
                }
            }
            Frame::BootstrapBegin { items } => {
                if self.receiving.is_some() {
                    self.store.reserve(items);
                }
            }
            Frame::BootstrapEnd { items } => {
                // The peer's copy has arrived in full (the link is ordered): this node now
                // holds everything the peer had.
                if !self.starting && self.unsynced {
                    log::info!("full copy from the peer applied ({items} states)");
                    self.unsynced = false;
                }
                if let Some(r) = self.receiving.take() {
                    let ms = r.started.elapsed().as_millis() as u64;
                    let s = &repl.stats;
                    s.bootstraps.fetch_add(1, Ordering::Relaxed);
                    s.last_bootstrap_items.store(r.items, Ordering::Relaxed);
                    s.last_bootstrap_ms.store(ms, Ordering::Relaxed);
                    log::info!(
                        "full copy received: {} items, {} MB ({items} announced) in {ms} ms",
                        r.items,
                        r.bytes >> 20
                    );
                    repl.set_state(LinkState::Connected);
                    self.finish_start("full copy from the peer complete", true);
                }
            }
        }
        Ok(())
    }

    /// Ends the debt of a full copy once the peer has acknowledged its last data frame (at
    /// once for a copy that carried none).
    fn settle_copy(&mut self) {
        if self.copy_end.is_some_and(|n| n <= self.acked) {
            self.copy_end = None;
            if std::mem::take(&mut self.copy_owed) {
                log::debug!("the peer acknowledged the whole full copy");
            }
        }
    }

    /// Counts a data frame of the active link (`bytes`: about its size) and acknowledges
    /// every ACK_EVERY frames or ACK_BYTES bytes, whichever comes first.
    fn count_received(&mut self, wbuf: &mut Vec<u8>, bytes: usize) {
        self.received += 1;
        self.unacked_in += bytes;
        if self.received % ACK_EVERY == 0 || self.unacked_in >= ACK_BYTES {
            self.ack(wbuf);
        }
    }

    fn ack(&mut self, wbuf: &mut Vec<u8>) {
        self.unacked_in = 0;
        encode(
            &Frame::Ack {
                received: self.received,
            },
            wbuf,
        );
    }

    fn applied(&mut self, a: Applied, bytes: usize) {
        let s = &self.repl.stats;
        // This thread is the counters' only writer: a plain add, not a locked one per frame.
        bump(&s.received_items, 1);
        if let Some(r) = self.receiving.as_mut() {
            r.items += 1;
            r.bytes += bytes as u64;
            if r.items % 100_000 == 0 {
                let secs = r.started.elapsed().as_secs_f64().max(1e-3);
                log::info!(
                    "copy in progress: {} items, {} MB ({:.0} items/s)",
                    r.items,
                    r.bytes >> 20,
                    r.items as f64 / secs
                );
            }
        }
        let c = match a {
            Applied::Applied => &s.applied_items,
            Applied::Older => &s.rejected_older,
            Applied::NoMemory => &s.dropped_no_memory,
        };
        bump(c, 1);
    }

    fn activate(&mut self, idx: usize, link: &mut Link, hello: PeerHello) {
        self.active = Some(idx);
        self.sent = 0;
        self.received = 0;
        self.unacked_in = 0;
        self.acked = 0;
        self.requeue_unacked();
        self.backoff = Duration::from_millis(50);
        let reconnect = self.last_peer_run.is_some();
        if reconnect {
            self.repl.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let same_peer = self.last_peer_run == Some(hello.run_id);
        self.last_peer_run = Some(hello.run_id);
        log::info!(
            "peer link up (peer node {}, run {:016x}{})",
            hello.node_id,
            hello.run_id,
            if hello.wants_bootstrap {
                ", peer wants a full copy"
            } else {
                ""
            }
        );
        // An overflow needs a full copy to the peer; remember it until the peer has
        // acknowledged one, since this link may break before it does.
        if self.repl.dirty.take_overflow() {
            self.copy_owed = true;
        }
        if hello.wants_bootstrap {
            // It starts empty and asks for a copy right behind its hello: the copy will
            // carry every key's current state, so what is pending here is covered.
            self.repl.dirty.clear();
            self.unacked.clear();
            for (_, _, buf) in self.unacked_logs.drain(..) {
                if let Ok(buf) = Arc::try_unwrap(buf) {
                    self.repl.dirty.recycle(buf);
                }
            }
            self.unacked_log_frames = 0;
            self.unacked_flush = None;
            self.unsynced = false;
        } else if self.copy_owed || self.unsynced {
            // Changes were dropped or a copy broke off while the link was down: send
            // everything. A node that started alone and never saw the peer's data also
            // asks for the peer's copy.
            self.repl.stats.resyncs_full.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "full resync with the peer: {}",
                if self.copy_owed {
                    "this node's pending record is incomplete"
                } else {
                    "this node started without a copy of the peer's data"
                }
            );
            self.start_copy(&mut link.wbuf);
            if self.unsynced && !self.starting {
                self.request_copy(link);
            }
        } else if same_peer {
            self.repl
                .stats
                .resyncs_partial
                .fetch_add(1, Ordering::Relaxed);
            log::info!(
                "resync with the peer: {} changed keys pending",
                self.repl.dirty.pending_keys()
            );
        }
        if self.starting {
            self.request_copy(link);
            self.repl.set_state(LinkState::Bootstrapping);
        } else {
            self.repl.set_state(LinkState::Connected);
        }
        self.repl.dirty.set_streaming(true);
        self.next_heartbeat = Instant::now();
    }

    fn request_copy(&mut self, link: &mut Link) {
        encode(&Frame::BootstrapReq, &mut link.wbuf);
        if self.starting {
            self.receiving = Some(Receiving {
                started: Instant::now(),
                items: 0,
                bytes: 0,
            });
        }
    }

    fn start_copy(&mut self, wbuf: &mut Vec<u8>) {
        let (copy, frames) = begin_copy(&self.repl, &self.store, wbuf);
        self.copy = Some(copy);
        self.pace.begin(Instant::now());
        self.sent += frames;
        // begin_copy cleared the pending record: until the copy is acknowledged, it is
        // the only record of what the peer lacks.
        self.copy_owed = true;
        self.copy_end = None;
    }

    /// Queues changed keys and copy chunks for the active link, up to the high-water mark.
    fn fill(&mut self, idx: usize) {
        let Some(link) = self.links.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if link.peer.is_none() {
            return;
        }
        if self.repl.dirty.take_overflow() {
            // Keys were dropped while this link was up (the peer could not keep up): only a
            // full copy repairs what it missed. A copy already under way starts over: its
            // cursor may have passed keys whose changes were just dropped.
            self.repl.stats.resyncs_full.fetch_add(1, Ordering::Relaxed);
            log::info!("full resync with the peer: the pending record overflowed");
            let mut wbuf = std::mem::take(&mut link.wbuf);
            self.start_copy(&mut wbuf);
            if let Some(link) = self.links.get_mut(idx).and_then(Option::as_mut) {
                link.wbuf = wbuf;
            }
        }
        let Some(link) = self.links.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let now = crate::clock::unix_now();
        self.repl.dirty.arm();
        while link.pending_output() < SEND_HIGH_WATER && !self.repl.dirty.is_empty() {
            self.keys.clear();
            let flush = self.repl.dirty.drain(&mut self.keys, DRAIN_BATCH);
            if let Some(f) = flush {
                let frame = Frame::Flush {
                    watermark: f.oldest_version,
                    at: f.oldest_live,
                };
                encode(&frame, &mut link.wbuf);
                self.sent += 1;
                self.unacked_flush = Some((self.sent, f));
            }
            let mut sent = 0u64;
            // Changes the workers encoded go first, sent as they are.
            self.repl.dirty.take_logs(&mut self.taken);
            for (buf, frames) in self.taken.drain(..) {
                let buf = Arc::new(buf);
                link.push_log(Arc::clone(&buf));
                sent += frames as u64;
                self.sent += frames as u64;
                self.unacked_log_frames += frames;
                self.unacked_logs.push_back((self.sent, frames, buf));
            }
            for key in self.keys.drain(..) {
                let wbuf = &mut link.wbuf;
                let found = self.store.read_state(&key, now, |st| {
                    encode_state(&st, wbuf);
                });
                if found {
                    sent += 1;
                    self.sent += 1;
                    self.unacked.push_back((self.sent, key));
                }
            }
            let unacked = (self.unacked.len() + self.unacked_log_frames) as u64;
            self.repl.stats.unacked.store(unacked, Ordering::Relaxed);
            bump(&self.repl.stats.sent_items, sent);
        }
        self.copy_paused_until = None;
        let clients = self.repl.dirty.clients_busy();
        let room = match self
            .copy
            .as_ref()
            .map(|_| self.pace.allow(Instant::now(), clients))
        {
            Some(Ok(room)) => room,
            Some(Err(resume)) => {
                self.copy_paused_until = Some(resume);
                Duration::ZERO
            }
            None => Duration::ZERO,
        };
        let started = Instant::now();
        while link.pending_output() < SEND_HIGH_WATER && started.elapsed() < room {
            let Some(copy) = self.copy.as_mut() else {
                break;
            };
            let mut n = 0u64;
            let done = self
                .store
                .copy_chunk(&mut copy.cursor, COPY_CHUNK, now, |st| {
                    encode_state(&st, &mut link.wbuf);
                    n += 1;
                });
            copy.items += n;
            self.sent += n;
            bump(&self.repl.stats.sent_items, n);
            if done {
                encode(&Frame::BootstrapEnd { items: copy.items }, &mut link.wbuf);
                log::info!("full copy sent: {} items", copy.items);
                self.copy = None;
                self.copy_end = Some(self.sent);
            }
        }
        self.settle_copy();
    }

    /// Periodic work: heartbeats, peer timeout, redial, start-up deadline, and sending
    /// whatever the workers marked since the last wake-up.
    fn tick(&mut self) {
        let now = Instant::now();
        if let Some(a) = self.active {
            let stale = self.links[a]
                .as_ref()
                .is_some_and(|l| now.duration_since(l.last_rx) > self.repl.cfg.peer_timeout);
            if stale {
                self.close(a, "no heartbeat from the peer within the timeout");
            }
        }
        // Handshakes that never finish are dropped so a silent stranger cannot hold a slot.
        for i in 0..self.links.len() {
            let hung = self.links[i].as_ref().is_some_and(|l| {
                l.peer.is_none() && now.duration_since(l.opened) > self.repl.cfg.peer_timeout
            });
            if hung {
                self.close(i, "handshake timed out");
            }
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.repl.cfg.heartbeat;
            self.heartbeat();
        }
        if self.active.is_none() && now >= self.next_dial {
            self.dial(false);
        }
        if self.starting && self.active.is_none() && now >= self.start_deadline {
            log::warn!(
                "no complete copy from the peer within the bootstrap timeout; serving alone"
            );
            self.finish_start("bootstrap timeout", false);
        }
        for i in 0..self.links.len() {
            if self.links[i].is_some() {
                self.fill_and_flush(i);
            }
        }
    }
}

/// Starts a full copy to the peer: announces its size and the flush state, and returns its
/// cursor and how many data frames it queued (the acknowledgement count includes them).
fn begin_copy(repl: &Replicator, store: &Store, wbuf: &mut Vec<u8>) -> (Copy, u64) {
    log::info!("sending a full copy to the peer");
    // The copy reads every key's current state, so what is pending now is covered by it;
    // changes from here on are marked again and sent live.
    repl.dirty.clear();
    let st = store.stats(crate::clock::unix_now());
    let items = st.curr_items + st.tombstones;
    encode(&Frame::BootstrapBegin { items }, wbuf);
    // The flush state goes first: the receiver then drops every state the flush covers
    // (flushed items still sit here until swept), and learns of a flush still to come.
    let f = store.flush_state();
    let mut frames = 0;
    if f.oldest_live != 0 || f.oldest_version != 0 {
        let frame = Frame::Flush {
            watermark: f.oldest_version,
            at: f.oldest_live,
        };
        encode(&frame, wbuf);
        frames += 1;
    }
    repl.stats.copies_sent.fetch_add(1, Ordering::Relaxed);
    let copy = Copy {
        cursor: CopyCursor::default(),
        items: 0,
    };
    (copy, frames)
}
