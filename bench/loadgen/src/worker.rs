//! One client thread: its share of the connections, its own mio poll, and the phases
//! (preload, warm-up, measured) it drives them through.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::args::{index_digits, Options, Stop};
use crate::proto::{parse_get, parse_set, Parse, Reply, RequestWriter, MAX_REPLY_VALUE};

const READ_BUF: usize = 64 * 1024;
/// A receive buffer never grows past this: one maximal value plus slack.
const READ_BUF_MAX: usize = MAX_REPLY_VALUE + READ_BUF;
/// Longest single wait in poll, so deadlines are noticed even when nothing arrives.
const POLL_SLICE: Duration = Duration::from_millis(50);

/// Totals one thread hands back; the main thread sums them.
pub struct ThreadStats {
    /// Replies to measured-phase requests that completed inside the phase.
    pub ops: u64,
    pub gets: u64,
    pub sets: u64,
    pub hits: u64,
    pub misses: u64,
    /// Error replies and lost requests in the measured phase.
    pub errors: u64,
    /// Replies the stream could not be parsed as (the connection is then dropped).
    pub proto_errors: u64,
    pub conns_lost: u64,
    /// Every reply received, in every phase: what the server did work for.
    pub all_ops: u64,
    pub preload_ops: u64,
    /// Errors outside the measured phase (preload, warm-up).
    pub setup_errors: u64,
    pub timed_out: bool,
    /// Latency of measured-phase requests, nanoseconds.
    pub hist: Histogram<u64>,
    /// Wall time of the measured phase: the duration, or until the last reply (--ops).
    pub elapsed: Duration,
    pub cpu_user: Duration,
    pub cpu_sys: Duration,
}

impl ThreadStats {
    fn new() -> Result<Self, String> {
        // 1 ns .. 60 s at 3 significant digits; slower replies are clamped, not lost.
        let hist = Histogram::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| format!("histogram: {e}"))?;
        Ok(ThreadStats {
            ops: 0,
            gets: 0,
            sets: 0,
            hits: 0,
            misses: 0,
            errors: 0,
            proto_errors: 0,
            conns_lost: 0,
            all_ops: 0,
            preload_ops: 0,
            setup_errors: 0,
            timed_out: false,
            hist,
            elapsed: Duration::ZERO,
            cpu_user: Duration::ZERO,
            cpu_sys: Duration::ZERO,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    Set,
}

#[derive(Clone, Copy)]
struct Inflight {
    kind: Kind,
    phase: PhaseKind,
    sent: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PhaseKind {
    Preload,
    Warmup,
    Measured,
}

/// splitmix64: tiny, fast, and good enough to spread keys and choose get/set.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n without a division (Lemire's multiply-shift).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// Where request keys and kinds come from in a phase.
enum Source {
    /// Sets of keys `next, next+stride, ...` below `end`: every key of this thread once.
    Sequential { next: u64, stride: u64, end: u64 },
    /// Random keys and kinds; `budget` counts the requests still to issue (None: no cap).
    Random { budget: Option<u64> },
}

struct Gen {
    rng: Rng,
    keys: u64,
    get_threshold: u64,
    always_get: bool,
}

impl Gen {
    fn next(&mut self, src: &mut Source) -> Option<(Kind, u64)> {
        match src {
            Source::Sequential { next, stride, end } => {
                if *next >= *end {
                    return None;
                }
                let idx = *next;
                *next = next.saturating_add(*stride);
                Some((Kind::Set, idx))
            }
            Source::Random { budget } => {
                if let Some(b) = budget {
                    if *b == 0 {
                        return None;
                    }
                    *b -= 1;
                }
                let kind = if self.always_get || self.rng.next() < self.get_threshold {
                    Kind::Get
                } else {
                    Kind::Set
                };
                Some((kind, self.rng.below(self.keys)))
            }
        }
    }
}

struct Conn {
    stream: TcpStream,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    inflight: VecDeque<Inflight>,
    alive: bool,
}

/// What a phase needs to know while replies are tallied.
struct Tally<'a> {
    stats: &'a mut ThreadStats,
    /// Replies of measured requests count only if they complete before this.
    count_until: Option<Instant>,
    /// Requests of all phases still awaiting replies, across this thread's connections.
    outstanding: usize,
}

impl Tally<'_> {
    fn complete(&mut self, req: Inflight, reply: Reply, now: Instant) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.stats.all_ops += 1;
        match req.phase {
            PhaseKind::Preload => {
                self.stats.preload_ops += 1;
                if reply.is_error() {
                    self.stats.setup_errors += 1;
                }
                return;
            }
            PhaseKind::Warmup => {
                if reply.is_error() {
                    self.stats.setup_errors += 1;
                }
                return;
            }
            PhaseKind::Measured => {}
        }
        if self.count_until.is_some_and(|end| now >= end) {
            return;
        }
        let s = &mut *self.stats;
        s.ops += 1;
        match req.kind {
            Kind::Get => s.gets += 1,
            Kind::Set => s.sets += 1,
        }
        match reply {
            Reply::Hit => s.hits += 1,
            Reply::Miss => s.misses += 1,
            Reply::Stored => {}
            _ => s.errors += 1,
        }
        let ns =
            u64::try_from(now.saturating_duration_since(req.sent).as_nanos()).unwrap_or(u64::MAX);
        s.hist.saturating_record(ns.max(1));
    }

