//! The pair: the peer link, its handshake, streaming of changed keys, full-copy bootstrap,
//! heartbeats, and the `repl_*` statistics. Runs on its own thread with its own mio::Poll.

pub mod auth;
mod changelog;
mod dirty;
mod link;
mod node;
mod pace;
mod sched;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub use dirty::DirtySet;

use crate::stats::lock;
use crate::storage::Store;

/// How the replication thread is set up.
#[derive(Clone, Debug)]
pub struct ReplConfig {
    /// The peer as given (`host`, `host:port`, `[v6]:port`); dialled with `repl_port`
    /// when it names no port.
    pub peer: String,
    pub repl_port: u16,
    /// Where to listen for the peer.
    pub listen: SocketAddr,
    pub heartbeat: Duration,
    pub peer_timeout: Duration,
    /// How long a starting node keeps trying to finish a full copy before it serves alone.
    pub bootstrap_timeout: Duration,
    pub cluster: String,
    pub pending_limit: usize,
    /// The shared secret both nodes must prove (`--repl-secret-file`); None = no auth.
    pub secret: Option<Vec<u8>>,
    /// How long a stopping node keeps sending pending changes to its peer.
    pub drain_timeout: Duration,
    /// Percent of the time a full copy to the peer may take while clients keep the node busy.
    pub copy_share: u8,
}

/// `repl_link_state` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    Standalone = 0,
    Connecting = 1,
    Bootstrapping = 2,
    Connected = 3,
    Down = 4,
}

impl LinkState {
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Standalone => "standalone",
            LinkState::Connecting => "connecting",
            LinkState::Bootstrapping => "bootstrapping",
            LinkState::Connected => "connected",
            LinkState::Down => "down",
        }
    }

    fn from_u8(v: u8) -> LinkState {
        match v {
            1 => LinkState::Connecting,
            2 => LinkState::Bootstrapping,
            3 => LinkState::Connected,
            4 => LinkState::Down,
            _ => LinkState::Standalone,
        }
    }
}

/// Counters of the pair, read by `stats`; only the replication thread writes them.
#[derive(Default)]
pub struct ReplStats {
    pub sent_items: AtomicU64,
    pub received_items: AtomicU64,
    pub applied_items: AtomicU64,
    pub rejected_older: AtomicU64,
    /// Peer states dropped because the store was full and could not evict (`-M`).
    pub dropped_no_memory: AtomicU64,
    pub bootstraps: AtomicU64,
    pub last_bootstrap_items: AtomicU64,
    pub last_bootstrap_ms: AtomicU64,
    pub clock_skew_ms: AtomicI64,
    pub reconnects: AtomicU64,
    pub resyncs_partial: AtomicU64,
    pub resyncs_full: AtomicU64,
    /// Copies this node served to its peer.
    pub copies_sent: AtomicU64,
    /// Changes sent on the link that the peer has not acknowledged yet.
    pub unacked: AtomicU64,
}

/// The handle the rest of the server holds.
pub struct Replicator {
    pub cfg: ReplConfig,
    pub dirty: Arc<DirtySet>,
    pub stats: ReplStats,
    state: AtomicU8,
    /// Set once the node may open its client ports: the start-up copy finished, or there
    /// was no peer to copy from.
    ready: (Mutex<bool>, Condvar),
}

impl Replicator {
    pub fn new(cfg: ReplConfig) -> Arc<Replicator> {
        let limit = cfg.pending_limit;
        Arc::new(Replicator {
            cfg,
            dirty: Arc::new(DirtySet::new(limit)),
            stats: ReplStats::default(),
            state: AtomicU8::new(LinkState::Connecting as u8),
            ready: (Mutex::new(false), Condvar::new()),
        })
    }

    pub fn link_state(&self) -> LinkState {
        LinkState::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn set_state(&self, s: LinkState) {
        let old = self.state.swap(s as u8, Ordering::Relaxed);
        if old != s as u8 {
            log::info!(
                "peer link {} -> {}",
                LinkState::from_u8(old).name(),
                s.name()
            );
        }
    }

    fn set_ready(&self) {
        let (m, cv) = &self.ready;
        *lock(m) = true;
        cv.notify_all();
    }

    /// Waits up to `d` for the node to be allowed to serve clients; true once it is.
    pub fn wait_ready_for(&self, d: Duration) -> bool {
        let (m, cv) = &self.ready;
        let r = lock(m);
        if *r {
            return true;
        }
        let (r, _) = cv.wait_timeout(r, d).unwrap_or_else(|e| e.into_inner());
        *r
    }

    /// Starts the replication thread. The listener is bound before this returns, so a
    /// peer can reach this node while it is still copying.
    pub fn start(
        self: &Arc<Self>,
        store: Arc<Store>,
        shutdown: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<std::thread::JoinHandle<()>, String> {
        let node = node::Node::new(Arc::clone(self), store, shutdown)?;
        std::thread::Builder::new()
            .name("replication".into())
            .spawn(move || {
                sched::batch_scheduling();
                node.run()
            })
            .map_err(|e| format!("cannot start replication thread: {e}"))
    }

    /// Appends the `repl_*` fields of `stats`.
    pub fn write_stats(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut w = |name: &str, v: &dyn std::fmt::Display| {
            let _ = write!(out, "STAT {name} {v}\r\n");
        };
        w("repl_peer", &self.cfg.peer);
        w("repl_link_state", &self.link_state().name());
        w("repl_lag_ms", &self.dirty.lag_ms());
        w("repl_pending_keys", &self.dirty.pending_keys());
        w("repl_pending_bytes", &self.dirty.pending_bytes());
        w("repl_unacked_keys", &g(&s.unacked));
        w("repl_sent_items", &g(&s.sent_items));
        w("repl_received_items", &g(&s.received_items));
        w("repl_applied_items", &g(&s.applied_items));
        w("repl_rejected_older", &g(&s.rejected_older));
        w("repl_dropped_no_memory", &g(&s.dropped_no_memory));
        w("repl_bootstraps", &g(&s.bootstraps));
        w("repl_last_bootstrap_items", &g(&s.last_bootstrap_items));
        w("repl_last_bootstrap_ms", &g(&s.last_bootstrap_ms));
        w("repl_copies_sent", &g(&s.copies_sent));
        w(
            "repl_clock_skew_ms",
            &s.clock_skew_ms.load(Ordering::Relaxed),
        );
        w("repl_reconnects", &g(&s.reconnects));
        w("repl_resyncs_partial", &g(&s.resyncs_partial));
        w("repl_resyncs_full", &g(&s.resyncs_full));
    }
}
