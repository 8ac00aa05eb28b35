//! Shared harness for the integration tests: start a server binary on a free loopback port, talk
//! to it over a raw TCP client with deadlines, and stop it by PID.
//!
//! Every test runs against the binary chosen by `REPCACHED_TEST_SERVER`: unset (or `repcached`)
//! means the freshly built `repcached`; `memcached` means `/usr/bin/memcached`, the oracle the
//! tests are validated against; any other value is taken as a path to a server binary.

// Each integration test crate uses a different subset of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The oracle: memcached as Debian ships it.
pub const MEMCACHED: &str = "/usr/bin/memcached";

/// How long any single read or readiness wait may take before the test fails. Generous because
/// the machine is shared, but bounded so a hung server fails the test instead of hanging it.
pub const IO_DEADLINE: Duration = Duration::from_secs(10);

/// The server binary the integration tests exercise.
pub fn target_binary() -> PathBuf {
    match std::env::var("REPCACHED_TEST_SERVER") {
        Ok(v) if v == "memcached" => PathBuf::from(MEMCACHED),
        Ok(v) if !v.is_empty() && v != "repcached" => PathBuf::from(v),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_repcached")),
    }
}

/// True when the tests run against memcached itself (some checks differ only in what the oracle
/// can be asked, never in what it must answer).
pub fn target_is_memcached() -> bool {
    target_binary() == Path::new(MEMCACHED)
}

pub fn memcached_available() -> bool {
    Path::new(MEMCACHED).is_file()
}

/// Whether the tests run as root: memcached then refuses to start without `-u root`, and
/// repcached mirrors that rule. `id -u` avoids a libc dev-dependency.
pub fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// A free port outside the kernel's ephemeral range, for ports a server is told about before
/// it binds them (a peer's replication port): no outgoing connection or `bind(0)` elsewhere
/// can take it in between. Chosen pseudo-randomly per process so parallel tests spread out.
pub fn free_fixed_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (base.wrapping_add(n.wrapping_mul(7919)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

/// A port that was free a moment ago. The server may still lose the race for it; `Server::start`
/// retries with another port when that happens.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A running server process, killed (by PID) and reaped on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    pub bin: PathBuf,
    pub args: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Starts the target binary (see `target_binary`) with extra memcached-style `args`.
    pub fn start(args: &[&str]) -> Server {
        Server::start_bin(&target_binary(), args)
    }

    /// Starts `bin` listening on 127.0.0.1 on a free port, with `args` appended, and waits until
    /// it accepts connections. Panics with the server's stderr if it never becomes ready.
    pub fn start_bin(bin: &Path, args: &[&str]) -> Server {
        let mut last_err = String::new();
        for _attempt in 0..5 {
            match Server::try_start(bin, args) {
                Ok(s) => return s,
                Err((retry, msg)) => {
                    last_err = msg;
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!(
            "server {} {:?} did not start: {last_err}",
            bin.display(),
            args
        );
    }

    fn try_start(bin: &Path, args: &[&str]) -> Result<Server, (bool, String)> {
        let port = free_port();
        let mut full: Vec<String> = vec![
            "-p".into(),
            port.to_string(),
            "-l".into(),
            "127.0.0.1".into(),
        ];
        if running_as_root() {
            full.push("-u".into());
            full.push("root".into());
        }
        full.extend(args.iter().map(|s| s.to_string()));
        let mut child = Command::new(bin)
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| (false, format!("spawn {}: {e}", bin.display())))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
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
        let mut server = Server {
            child,
            port,
            bin: bin.to_path_buf(),
            args: full,
            stderr,
        };
        let deadline = Instant::now() + IO_DEADLINE;
        let addr = server.addr();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                // Give the stderr reader a moment to drain what the process wrote before exiting.
                let drain = Instant::now() + Duration::from_millis(500);
                while Instant::now() < drain && server.stderr_text().is_empty() {
                    thread::sleep(Duration::from_millis(5));
                }
                let text = server.stderr_text();
                let lower = text.to_lowercase();
                let bind_lost = lower.contains("address already in use")
                    || lower.contains("bind")
                    || lower.contains("listen");
                return Err((bind_lost, format!("exited with {status}; stderr:\n{text}")));
            }
            if let Ok(probe) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                // Another test's server may have won the race for this port (and ours will
                // fail to bind): only a server that reports our child's pid is ours.
                match answering_pid(probe) {
                    Some(pid) if pid == server.child.id() => return Ok(server),
                    _ => {
                        let _ = server.child.kill();
                        let _ = server.child.wait();
                        return Err((true, format!("port {port} answered by another process")));
                    }
                }
            }
            if Instant::now() > deadline {
                return Err((
                    false,
                    format!(
                        "not accepting on {addr} within {IO_DEADLINE:?}; stderr:\n{}",
                        server.stderr_text()
                    ),
                ));
            }
            // Poll interval of a readiness wait bounded by the deadline above.
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr())
    }

    /// Everything the server wrote to stderr so far (diagnostics for failures).
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_default()
    }

    /// Resident set size in KiB from /proc/<pid>/status.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM to this (our own) child by PID.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    /// Waits up to `within` for the process to exit; its exit code, if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Polling interval of a bounded wait for process exit.
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `stats` (or `stats <sub>` when `sub` is non-empty) over a fresh connection.
    pub fn stats(&self, sub: &str) -> HashMap<String, String> {
        let mut c = self.connect();
        stats(&mut c, sub)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Child::kill signals exactly this PID (SIGKILL); wait reaps it so no zombie outlives us.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A server thread that panicked is a bug even when the test's own assertions passed:
        // fail loudly (unless this drop is part of an unwinding test already).
        let text = self.stderr_text();
        if text.contains("panicked at") && !thread::panicking() {
            panic!("server {} panicked:\n{text}", self.bin.display());
        }
    }
}