    fn lost(&mut self, req: Inflight) {
        self.outstanding = self.outstanding.saturating_sub(1);
        match req.phase {
            PhaseKind::Measured => self.stats.errors += 1,
            _ => self.stats.setup_errors += 1,
        }
    }
}

impl Conn {
    fn kill(&mut self, poll: &Poll, tally: &mut Tally) {
        if !self.alive {
            return;
        }
        self.alive = false;
        tally.stats.conns_lost += 1;
        let _ = poll.registry().deregister(&mut self.stream);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        while let Some(req) = self.inflight.pop_front() {
            tally.lost(req);
        }
    }

    /// Tops the pipeline up to `depth` requests in flight, all stamped with one clock read.
    fn fill(
        &mut self,
        depth: usize,
        phase: PhaseKind,
        src: &mut Source,
        gen: &mut Gen,
        w: &mut RequestWriter,
        tally: &mut Tally,
    ) {
        if !self.alive || self.inflight.len() >= depth {
            return;
        }
        let now = Instant::now();
        while self.inflight.len() < depth {
            let Some((kind, idx)) = gen.next(src) else {
                break;
            };
            match kind {
                Kind::Get => w.get(idx, &mut self.wbuf),
                Kind::Set => w.set(idx, &mut self.wbuf),
            }
            self.inflight.push_back(Inflight {
                kind,
                phase,
                sent: now,
            });
            tally.outstanding += 1;
        }
    }

