//! Listeners, worker event loops, connections and request execution.

mod conn;
mod exec;
mod listener;
mod meta;
mod shared;
mod stats_cmd;
mod worker;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::Config;
use crate::replication::{ReplConfig, Replicator};
use crate::storage::{Store, StoreConfig};

pub use shared::level_filter;
use shared::Shared;

const SIGNAL: Token = Token(usize::MAX - 1);
const WAKE: Token = Token(usize::MAX - 2);

/// Shards per worker thread: enough that two workers (or a worker and the replication
/// thread) rarely want the same lock. No more than that: every shard has its own lock,
/// tables and partly filled pages, and a pair on one core ran 100 B sets at 1.25, 1.22 and
/// 1.19 µs per set for both nodes with 256, 64 and 16 shards (`bench/pair-ab.sh`).
const SHARDS_PER_THREAD: usize = 16;
const MAX_SHARDS: usize = 256;

fn shard_count(threads: usize) -> usize {
    (threads.max(1) * SHARDS_PER_THREAD)
        .next_power_of_two()
        .min(MAX_SHARDS)
}

/// Runs the server until it is told to stop; returns the process exit code.
pub fn run(cfg: Config) -> i32 {
    match serve(cfg) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("repcached: {e}");
            log::error!("{e}");
            1
        }
    }
}

fn repl_config(cfg: &Config, peer: &str, secret: Option<&[u8]>) -> ReplConfig {
    let listen = cfg.repl_listen.unwrap_or_else(|| {
        let ip = cfg
            .listen
            .first()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(ip, cfg.repl_port)
    });
    ReplConfig {
        peer: peer.to_string(),
        repl_port: cfg.repl_port,
        listen,
        heartbeat: Duration::from_millis(cfg.repl_heartbeat_ms),
        peer_timeout: Duration::from_millis(cfg.repl_timeout_ms),
        bootstrap_timeout: Duration::from_secs(cfg.repl_bootstrap_timeout),
        cluster: cfg.cluster_name.clone(),
        pending_limit: cfg.repl_backlog,
        secret: secret.map(<[u8]>::to_vec),
        drain_timeout: Duration::from_millis(cfg.repl_drain_timeout_ms),
        copy_share: cfg.repl_copy_share,
    }
}

/// Reads the shared secret: the file's bytes without a trailing newline, never empty.
fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut s = std::fs::read(path)
        .map_err(|e| format!("cannot read the replication secret {}: {e}", path.display()))?;
    while matches!(s.last(), Some(b'\n' | b'\r')) {
        s.pop();
    }
    if s.is_empty() {
        return Err(format!(
            "the replication secret file {} is empty",
            path.display()
        ));
    }
    Ok(s)
}

fn serve(cfg: Config) -> Result<(), String> {
    let secret = cfg
        .repl_secret_file
        .as_deref()
        .map(read_secret)
        .transpose()?;
    let repl = cfg
        .peer
        .as_deref()
        .map(|p| Replicator::new(repl_config(&cfg, p, secret.as_deref())));
    if let Some(r) = &repl {
        if secret.is_none() && !r.cfg.listen.ip().is_loopback() {
            log::warn!(
                "the replication port {} is not on loopback and has no --repl-secret-file: \
                 anyone who can reach it can read and write this cache",
                r.cfg.listen
            );
        }
    }
    let mut store = Store::new(StoreConfig {
        memory_limit: cfg.memory_limit,
        evictions: cfg.evictions,
        item_size_max: cfg.item_size_max,
        cas_enabled: cfg.cas_enabled,
        shards: shard_count(cfg.threads),
        node_id: random_node_id(),
    });
    if let Some(r) = &repl {
        store = store
            .with_hash_seed(pair_hash_seed(&r.cfg.cluster, r.cfg.secret.as_deref()))
            .replicated()
            .with_change_sink(Arc::clone(&r.dirty) as Arc<dyn crate::storage::ChangeSink>);
    }
    let store = Arc::new(store);
    let mut shared = Shared::new(cfg, Arc::clone(&store));
    shared.repl = repl.clone();
    let shared = Arc::new(shared);

    // Signals set the shutdown flag (seen by a start-up still waiting for its copy) and
    // write to a socket pair that the listener's event loop watches.
    let (sig_rx, sig_tx) = StdUnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    sig_rx.set_nonblocking(true).map_err(|e| e.to_string())?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let tx = sig_tx.try_clone().map_err(|e| e.to_string())?;
        signal_hook::low_level::pipe::register(sig, tx)
            .map_err(|e| format!("signal setup: {e}"))?;
        signal_hook::flag::register(sig, Arc::clone(&shared.shutdown))
            .map_err(|e| format!("signal setup: {e}"))?;
    }
    // A client going away mid-write must not kill the process.
    // SAFETY: setting SIGPIPE to ignore is async-signal-safe and process-wide by design.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }

    let clock = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("clock".into())
            .spawn(move || clock_loop(&shared))
            .map_err(|e| format!("cannot start clock thread: {e}"))?
    };

    // The pair's promise: a node that has a peer copies its data before it serves, so the
    // client ports are not even bound until the copy is complete.
    let repl_thread = match &repl {
        Some(r) => {
            let h = r.start(Arc::clone(&store), Arc::clone(&shared.shutdown))?;
            while !r.wait_ready_for(Duration::from_millis(100)) {
                if shared.shutdown.load(Ordering::SeqCst) {
                    break;
                }
            }
            Some(h)
        }
        None => None,
    };

    let result = serve_clients(&shared, sig_rx);
    shared.shutdown.store(true, Ordering::SeqCst);
    if let Some(h) = repl_thread {
        let _ = h.join();
    }
    shared.clock_stop();
    let _ = clock.join();
    result
}

