//! mcprobe: the replication probes behind bench/run.sh scenarios 4 and 5. `lag` measures
//! how long a `set` on one node takes to become visible on its peer; `ready` times how long
//! a starting node takes to open its client port and hold a given number of items.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

#[path = "../flags.rs"]
mod flags;
use flags::{num, secs};

const USAGE: &str = "\
usage: mcprobe lag   --set-port P --get-port P [options]
       mcprobe ready --port P --items N [options]
common:
  --host H              server address (default 127.0.0.1)
  --timeout S           hard limit on the whole run in seconds (default 60)
  --output F            text | kv (default text)
lag: each probe sets a fresh key on --set-port, then polls --get-port with `get` without
sleeping until the value is there; a pause of --gap-ms separates probes.
  --probes N            at most this many probes (default 1000)
  --duration S          stop starting probes after this long (default 10)
  --gap-ms MS           pause between probes (default 5)
  --probe-timeout-ms MS a probe not visible by then counts as lost (default 1000)
  --value-size B        probe value length (default 100)
  --seed N              makes the probe keys of separate runs distinct (default: time)
ready: polls until the port accepts a connection, then `stats` until curr_items >= N.
  --items N             item count that means the copy is complete
  --since T             unix time in seconds (fractional) the wait counts from (default: now)
  --interval-ms MS      pause between polls (default 2)
exit status: 0 clean, 2 figures printed but some probes were lost / not ready in time,
1 could not run, 64 bad options";

/// A reply line longer than this is not one a memcached server sends to get/set/stats.
const MAX_LINE: usize = 4096;
/// Probe values are small; anything bigger in a reply means the stream is out of step.
const MAX_VALUE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
struct Common {
    host: String,
    timeout: Duration,
    kv: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct LagOpts {
    set_port: u16,
    get_port: u16,
    probes: u64,
    duration: Duration,
    gap: Duration,
    probe_timeout: Duration,
    value_size: usize,
    seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct ReadyOpts {
    port: u16,
    items: u64,
    since: Option<f64>,
    interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Lag(LagOpts),
    Ready(ReadyOpts),
}

fn millis(s: &str, flag: &str) -> Result<Duration, String> {
    let ms: u64 = num(s, flag)?;
    if ms > 86_400_000 {
        return Err(format!("{flag}: {s} ms is more than a day"));
    }
    Ok(Duration::from_millis(ms))
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Parses everything after the program name. `Ok(None)` means help was asked for.
fn parse(args: &[String]) -> Result<Option<(Common, Mode)>, String> {
    let mut it = args.iter();
    let mode = match it.next().map(String::as_str) {
        Some("lag") => "lag",
        Some("ready") => "ready",
        Some("-h" | "--help") | None => return Ok(None),
        Some(other) => return Err(format!("unknown mode {other:?} (lag or ready)")),
    };
    let mut c = Common {
        host: "127.0.0.1".into(),
        timeout: Duration::from_secs(60),
        kv: false,
    };
    let mut lag = LagOpts {
        set_port: 0,
        get_port: 0,
        probes: 1000,
        duration: Duration::from_secs(10),
        gap: Duration::from_millis(5),
        probe_timeout: Duration::from_millis(1000),
        value_size: 100,
        seed: now_unix().to_bits(),
    };
    let mut ready = ReadyOpts {
        port: 0,
        items: 0,
        since: None,
        interval: Duration::from_millis(2),
    };
    let mut items_given = false;
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        if f == "-h" || f == "--help" {
            return Ok(None);
        }
        let v = it
            .next()
            .map(String::as_str)
            .ok_or_else(|| format!("{f} needs a value"))?;
        match (mode, f) {
            (_, "--host") => c.host = v.to_string(),
            (_, "--timeout") => c.timeout = secs(v, f)?,
            (_, "--output") => {
                c.kv = match v {
                    "kv" => true,
                    "text" => false,
                    other => return Err(format!("--output: unknown format {other:?}")),
                }
            }
            ("lag", "--set-port") => lag.set_port = num(v, f)?,
            ("lag", "--get-port") => lag.get_port = num(v, f)?,
            ("lag", "--probes") => lag.probes = num(v, f)?,
            ("lag", "--duration") => lag.duration = secs(v, f)?,
            ("lag", "--gap-ms") => lag.gap = millis(v, f)?,
            ("lag", "--probe-timeout-ms") => lag.probe_timeout = millis(v, f)?,
            ("lag", "--value-size") => lag.value_size = num(v, f)?,
            ("lag", "--seed") => lag.seed = num(v, f)?,
            ("ready", "--port") => ready.port = num(v, f)?,
            ("ready", "--items") => {
                ready.items = num(v, f)?;
                items_given = true;
            }
            ("ready", "--since") => {
                let t: f64 = num(v, f)?;
                if !t.is_finite() || t < 0.0 {
                    return Err(format!("{f}: {v} is not a unix time"));
                }
                ready.since = Some(t);
            }
            ("ready", "--interval-ms") => ready.interval = millis(v, f)?,
            _ => return Err(format!("unknown option {f:?} for {mode}")),
        }
    }
    if c.timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    let m = if mode == "lag" {
        if lag.set_port == 0 || lag.get_port == 0 {
            return Err("lag needs --set-port and --get-port".into());
        }
        if lag.probes == 0 {
            return Err("--probes must be at least 1".into());
        }
        if lag.value_size == 0 || lag.value_size > MAX_VALUE {
            return Err(format!("--value-size must be 1..={MAX_VALUE}"));
        }
        if lag.probe_timeout.is_zero() {
            return Err("--probe-timeout-ms must be positive".into());
        }
        Mode::Lag(lag)
    } else {
        if ready.port == 0 || !items_given {
            return Err("ready needs --port and --items".into());
        }
        Mode::Ready(ready)
    };
    Ok(Some((c, m)))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port}: no address"))
}

/// A blocking text-protocol connection whose every read is bounded by a socket timeout.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
    line: Vec<u8>,
}

