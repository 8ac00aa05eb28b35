//! State every thread of the server reads: the configuration, runtime-adjustable settings,
//! the coarse clock, connection bookkeeping and the stats registry.

use crate::clock::unix_now;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use crate::config::Config;
use crate::stats::{lock, Registry};
use crate::storage::Store;

/// What `stats conns` shows about one open client connection.
pub struct ConnInfo {
    pub fd: i32,
    pub addr: String,
    pub listen_addr: String,
    /// Unix seconds of the last command, written by the owning worker.
    pub last_cmd: AtomicU32,
}

pub struct Shared {
    pub cfg: Config,
    pub store: Arc<Store>,
    pub stats: Registry,
    /// Unix seconds, advanced by the clock thread: memcached's once-per-second
    /// `current_time`, read on every request without a syscall.
    now: AtomicU32,
    pub started: u32,
    /// `verbosity` changes this at run time.
    pub verbosity: AtomicU32,
    pub curr_conns: AtomicUsize,
    pub total_conns: AtomicU64,
    pub rejected_conns: AtomicU64,
    pub listeners: AtomicUsize,
    pub accepting: AtomicBool,
    /// Times accepting was paused because `-c` was reached (maxconns_fast off).
    pub listen_disabled: AtomicU64,
    /// Background expiry sweeps completed (reported as `lru_crawler_starts`).
    pub reaper_runs: AtomicU64,
    /// Set by SIGTERM/SIGINT or the `shutdown` command; shared with the replication thread.
    pub shutdown: Arc<AtomicBool>,
    /// The pair's replication, when a peer is configured.
    pub repl: Option<Arc<crate::replication::Replicator>>,
    pub conns: Mutex<BTreeMap<i32, Arc<ConnInfo>>>,
    /// Listener descriptions (`tcp:127.0.0.1:11211`) by fd, for `stats conns`.
    pub listen_info: Mutex<Vec<(i32, String)>>,
    /// Wakes the listener thread so it notices `shutdown`.
    pub listener_waker: OnceLock<mio::Waker>,
    clock_stop: (Mutex<bool>, Condvar),
}

impl Shared {
    pub fn new(cfg: Config, store: Arc<Store>) -> Shared {
        let now = unix_now();
        Shared {
            verbosity: AtomicU32::new(u32::from(cfg.verbose)),
            cfg,
            store,
            stats: Registry::default(),
            now: AtomicU32::new(now),
            started: now,
            curr_conns: AtomicUsize::new(0),
            total_conns: AtomicU64::new(0),
            rejected_conns: AtomicU64::new(0),
            listeners: AtomicUsize::new(0),
            accepting: AtomicBool::new(true),
            listen_disabled: AtomicU64::new(0),
            reaper_runs: AtomicU64::new(0),
            shutdown: Arc::new(AtomicBool::new(false)),
            repl: None,
            conns: Mutex::new(BTreeMap::new()),
            listen_info: Mutex::new(Vec::new()),
            listener_waker: OnceLock::new(),
            clock_stop: (Mutex::new(false), Condvar::new()),
        }
    }

    #[inline]
    pub fn now(&self) -> u32 {
        self.now.load(Ordering::Relaxed)
    }

    pub fn tick(&self) -> u32 {
        let t = unix_now();
        self.now.store(t, Ordering::Relaxed);
        t
    }

    /// Applies `verbosity`/`-v`: memcached clamps the level at 2 (`-vv`), and so does the
    /// log filter here.
    pub fn set_verbosity(&self, level: u32) {
        let level = level.min(2);
        self.verbosity.store(level, Ordering::Relaxed);
        log::set_max_level(level_filter(level));
    }

    /// Asks the listener thread to stop the server (the `shutdown` command).
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(w) = self.listener_waker.get() {
            if let Err(e) = w.wake() {
                log::error!("cannot wake the listener for shutdown: {e}");
            }
        }
    }

    /// Sleeps up to `d`; true once the clock thread must stop.
    pub fn clock_wait(&self, d: Duration) -> bool {
        let (m, cv) = &self.clock_stop;
        let stop = lock(m);
        if *stop {
            return true;
        }
        let (stop, _) = cv.wait_timeout(stop, d).unwrap_or_else(|e| e.into_inner());
        *stop
    }

    pub fn clock_stop(&self) {
        let (m, cv) = &self.clock_stop;
        *lock(m) = true;
        cv.notify_all();
    }

    pub fn register_conn(&self, info: Arc<ConnInfo>) {
        lock(&self.conns).insert(info.fd, info);
    }

    pub fn unregister_conn(&self, fd: i32) {
        lock(&self.conns).remove(&fd);
    }
}

/// The log filter for a memcached verbosity level (`-v` count).
pub fn level_filter(level: u32) -> log::LevelFilter {
    match level {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}