/// A random node id for this process (1..=255); the pair renegotiates on a collision.
fn random_node_id() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() % 255) as u8 + 1
}

fn serve_clients(shared: &Arc<Shared>, sig_rx: StdUnixStream) -> Result<(), String> {
    if shared.shutdown.load(Ordering::SeqCst) {
        return Ok(());
    }
    let cfg = &shared.cfg;
    let listeners = listener::bind_all(cfg)?;
    if listeners.is_empty() {
        return Err("nothing to listen on (-p 0 without -s)".into());
    }
    shared.listeners.store(listeners.len(), Ordering::Relaxed);
    shared
        .total_conns
        .store(listeners.len() as u64, Ordering::Relaxed);
    {
        let mut info = crate::stats::lock(&shared.listen_info);
        for l in &listeners {
            info.push((l.fd(), l.describe().to_string()));
            log::info!("listening on {}", l.describe());
        }
    }

    let mut poll = Poll::new().map_err(|e| format!("cannot create event loop: {e}"))?;
    let waker =
        Waker::new(poll.registry(), WAKE).map_err(|e| format!("cannot create waker: {e}"))?;
    let _ = shared.listener_waker.set(waker);
    let mut sig_rx = UnixStream::from_std(sig_rx);
    poll.registry()
        .register(&mut sig_rx, SIGNAL, Interest::READABLE)
        .map_err(|e| e.to_string())?;

    let mut workers = Vec::new();
    let mut handles = Vec::new();
    for i in 0..cfg.threads.max(1) {
        let wpoll = Poll::new().map_err(|e| format!("cannot create worker loop: {e}"))?;
        let wwaker = Arc::new(
            Waker::new(wpoll.registry(), worker::WAKE).map_err(|e| format!("waker: {e}"))?,
        );
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = worker::Worker::new(wpoll, rx, Arc::clone(shared));
        let h = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || w.run())
            .map_err(|e| format!("cannot start worker: {e}"))?;
        workers.push((tx, wwaker));
        handles.push(h);
    }

    let mut listeners = listeners;
    for (i, l) in listeners.iter_mut().enumerate() {
        let r = match l {
            listener::Listener::Tcp(t, _) => {
                poll.registry().register(t, Token(i), Interest::READABLE)
            }
            listener::Listener::Unix(u, _) => {
                poll.registry().register(u, Token(i), Interest::READABLE)
            }
        };
        r.map_err(|e| format!("cannot watch listener: {e}"))?;
    }
    let mut dispatch = listener::Dispatcher::new(workers);
    let mut events = Events::with_capacity(64);
    // Listeners holding back connections at the limit (maxconns_fast off).
    let mut held = false;
    // The flag may have been set by a signal that arrived before the pipe was watched.
    while !shared.shutdown.load(Ordering::SeqCst) {
        let timeout = Duration::from_millis(if held { 10 } else { 500 });
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("listener poll failed: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNAL => {
                    log::info!("signal received, shutting down");
                    shared.shutdown.store(true, Ordering::SeqCst);
                }
                WAKE => {}
                Token(i) => {
                    if let Some(l) = listeners.get(i) {
                        held |= !dispatch.accept_all(l, shared);
                    }
                }
            }
        }
        // Edge-triggered listeners do not report the backlog again: once below the limit,
        // take what waited.
        if held && shared.curr_conns.load(Ordering::Relaxed) < cfg.max_conns {
            shared.accepting.store(true, Ordering::Relaxed);
            held = false;
            for l in &listeners {
                held |= !dispatch.accept_all(l, shared);
            }
        }
    }

    drop(listeners);
    shared.accepting.store(false, Ordering::Relaxed);
    for (_, w) in &dispatch.workers {
        let _ = w.wake();
    }
    for h in handles {
        let _ = h.join();
    }
    if let Some(p) = &cfg.unix_socket {
        let _ = std::fs::remove_file(p);
    }
    log::info!("stopped");
    Ok(())
}

/// Advances the coarse clock and sweeps expired items, until shutdown.
fn clock_loop(shared: &Shared) {
    let mut last_reap = 0;
    while !shared.clock_wait(Duration::from_millis(100)) {
        let now = shared.tick();
        if now != last_reap {
            last_reap = now;
            shared.store.reap(now);
            shared.reaper_runs.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The key-hash seed both nodes of a pair share: derived from what they already agree on
/// (the cluster name, and the shared secret when there is one, which keeps the seed private
/// to the pair). A node without a peer keeps a random seed.
fn pair_hash_seed(cluster: &str, secret: Option<&[u8]>) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"repcached key hash seed\0");
    h.update(cluster.as_bytes());
    h.update([0u8]);
    h.update(secret.unwrap_or_default());
    let d = h.finalize();
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&d[..8]);
    u64::from_le_bytes(seed)
}

#[cfg(test)]
mod tests {
    use super::shard_count;

    #[test]
    fn shards_grow_with_the_workers_up_to_a_cap() {
        assert_eq!(shard_count(0), 16);
        assert_eq!(shard_count(1), 16);
        assert_eq!(shard_count(3), 64);
        assert_eq!(shard_count(4), 64);
        assert_eq!(shard_count(64), 256);
    }
}