/// What a `get` of one key answered.
#[derive(Debug, PartialEq, Eq)]
enum GetReply {
    Miss,
    Hit(Vec<u8>),
}

impl Conn {
    fn open(addr: SocketAddr, io_timeout: Duration) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, io_timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(io_timeout))?;
        s.set_write_timeout(Some(io_timeout))?;
        let w = s.try_clone()?;
        Ok(Conn {
            r: BufReader::new(s),
            w,
            line: Vec::with_capacity(256),
        })
    }

    /// Reads one CRLF-terminated line into `self.line` (without the CRLF).
    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        let n = io::Read::take(&mut self.r, MAX_LINE as u64).read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        if self.line.pop() != Some(b'\n') {
            return Err(bad("reply line too long"));
        }
        if self.line.pop() != Some(b'\r') {
            return Err(bad("reply line without CRLF"));
        }
        Ok(())
    }

    fn set(&mut self, key: &str, value: &[u8]) -> io::Result<()> {
        let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
        self.w.write_all(&req)?;
        self.read_line()?;
        if self.line != b"STORED" {
            return Err(bad(&format!(
                "set answered {:?}",
                String::from_utf8_lossy(&self.line)
            )));
        }
        Ok(())
    }

    fn get(&mut self, key: &str) -> io::Result<GetReply> {
        self.w.write_all(format!("get {key}\r\n").as_bytes())?;
        self.read_line()?;
        if self.line == b"END" {
            return Ok(GetReply::Miss);
        }
        let len = value_len(&self.line, key)?;
        let mut data = vec![0u8; len + 2];
        io::Read::read_exact(&mut self.r, &mut data)?;
        if data.get(len..) != Some(b"\r\n".as_slice()) {
            return Err(bad("value not followed by CRLF"));
        }
        data.truncate(len);
        self.read_line()?;
        if self.line != b"END" {
            return Err(bad("hit not followed by END"));
        }
        Ok(GetReply::Hit(data))
    }

    /// `stats` as (name, value) pairs.
    fn stats(&mut self) -> io::Result<Vec<(String, String)>> {
        self.w.write_all(b"stats\r\n")?;
        let mut out = Vec::new();
        // A stats reply has a few hundred lines at most; more means a desync.
        for _ in 0..10_000 {
            self.read_line()?;
            if self.line == b"END" {
                return Ok(out);
            }
            let l = String::from_utf8_lossy(&self.line);
            let mut f = l.split(' ');
            match (f.next(), f.next(), f.next()) {
                (Some("STAT"), Some(k), Some(v)) => out.push((k.to_string(), v.to_string())),
                _ => return Err(bad(&format!("unexpected stats line {l:?}"))),
            }
        }
        Err(bad("stats reply without END"))
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// The data length of a `VALUE <key> <flags> <bytes>` line, checked against the key asked.
fn value_len(line: &[u8], key: &str) -> io::Result<usize> {
    let l = std::str::from_utf8(line).map_err(|_| bad("reply line is not UTF-8"))?;
    let mut f = l.split(' ');
    match (f.next(), f.next(), f.next(), f.next()) {
        (Some("VALUE"), Some(k), Some(_flags), Some(n)) if k == key => {
            let n: usize = n.parse().map_err(|_| bad("bad VALUE length"))?;
            if n > MAX_VALUE {
                return Err(bad("VALUE longer than any probe"));
            }
            Ok(n)
        }
        _ => Err(bad(&format!("unexpected get reply {l:?}"))),
    }
}

/// The probe value: a unique prefix padded to the requested size, so a stale value of
/// an earlier run can never be mistaken for this probe's.
fn probe_value(seed: u64, i: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{seed:x}.{i}.").into_bytes();
    v.resize(size.max(v.len()), b'v');
    v.truncate(size);
    v
}

fn hist() -> Result<Histogram<u64>, String> {
    // 1 ns .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    h.saturating_record(ns.max(1));
}

fn pct_us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

fn print(c: &Common, title: &str, fields: &[(&str, String)]) {
    if c.kv {
        let kv: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{}", kv.join(" "));
    } else {
        println!("{title}");
        for (k, v) in fields {
            println!("  {k:<22} {v}");
        }
    }
}

/// Returns whether every probe became visible.
fn run_lag(c: &Common, o: &LagOpts) -> Result<bool, String> {
    let start = Instant::now();
    let hard = start + c.timeout;
    let stop_starting = start + o.duration.min(c.timeout);
    let io_timeout = o.probe_timeout.max(Duration::from_millis(500));
    let set_addr = resolve(&c.host, o.set_port)?;
    let get_addr = resolve(&c.host, o.get_port)?;
    let mut a = Conn::open(set_addr, io_timeout).map_err(|e| format!("connect {set_addr}: {e}"))?;
    let mut b = Conn::open(get_addr, io_timeout).map_err(|e| format!("connect {get_addr}: {e}"))?;
    // ack: from A's STORED to the first get on B that returns the value (the window in
    // which an acknowledged write exists on A only). send: from writing the set to then.
    let mut ack = hist()?;
    let mut send = hist()?;
    let mut set_rtt = hist()?;
    let (mut done, mut lost, mut polls) = (0u64, 0u64, 0u64);
    let mut stale = 0u64;
    for i in 0..o.probes {
        let now = Instant::now();
        if now >= stop_starting || now + o.probe_timeout >= hard {
            break;
        }
        let key = format!("mcprobe:{:x}:{i}", o.seed);
        let value = probe_value(o.seed, i, o.value_size);
        let t0 = Instant::now();
        a.set(&key, &value)
            .map_err(|e| format!("probe {i}: set on {set_addr}: {e}"))?;
        let t1 = Instant::now();
        record(&mut set_rtt, t1 - t0);
        loop {
            polls += 1;
            match b
                .get(&key)
                .map_err(|e| format!("probe {i}: get on {get_addr}: {e}"))?
            {
                GetReply::Hit(v) if v == value => {
                    let t2 = Instant::now();
                    record(&mut ack, t2 - t1);
                    record(&mut send, t2 - t0);
                    done += 1;
                    break;
                }
                // The key is fresh, so any other value is a bug worth counting.
                GetReply::Hit(_) => stale += 1,
                GetReply::Miss => {}
            }
            if t1.elapsed() >= o.probe_timeout {
                lost += 1;
                break;
            }
        }
        if !o.gap.is_zero() {
            std::thread::sleep(o.gap);
        }
    }
    let f2 = |v: f64| format!("{v:.2}");
    let fields = vec![
        ("probes", (done + lost).to_string()),
        ("visible", done.to_string()),
        ("lost", lost.to_string()),
        ("wrong_value", stale.to_string()),
        (
            "polls_per_probe",
            f2(polls as f64 / (done + lost).max(1) as f64),
        ),
        ("lag_p50_us", f2(pct_us(&ack, 0.50))),
        ("lag_p99_us", f2(pct_us(&ack, 0.99))),
        ("lag_p999_us", f2(pct_us(&ack, 0.999))),
        ("lag_max_us", f2(ack.max() as f64 / 1000.0)),
        ("lag_mean_us", f2(ack.mean() / 1000.0)),
        ("send_p50_us", f2(pct_us(&send, 0.50))),
        ("send_p99_us", f2(pct_us(&send, 0.99))),
        ("set_p50_us", f2(pct_us(&set_rtt, 0.50))),
        ("set_p99_us", f2(pct_us(&set_rtt, 0.99))),
        ("secs", format!("{:.3}", start.elapsed().as_secs_f64())),
    ];
    print(
        c,
        "replication lag (lag: A's STORED -> visible on B; send: set written -> visible)",
        &fields,
    );
    Ok(lost == 0 && stale == 0)
}

/// Returns whether the node was ready before the timeout.
fn run_ready(c: &Common, o: &ReadyOpts) -> Result<bool, String> {
    let since = o.since.unwrap_or_else(now_unix);
    let elapsed = || now_unix() - since;
    let start = Instant::now();
    let addr = resolve(&c.host, o.port)?;
    let io_timeout = Duration::from_millis(500);
    let mut port_s = None;
    let mut items_s = None;
    let mut items = 0u64;
    let mut polls = 0u64;
    let mut conn: Option<Conn> = None;
    while start.elapsed() < c.timeout {
        polls += 1;
        if conn.is_none() {
            if let Ok(cn) = Conn::open(addr, io_timeout) {
                port_s = Some(elapsed());
                conn = Some(cn);
            }
        }
        if let Some(cn) = conn.as_mut() {
            match cn.stats() {
                Ok(st) => {
                    items = st
                        .iter()
                        .find(|(k, _)| k == "curr_items")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    if items >= o.items {
                        items_s = Some(elapsed());
                        break;
                    }
                }
                // A node may close early connections while it starts: dial again.
                Err(_) => conn = None,
            }
        }
        std::thread::sleep(o.interval);
    }
    let s = |v: Option<f64>| v.map_or_else(|| "none".to_string(), |t| format!("{t:.4}"));
    let fields = vec![
        ("port_open_s", s(port_s)),
        ("items_ready_s", s(items_s)),
        ("items", items.to_string()),
        ("items_wanted", o.items.to_string()),
        ("polls", polls.to_string()),
    ];
    print(c, "node readiness (seconds since --since)", &fields);
    Ok(items_s.is_some())
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (c, mode) = match parse(&argv) {
        Ok(Some(p)) => p,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("mcprobe: {e}\n{USAGE}");
            std::process::exit(64);
        }
    };
    let r = match &mode {
        Mode::Lag(o) => run_lag(&c, o),
        Mode::Ready(o) => run_ready(&c, o),
    };
    match r {
        Ok(true) => {}
        Ok(false) => std::process::exit(2),
        Err(e) => {
            eprintln!("mcprobe: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn p(s: &str) -> Result<Option<(Common, Mode)>, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    #[test]
    fn parses_both_modes_and_rejects_bad_input() {
        let (c, m) = p("lag --set-port 1 --get-port 2 --probes 7 --gap-ms 0 --output kv")
            .unwrap()
            .unwrap();
        assert!(c.kv);
        match m {
            Mode::Lag(o) => {
                assert_eq!((o.set_port, o.get_port, o.probes), (1, 2, 7));
                assert!(o.gap.is_zero());
            }
            Mode::Ready(_) => panic!("wrong mode"),
        }
        let (_, m) = p("ready --port 5 --items 0 --since 12.5").unwrap().unwrap();
        assert_eq!(
            m,
            Mode::Ready(ReadyOpts {
                port: 5,
                items: 0,
                since: Some(12.5),
                interval: Duration::from_millis(2),
            })
        );
        assert!(p("lag --set-port 1").is_err());
        assert!(p("ready --port 5").is_err());
        assert!(p("ready --port 5 --items 1 --set-port 3").is_err());
        assert!(p("lag --set-port 1 --get-port 2 --probes 0").is_err());
        assert!(p("lag --set-port 1 --get-port 2 --timeout nan").is_err());
        assert!(p("bogus").is_err());
        assert!(p("lag --help").unwrap().is_none());
    }

    #[test]
    fn probe_values_are_sized_and_distinct() {
        let a = probe_value(1, 1, 100);
        let b = probe_value(1, 2, 100);
        assert_eq!(a.len(), 100);
        assert_ne!(a, b);
        assert_eq!(probe_value(0xabc, 3, 4), b"abc.".to_vec());
    }

    #[test]
    fn value_line_is_checked() {
        assert_eq!(value_len(b"VALUE k 0 5", "k").unwrap(), 5);
        assert!(value_len(b"VALUE other 0 5", "k").is_err());
        assert!(value_len(b"VALUE k 0 x", "k").is_err());
        assert!(value_len(b"VALUE k 0 99999999999", "k").is_err());
        assert!(value_len(b"SERVER_ERROR oops", "k").is_err());
    }

    /// A scripted server on a free port: reads one request line and answers `reply`.
    fn serve_once(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((s, _)) = l.accept() {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let mut w = s;
                let _ = w.write_all(reply);
            }
        });
        addr
    }

    #[test]
    fn get_parses_hit_and_miss_and_rejects_garbage() {
        let t = Duration::from_secs(5);
        let mut c = Conn::open(serve_once(b"VALUE k 0 3\r\nabc\r\nEND\r\n"), t).unwrap();
        assert_eq!(c.get("k").unwrap(), GetReply::Hit(b"abc".to_vec()));
        let mut c = Conn::open(serve_once(b"END\r\n"), t).unwrap();
        assert_eq!(c.get("k").unwrap(), GetReply::Miss);
        let mut c = Conn::open(serve_once(b"VALUE k 0 3\r\nabcd\r\nEND\r\n"), t).unwrap();
        assert!(c.get("k").is_err());
        let mut c = Conn::open(serve_once(b"ERROR\r\n"), t).unwrap();
        assert!(c.get("k").is_err());
    }

    #[test]
    fn stats_reads_until_end() {
        let t = Duration::from_secs(5);
        let mut c = Conn::open(
            serve_once(b"STAT pid 1\r\nSTAT curr_items 42\r\nEND\r\n"),
            t,
        )
        .unwrap();
        let st = c.stats().unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(st[1], ("curr_items".to_string(), "42".to_string()));
    }
}