    fn flush(&mut self, poll: &Poll, tally: &mut Tally) {
        while self.alive && self.wpos < self.wbuf.len() {
            let pending = self.wbuf.get(self.wpos..).unwrap_or_default();
            match self.stream.write(pending) {
                Ok(0) => self.kill(poll, tally),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.kill(poll, tally),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
    }

    /// Makes room at the end of the receive buffer: compact first, grow only when one
    /// reply is bigger than the whole buffer. False if no room can be made.
    fn make_room(&mut self, need: usize) -> bool {
        if self.rend < self.rbuf.len() {
            return true;
        }
        if self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
            return true;
        }
        let want = need.max(self.rbuf.len() * 2).min(READ_BUF_MAX);
        if want <= self.rbuf.len() {
            return false;
        }
        self.rbuf.resize(want, 0);
        true
    }

    fn on_readable(&mut self, poll: &Poll, tally: &mut Tally) {
        let mut need = 0;
        while self.alive {
            if !self.make_room(need) {
                tally.stats.proto_errors += 1;
                self.kill(poll, tally);
                return;
            }
            let space = self.rbuf.len() - self.rend;
            let Some(dst) = self.rbuf.get_mut(self.rend..) else {
                return;
            };
            match self.stream.read(dst) {
                Ok(0) => {
                    self.kill(poll, tally);
                    return;
                }
                Ok(n) => {
                    self.rend += n;
                    need = self.parse(Instant::now(), poll, tally);
                    // A short read drained the socket (edge-triggered epoll reports new
                    // data as a new edge), which saves the read that would say WouldBlock.
                    if n < space {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.kill(poll, tally);
                    return;
                }
            }
        }
    }

    /// Consumes every complete reply; returns the bytes the next reply needs buffered.
    fn parse(&mut self, now: Instant, poll: &Poll, tally: &mut Tally) -> usize {
        while self.rstart < self.rend {
            let Some(front) = self.inflight.front().copied() else {
                // Bytes nobody asked for: the stream is out of step.
                tally.stats.proto_errors += 1;
                self.kill(poll, tally);
                return 0;
            };
            let buf = self.rbuf.get(self.rstart..self.rend).unwrap_or_default();
            let parsed = match front.kind {
                Kind::Get => parse_get(buf),
                Kind::Set => parse_set(buf),
            };
            match parsed {
                Parse::Incomplete { need } => return need,
                Parse::Bad => {
                    tally.stats.proto_errors += 1;
                    self.kill(poll, tally);
                    return 0;
                }
                Parse::Done { reply, used } => {
                    self.rstart += used;
                    self.inflight.pop_front();
                    tally.complete(front, reply, now);
                }
            }
        }
        self.rstart = 0;
        self.rend = 0;
        0
    }
}

fn connect(addr: SocketAddr, pipeline: usize, value_size: usize) -> Result<Conn, String> {
    let s = StdStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    s.set_nonblocking(true)
        .map_err(|e| format!("nonblocking: {e}"))?;
    let per_req = value_size + 300;
    Ok(Conn {
        stream: TcpStream::from_std(s),
        wbuf: Vec::with_capacity(per_req.saturating_mul(pipeline)),
        wpos: 0,
        rbuf: vec![0; READ_BUF.max(per_req.saturating_mul(2))],
        rstart: 0,
        rend: 0,
        inflight: VecDeque::with_capacity(pipeline),
        alive: true,
    })
}

/// CPU time of the calling thread (user, system).
fn thread_cpu() -> (Duration, Duration) {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if rc != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

pub struct Worker<'a> {
    pub id: usize,
    pub conns: usize,
    pub opts: &'a Options,
    pub addr: SocketAddr,
    pub barrier: &'a Barrier,
    /// The hard stop for the whole run.
    pub deadline: Instant,
}

struct Ctx {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    gen: Gen,
    writer: RequestWriter,
    depth: usize,
}

impl Worker<'_> {
    /// Runs every phase. Always reaches the barrier, even after a failed connect, so
    /// the other threads are never left waiting.
    pub fn run(self) -> Result<ThreadStats, String> {
        let setup = self.setup();
        let mut stats = ThreadStats::new()?;
        let mut ctx = match setup {
            Ok(mut ctx) => {
                if self.opts.preload {
                    let threads = self.opts.threads as u64;
                    let src = Source::Sequential {
                        next: self.id as u64,
                        stride: threads,
                        end: self.opts.keys,
                    };
                    self.phase(&mut ctx, &mut stats, PhaseKind::Preload, src, None);
                }
                self.barrier.wait();
                ctx
            }
            Err(e) => {
                self.barrier.wait();
                return Err(e);
            }
        };
        if let Stop::Duration(_) = self.opts.stop {
            if !self.opts.warmup.is_zero() {
                let end = Instant::now() + self.opts.warmup;
                let src = Source::Random { budget: None };
                self.phase(&mut ctx, &mut stats, PhaseKind::Warmup, src, Some(end));
            }
        }
        let (src, end) = match self.opts.stop {
            Stop::Duration(d) => (Source::Random { budget: None }, Some(Instant::now() + d)),
            Stop::Ops(n) => {
                let t = self.opts.threads as u64;
                let share = n / t + u64::from((self.id as u64) < n % t);
                (
                    Source::Random {
                        budget: Some(share),
                    },
                    None,
                )
            }
        };
        if matches!(src, Source::Random { budget: Some(0) }) {
            return Ok(stats);
        }
        let (u0, s0) = thread_cpu();
        let start = Instant::now();
        let last = self.phase(&mut ctx, &mut stats, PhaseKind::Measured, src, end);
        let (u1, s1) = thread_cpu();
        stats.cpu_user = u1.saturating_sub(u0);
        stats.cpu_sys = s1.saturating_sub(s0);
        stats.elapsed = match end {
            Some(end) => end.saturating_duration_since(start),
            None => last.saturating_duration_since(start),
        };
        Ok(stats)
    }

    fn setup(&self) -> Result<Ctx, String> {
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        let mut conns = Vec::with_capacity(self.conns);
        for i in 0..self.conns {
            let mut c = connect(self.addr, self.opts.pipeline, self.opts.value_size)?;
            poll.registry()
                .register(
                    &mut c.stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("register: {e}"))?;
            conns.push(c);
        }
        let o = self.opts;
        let seed = o
            .seed
            .wrapping_add((self.id as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
        Ok(Ctx {
            poll,
            events: Events::with_capacity(1024),
            conns,
            gen: Gen {
                rng: Rng(seed),
                keys: o.keys,
                get_threshold: (o.get_ratio * 18_446_744_073_709_551_616.0) as u64,
                always_get: o.get_ratio >= 1.0,
            },
            writer: RequestWriter::new(o.key_size, index_digits(o.keys), o.value_size),
            depth: o.pipeline,
        })
    }

    /// Drives one phase to its end: the deadline `until` if given, otherwise until the
    /// source is exhausted and every reply is in. Returns the time of the last reply.
    fn phase(
        &self,
        ctx: &mut Ctx,
        stats: &mut ThreadStats,
        phase: PhaseKind,
        mut src: Source,
        until: Option<Instant>,
    ) -> Instant {
        let outstanding = ctx.conns.iter().map(|c| c.inflight.len()).sum();
        let mut tally = Tally {
            stats,
            count_until: until,
            outstanding,
        };
        let mut last = Instant::now();
        let Ctx {
            poll,
            events,
            conns,
            gen,
            writer,
            depth,
        } = ctx;
        for c in conns.iter_mut() {
            c.fill(*depth, phase, &mut src, gen, writer, &mut tally);
            c.flush(poll, &mut tally);
        }
        loop {
            let now = Instant::now();
            if until.is_some_and(|end| now >= end) {
                break;
            }
            if now >= self.deadline {
                tally.stats.timed_out = true;
                break;
            }
            if !conns.iter().any(|c| c.alive) {
                break;
            }
            if until.is_none() && tally.outstanding == 0 {
                // Nothing in flight after a fill means the source is exhausted.
                break;
            }
            let wait = until
                .unwrap_or(self.deadline)
                .min(self.deadline)
                .saturating_duration_since(now)
                .min(POLL_SLICE);
            if let Err(e) = poll.poll(events, Some(wait)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tally.stats.timed_out = true;
                break;
            }
            let before = tally.stats.all_ops;
            for ev in events.iter() {
                let Some(c) = conns.get_mut(ev.token().0) else {
                    continue;
                };
                if !c.alive {
                    continue;
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    c.on_readable(poll, &mut tally);
                }
                c.fill(*depth, phase, &mut src, gen, writer, &mut tally);
                c.flush(poll, &mut tally);
            }
            if tally.stats.all_ops != before {
                last = Instant::now();
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_below_stays_in_range_and_spreads() {
        let mut r = Rng(42);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = r.below(10);
            assert!(v < 10);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    #[test]
    fn sequential_source_covers_this_threads_share_once() {
        let mut g = Gen {
            rng: Rng(1),
            keys: 10,
            get_threshold: 0,
            always_get: false,
        };
        let mut src = Source::Sequential {
            next: 1,
            stride: 3,
            end: 10,
        };
        let mut got = Vec::new();
        while let Some((k, idx)) = g.next(&mut src) {
            assert!(k == Kind::Set);
            got.push(idx);
        }
        assert_eq!(got, vec![1, 4, 7]);
    }

    #[test]
    fn random_source_respects_budget_and_ratio() {
        let mut g = Gen {
            rng: Rng(7),
            keys: 100,
            get_threshold: (0.9 * 18_446_744_073_709_551_616.0) as u64,
            always_get: false,
        };
        let mut src = Source::Random {
            budget: Some(10_000),
        };
        let mut gets = 0;
        let mut n = 0;
        while let Some((k, idx)) = g.next(&mut src) {
            assert!(idx < 100);
            n += 1;
            if k == Kind::Get {
                gets += 1;
            }
        }
        assert_eq!(n, 10_000);
        assert!((8_800..9_200).contains(&gets), "{gets}");
    }
}
