//! Binding the client listeners and accepting connections: `-c` enforcement, TCP_NODELAY,
//! and round-robin hand-off of each accepted socket to a worker.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use mio::net::{TcpListener, UnixListener};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;

use super::conn::{Conn, Stream};
use super::shared::{ConnInfo, Shared};

pub enum Listener {
    Tcp(TcpListener, String),
    Unix(UnixListener, String),
}

impl Listener {
    pub fn fd(&self) -> i32 {
        match self {
            Listener::Tcp(l, _) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    pub fn describe(&self) -> &str {
        match self {
            Listener::Tcp(_, d) | Listener::Unix(_, d) => d,
        }
    }
}

fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // With both 0.0.0.0 and :: bound, each must own its own family.
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    Ok(TcpListener::from_std(sock.into()))
}

fn tcp_desc(addr: SocketAddr) -> String {
    format!("tcp:{addr}")
}

/// Binds every listener the configuration asks for. An error names the address.
pub fn bind_all(cfg: &Config) -> Result<Vec<Listener>, String> {
    let mut out = Vec::new();
    if let Some(path) = &cfg.unix_socket {
        // A socket file left by a previous run would make bind fail; memcached removes it too.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                let _ = std::fs::remove_file(path);
            }
        }
        let l = UnixListener::bind(path).map_err(|e| {
            format!(
                "failed to listen on UNIX socket \"{}\": {e}",
                path.display()
            )
        })?;
        use std::os::unix::fs::PermissionsExt;
        let mode = cfg.unix_mask & 0o777;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set mode of \"{}\": {e}", path.display()))?;
        out.push(Listener::Unix(l, format!("unix:{}", path.display())));
        return Ok(out);
    }
    if cfg.port == 0 {
        return Ok(out);
    }
    let addrs: Vec<SocketAddr> = if cfg.listen.is_empty() {
        vec![
            SocketAddr::from(([0, 0, 0, 0], cfg.port)),
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, cfg.port)),
        ]
    } else {
        cfg.listen.clone()
    };
    let wildcard = cfg.listen.is_empty();
    for addr in addrs {
        match bind_tcp(addr, cfg.backlog) {
            Ok(l) => {
                let local = l.local_addr().unwrap_or(addr);
                out.push(Listener::Tcp(l, tcp_desc(local)));
            }
            // A host without IPv6 still serves IPv4 when no address was named.
            Err(e) if wildcard && addr.is_ipv6() => log::info!("not listening on {addr}: {e}"),
            Err(e) => return Err(format!("failed to listen on TCP {addr}: {e}")),
        }
    }
    Ok(out)
}

/// Hands accepted sockets to workers in turn.
pub struct Dispatcher {
    pub workers: Vec<(Sender<Conn>, Arc<mio::Waker>)>,
    next: usize,
}

impl Dispatcher {
    pub fn new(workers: Vec<(Sender<Conn>, Arc<mio::Waker>)>) -> Dispatcher {
        Dispatcher { workers, next: 0 }
    }

    /// Accepts every pending connection on `l`. Returns false when it stopped at the
    /// connection limit with maxconns_fast off: the rest wait in the backlog, as memcached
    /// leaves them, until a connection closes.
    pub fn accept_all(&mut self, l: &Listener, shared: &Shared) -> bool {
        loop {
            if !shared.cfg.maxconns_fast
                && shared.curr_conns.load(Ordering::Relaxed) >= shared.cfg.max_conns
            {
                if shared.accepting.swap(false, Ordering::Relaxed) {
                    shared.listen_disabled.fetch_add(1, Ordering::Relaxed);
                }
                return false;
            }
            let (stream, addr) = match l {
                Listener::Tcp(l, _) => match l.accept() {
                    Ok((s, a)) => {
                        let _ = s.set_nodelay(true);
                        (Stream::Tcp(s), format!("tcp:{a}"))
                    }
                    Err(e) => return accept_error(e),
                },
                Listener::Unix(l, d) => match l.accept() {
                    Ok((s, _)) => (Stream::Unix(s), d.clone()),
                    Err(e) => return accept_error(e),
                },
            };
            shared.total_conns.fetch_add(1, Ordering::Relaxed);
            if shared.curr_conns.load(Ordering::Relaxed) >= shared.cfg.max_conns {
                shared.rejected_conns.fetch_add(1, Ordering::Relaxed);
                reject(stream);
                continue;
            }
            shared.curr_conns.fetch_add(1, Ordering::Relaxed);
            let info = Arc::new(ConnInfo {
                fd: stream.fd(),
                addr,
                listen_addr: l.describe().to_string(),
                last_cmd: AtomicU32::new(shared.now()),
            });
            log::debug!("<{} new client connection", info.fd);
            let (tx, waker) = &self.workers[self.next % self.workers.len()];
            self.next = self.next.wrapping_add(1);
            if tx.send(Conn::new(stream, info)).is_err() || waker.wake().is_err() {
                shared.curr_conns.fetch_sub(1, Ordering::Relaxed);
                log::error!("worker is gone; dropping a connection");
            }
        }
    }
}

fn accept_error(e: io::Error) -> bool {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
        // Out of descriptors and similar: the next readiness event retries.
        _ => log::warn!("accept failed: {e}"),
    }
    true
}

/// memcached's maxconns_fast answer: one error line, then close.
fn reject(mut stream: Stream) {
    let _ = stream.write(b"ERROR Too many open connections\r\n");
}