/// A raw client connection. Bytes read past the end of one reply stay buffered for the next.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub deadline: Duration,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_DEADLINE)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Conn {
            stream,
            buf: Vec::new(),
            deadline: IO_DEADLINE,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .set_write_timeout(Some(self.deadline))
            .expect("write timeout");
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads more bytes into the buffer. Ok(false) on EOF (or reset, which is how a server that
    /// closes with unread input looks to us); Err on deadline.
    fn fill(&mut self, until: Instant) -> Result<bool, String> {
        let now = Instant::now();
        if now >= until {
            return Err("deadline".into());
        }
        self.stream
            .set_read_timeout(Some(until - now))
            .map_err(|e| e.to_string())?;
        let mut tmp = [0u8; 65536];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err("deadline".into())
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(false),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn fail(&self, what: &str, why: &str) -> ! {
        panic!(
            "{what}: {why}; {} bytes buffered: {}",
            self.buf.len(),
            escape(&self.buf[..self.buf.len().min(2000)])
        )
    }

    /// Exactly `n` bytes.
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let until = Instant::now() + self.deadline;
        while self.buf.len() < n {
            match self.fill(until) {
                Ok(true) => {}
                Ok(false) => self.fail(&format!("read_n({n})"), "EOF"),
                Err(e) => self.fail(&format!("read_n({n})"), &e),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Bytes up to and including the first occurrence of `term`.
    pub fn read_until(&mut self, term: &[u8]) -> Vec<u8> {
        let until = Instant::now() + self.deadline;
        loop {
            if let Some(pos) = find(&self.buf, term) {
                return self.buf.drain(..pos + term.len()).collect();
            }
            match self.fill(until) {
                Ok(true) => {}
                Ok(false) => self.fail(&format!("read_until({})", escape(term)), "EOF"),
                Err(e) => self.fail(&format!("read_until({})", escape(term)), &e),
            }
        }
    }

    pub fn read_line(&mut self) -> Vec<u8> {
        self.read_until(b"\r\n")
    }

    /// Everything until the server closes the connection.
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let until = Instant::now() + self.deadline;
        loop {
            match self.fill(until) {
                Ok(true) => {}
                Ok(false) => return std::mem::take(&mut self.buf),
                Err(e) => self.fail("read_to_eof", &e),
            }
        }
    }

    /// True if the server closes the connection (EOF or reset) within `within`, having sent
    /// nothing more; false if it is still open at the deadline.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            match self.fill(until) {
                Ok(true) => {}
                Ok(false) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Bytes already received but not consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// One complete reply: any number of `VALUE` (with their data blocks), `STAT` and `ITEM`
    /// lines, up to and including the first other line (`END`, `STORED`, an error, …).
    pub fn read_reply(&mut self) -> Vec<u8> {
        let until = Instant::now() + self.deadline;
        loop {
            if let Some(len) = reply_len(&self.buf) {
                return self.buf.drain(..len).collect();
            }
            match self.fill(until) {
                Ok(true) => {}
                Ok(false) => self.fail("read_reply", "EOF"),
                Err(e) => self.fail("read_reply", &e),
            }
        }
    }

    /// Sends `req` and returns its one reply.
    pub fn request(&mut self, req: &[u8]) -> Vec<u8> {
        self.send(req);
        self.read_reply()
    }
}

/// Sends one meta request and returns its reply: the status line, plus the data block
/// after a `VA` line.
pub fn meta(c: &mut Conn, req: &str) -> String {
    c.send(req.as_bytes());
    let line = c.read_line();
    let mut out = String::from_utf8_lossy(&line).into_owned();
    if let Some(rest) = out.strip_prefix("VA ") {
        let len: usize = rest
            .split(' ')
            .next()
            .and_then(|n| n.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("bad VA line {out:?}"));
        let data = c.read_n(len + 2);
        out.push_str(&String::from_utf8_lossy(&data));
    }
    out
}

/// Sends `text` and returns the reply as a (lossy) string.
pub fn cmd(conn: &mut Conn, text: &str) -> String {
    String::from_utf8_lossy(&conn.request(text.as_bytes())).into_owned()
}

/// `stats [sub]` parsed into name → value.
pub fn stats(conn: &mut Conn, sub: &str) -> HashMap<String, String> {
    let req = if sub.is_empty() {
        "stats\r\n".to_string()
    } else {
        format!("stats {sub}\r\n")
    };
    let reply = cmd(conn, &req);
    let mut map = HashMap::new();
    let mut ended = false;
    for line in reply.split("\r\n") {
        if let Some(rest) = line.strip_prefix("STAT ") {
            let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
            map.insert(k.to_string(), v.to_string());
        } else if line == "END" {
            ended = true;
        }
    }
    assert!(ended, "{req:?} did not end with END: {reply:?}");
    map
}

/// A numeric stat, failing the test if it is missing or not an unsigned integer.
pub fn stat_u64(map: &HashMap<String, String>, name: &str) -> u64 {
    let v = map
        .get(name)
        .unwrap_or_else(|| panic!("stat {name} missing"));
    v.parse()
        .unwrap_or_else(|_| panic!("stat {name} = {v:?} is not a u64"))
}

/// Length of the first complete reply in `buf`, if one is there (see `Conn::read_reply`).
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let rest = buf.get(pos..)?;
        let eol = find(rest, b"\r\n")?;
        let line = &rest[..eol];
        let next = pos + eol + 2;
        if line.starts_with(b"VALUE ") {
            let bytes: usize = std::str::from_utf8(line)
                .ok()
                .and_then(|l| l.split(' ').nth(3))
                .and_then(|b| b.parse().ok())?;
            let end = next + bytes + 2;
            if buf.len() < end {
                return None;
            }
            pos = end;
        } else if line.starts_with(b"STAT ") || line.starts_with(b"ITEM ") {
            pos = next;
        } else {
            return Some(next);
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Printable rendering of raw bytes: `\r`, `\n`, `\t`, `\\` and `\xHH` escapes.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// Polls `f` until it returns true or `within` passes; returns whether it became true. The pause
/// between polls is short and the wait is bounded, so a slow server fails rather than hangs.
pub fn poll_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Builds a storage request: `<verb> <key> <flags> <exptime> <len>\r\n<data>\r\n`.
pub fn store_req(verb: &str, key: &str, flags: u64, exptime: i64, data: &[u8]) -> Vec<u8> {
    let mut v = format!("{verb} {key} {flags} {exptime} {}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// The exact reply memcached gives a `get` hit of one key.
pub fn value_reply(key: &str, flags: u64, data: &[u8]) -> Vec<u8> {
    let mut v = format!("VALUE {key} {flags} {}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\nEND\r\n");
    v
}

/// Asserts two byte strings are equal, printing both escaped on failure.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).take_while(|(a, b)| a == b).count();
        panic!(
            "reply mismatch at byte {at}\n  got:  {}\n  want: {}",
            escape(&got[..got.len().min(3000)]),
            escape(&want[..want.len().min(3000)])
        );
    }
}

/// Asks whoever listens behind `probe` for `stats` and returns the pid it reports.
fn answering_pid(mut probe: TcpStream) -> Option<u32> {
    probe.set_read_timeout(Some(IO_DEADLINE)).ok()?;
    probe.write_all(b"stats\r\n").ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while find(&got, b"END\r\n").is_none() {
        let n = probe.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got)
        .lines()
        .find_map(|l| l.strip_prefix("STAT pid "))
        .and_then(|v| v.trim().parse().ok())
}
pub mod pair;
