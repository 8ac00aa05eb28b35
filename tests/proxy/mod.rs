//! A fault-injecting TCP proxy for tests: placed between two nodes of a pair, it passes,
//! cuts, delays, throttles or black-holes the link on command, so partitions can be
//! reproduced deterministically on one machine. Used only by tests.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Close every connection and close new ones at once (a reset link).
    Cut,
    /// Hold each chunk this long before forwarding it.
    Delay(Duration),
    /// Forward at most this many bytes per second in each direction.
    Throttle(u64),
    /// Accept and read everything, forward nothing, close nothing (a silent partition).
    BlackHole,
}

struct Inner {
    mode: Mutex<Mode>,
    stop: AtomicBool,
    /// Bumped on every switch to `Cut`, so pumps of older connections end.
    epoch: AtomicU64,
    forwarded: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running proxy; dropping it stops every thread it started.
pub struct Proxy {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

/// How often blocked threads look at the mode and the stop flag.
const TICK: Duration = Duration::from_millis(20);
/// Throttling measures the rate over windows this long.
const WINDOW: Duration = Duration::from_millis(20);

impl Proxy {
    /// Starts a proxy on a free loopback port that forwards to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let inner = Arc::new(Inner {
            mode: Mutex::new(Mode::Pass),
            stop: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let i = Arc::clone(&inner);
        let h = std::thread::spawn(move || i.accept_loop(listener, target));
        inner.threads.lock().expect("threads").push(h);
        Proxy { addr, inner }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set(&self, mode: Mode) {
        *self.inner.mode.lock().expect("mode") = mode;
        if mode == Mode::Cut {
            self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Bytes forwarded so far, both directions.
    pub fn forwarded(&self) -> u64 {
        self.inner.forwarded.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn mode(&self) -> Mode {
        *self.mode.lock().expect("mode")
    }

    fn accept_loop(self: Arc<Self>, listener: TcpListener, target: SocketAddr) {
        while !self.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((client, _)) => {
                    let _ = client.set_nonblocking(false);
                    match self.mode() {
                        Mode::Cut => {
                            let _ = client.shutdown(Shutdown::Both);
                        }
                        Mode::BlackHole => self.spawn_sink(client),
                        _ => match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                            Ok(server) => self.spawn_pumps(client, server),
                            Err(_) => {
                                let _ = client.shutdown(Shutdown::Both);
                            }
                        },
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
                Err(_) => std::thread::sleep(TICK),
            }
        }
    }

    fn spawn_sink(self: &Arc<Self>, mut s: TcpStream) {
        let me = Arc::clone(self);
        let h = std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(TICK));
            let mut buf = [0u8; 16 * 1024];
            while !me.stop.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        });
        self.threads.lock().expect("threads").push(h);
    }

    fn spawn_pumps(self: &Arc<Self>, a: TcpStream, b: TcpStream) {
        let epoch = self.epoch.load(Ordering::SeqCst);
        for (from, to) in [
            (a.try_clone(), b.try_clone()),
            (b.try_clone(), a.try_clone()),
        ] {
            let (Ok(from), Ok(to)) = (from, to) else {
                return;
            };
            let me = Arc::clone(self);
            let h = std::thread::spawn(move || me.pump(from, to, epoch));
            self.threads.lock().expect("threads").push(h);
        }
    }

    fn pump(&self, mut from: TcpStream, mut to: TcpStream, epoch: u64) {
        let _ = from.set_read_timeout(Some(TICK));
        let mut buf = vec![0u8; 64 * 1024];
        let mut window_start = Instant::now();
        let mut window_bytes = 0u64;
        loop {
            if self.stop.load(Ordering::Relaxed) || self.epoch.load(Ordering::SeqCst) != epoch {
                break;
            }
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(_) => break,
            };
            let mut chunk = &buf[..n];
            match self.mode() {
                Mode::Pass | Mode::Cut => {}
                Mode::BlackHole => continue,
                Mode::Delay(d) => std::thread::sleep(d),
                Mode::Throttle(bps) => {
                    // Forward in slices that keep within `bps`, measured over short windows
                    // so the link trickles instead of bursting once a second (a peer timeout
                    // shorter than a second must see a slow link, not a dead one).
                    let per_window = (bps * WINDOW.as_millis() as u64 / 1000).max(1);
                    while !chunk.is_empty() {
                        if window_start.elapsed() >= WINDOW {
                            window_start = Instant::now();
                            window_bytes = 0;
                        }
                        let room = per_window.saturating_sub(window_bytes) as usize;
                        if room == 0 {
                            std::thread::sleep(WINDOW.saturating_sub(window_start.elapsed()));
                            if self.stop.load(Ordering::Relaxed) {
                                return;
                            }
                            continue;
                        }
                        let take = room.min(chunk.len());
                        if to.write_all(&chunk[..take]).is_err() {
                            return;
                        }
                        self.forwarded.fetch_add(take as u64, Ordering::Relaxed);
                        window_bytes += take as u64;
                        chunk = &chunk[take..];
                    }
                    continue;
                }
            }
            if self.epoch.load(Ordering::SeqCst) != epoch {
                break;
            }
            if to.write_all(chunk).is_err() {
                break;
            }
            self.forwarded
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

impl Drop for Proxy {
    /// Stops every thread; each notices within one tick.
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        loop {
            let batch: Vec<_> = self
                .inner
                .threads
                .lock()
                .expect("threads")
                .drain(..)
                .collect();
            if batch.is_empty() {
                break;
            }
            for t in batch {
                let _ = t.join();
            }
        }
    }
}
