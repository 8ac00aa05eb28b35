//! A worker thread: one mio event loop owning its connections, parsing and executing
//! pipelined requests in order, with per-wake-up fairness and output back-pressure.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token};

use crate::protocol::text::{parse, Parsed};
use crate::protocol::{MetaRequest, ParseLimits, Request};
use crate::stats::{bump, ThreadStats};

use super::conn::{Conn, ReadOutcome};
use super::exec::{execute, After, Ctx};
use super::shared::Shared;

/// Token of the waker that announces new connections and shutdown.
pub const WAKE: Token = Token(usize::MAX);

/// Stop executing a connection's requests while this much output is unsent, so a client
/// that pipelines without reading cannot grow server memory without bound: its requests
/// wait in its own socket buffer instead.
const OUTPUT_HIGH_WATER: usize = 1024 * 1024;

/// Replies held back while more input is read are written once they reach this size.
const FLUSH_BATCH: usize = 64 * 1024;

/// Beyond this much unparsed input that still is not one request, the connection is
/// dropped. Only a multi-get line or a value can be this long; the bound leaves room
/// for the largest item plus a generous key list.
fn input_limit(item_size_max: usize) -> usize {
    item_size_max + 64 * 1024 * 1024
}

/// Where a connection stands after a round of work.
enum Step {
    /// Needs more input from the socket.
    NeedInput,
    /// Served its share of requests; more are buffered.
    Yield,
    /// Output is backed up; wait for the socket to drain.
    Blocked,
    /// Close after the output is written.
    Close,
}

/// A poll that returned work within this long found it already waiting.
const BUSY_POLL: Duration = Duration::from_micros(20);

pub struct Worker {
    poll: Poll,
    rx: Receiver<Conn>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections that yielded with complete requests still buffered; served after the
    /// current batch of events, without waiting for new readiness.
    ready: VecDeque<usize>,
    shared: Arc<Shared>,
    stats: Arc<ThreadStats>,
    limits: ParseLimits,
    /// Connections with events in this poll round (reused).
    woken: Vec<usize>,
}

impl Worker {
    pub fn new(poll: Poll, rx: Receiver<Conn>, shared: Arc<Shared>) -> Worker {
        let stats = shared.stats.register();
        let limits = ParseLimits {
            item_size_max: shared.cfg.item_size_max,
            cas_enabled: shared.cfg.cas_enabled,
        };
        Worker {
            poll,
            rx,
            conns: Vec::new(),
            free: Vec::new(),
            ready: VecDeque::new(),
            shared,
            stats,
            limits,
            woken: Vec::new(),
        }
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let idle_check = (self.shared.cfg.idle_timeout > 0).then(|| Duration::from_secs(1));
        loop {
            let timeout = if self.ready.is_empty() {
                idle_check
            } else {
                Some(Duration::ZERO)
            };
            let polled = Instant::now();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("worker poll failed: {e}");
                    break;
                }
            }
            if self.shared.shutdown.load(Ordering::SeqCst) {
                break;
            }
            // Work that was already waiting when the worker looked for it means clients
            // are waiting for this core: a full copy to the peer then takes only its share.
            if polled.elapsed() < BUSY_POLL && (!events.is_empty() || !self.ready.is_empty()) {
                if let Some(r) = self.shared.repl.as_ref() {
                    r.dirty.note_busy();
                }
            }
            let mut woken = std::mem::take(&mut self.woken);
            woken.clear();
            for ev in events.iter() {
                if ev.token() == WAKE {
                    self.adopt_new();
                } else {
                    if ev.is_read_closed() {
                        if let Some(Some(c)) = self.conns.get_mut(ev.token().0) {
                            c.read_closed = true;
                        }
                    }
                    woken.push(ev.token().0);
                }
            }
            for group in woken.chunks(LOOKAHEAD) {
                if group.len() > 1 {
                    self.read_ahead(group);
                }
                for &idx in group {
                    self.drive(idx);
                    self.yield_if_replication_waits();
                }
            }
            self.woken = woken;
            for _ in 0..self.ready.len() {
                if let Some(idx) = self.ready.pop_front() {
                    self.drive(idx);
                    self.yield_if_replication_waits();
                }
            }
            if idle_check.is_some() {
                self.kick_idle();
            }
        }
        for idx in 0..self.conns.len() {
            self.close(idx);
        }
    }

    /// Gives the core to the replication thread when it has waited for it too long (see
    /// `DirtySet::overdue`). Checked after every connection, not every poll round: a round
    /// over 50 busy pipelining connections can take a millisecond.
    fn yield_if_replication_waits(&self) {
        if self.shared.repl.as_ref().is_some_and(|r| r.dirty.overdue()) {
            std::thread::yield_now();
        }
    }

    fn adopt_new(&mut self) {
        while let Ok(mut conn) = self.rx.try_recv() {
            let idx = match self.free.pop() {
                Some(i) => i,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut conn.stream, Token(idx), Interest::READABLE)
            {
                log::warn!("cannot register connection: {e}");
                self.shared.curr_conns.fetch_sub(1, Ordering::Relaxed);
                self.free.push(idx);
                continue;
            }
            self.shared.register_conn(Arc::clone(&conn.info));
            self.conns[idx] = Some(conn);
            // Data may have arrived before registration; edge-triggered polling would not
            // report it again.
            self.drive(idx);
        }
    }

    fn close(&mut self, idx: usize) {
        if let Some(mut conn) = self.conns.get_mut(idx).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.shared.unregister_conn(conn.info.fd);
            self.shared.curr_conns.fetch_sub(1, Ordering::Relaxed);
            self.free.push(idx);
            log::debug!("<{} connection closed.", conn.info.fd);
        }
    }

    fn kick_idle(&mut self) {
        let limit = self.shared.cfg.idle_timeout;
        let now = self.shared.now();
        for idx in 0..self.conns.len() {
            let idle = match &self.conns[idx] {
                Some(c) => now.saturating_sub(c.info.last_cmd.load(Ordering::Relaxed)) > limit,
                None => false,
            };
            if idle {
                bump(&self.stats.idle_kicks, 1);
                self.close(idx);
            }
        }
    }

    /// Reads the input waiting on a group of woken connections, then starts the lookups of
    /// each one's first request together, before any of them is served. At pipeline depth
    /// 1 a connection brings one request per round, so this is where a round's lookups can
    /// overlap, as a pipelined batch's do in `run_batch`. Each connection's turn then
    /// serves what was read; only a connection that was idle is read ahead, so none gets
    /// more input buffered than its own turn would have read.
    fn read_ahead(&mut self, group: &[usize]) {
        let mut read = false;
        for &idx in group {
            let Some(Some(c)) = self.conns.get_mut(idx) else {
                continue;
            };
            let idle = c.buffered() == 0 && c.pending_output() == 0 && c.swallow == 0;
            if !idle || c.closing || c.eof {
                continue;
            }
            match c.read_some() {
                ReadOutcome::Data { n, drained } => {
                    bump(&self.stats.bytes_read, n as u64);
                    c.drained = drained && !c.read_closed;
                    read = true;
                }
                ReadOutcome::WouldBlock => c.drained = !c.read_closed,
                ReadOutcome::Eof => c.eof = true,
            }
        }
        if !read {
            return;
        }
        let mut keys: [&[u8]; BATCH_KEYS] = [&[]; BATCH_KEYS];
        let mut nkeys = 0;
        for &idx in group {
            let Some(Some(c)) = self.conns.get(idx) else {
                continue;
            };
            if c.swallow > 0 || nkeys == keys.len() {
                continue;
            }
            if let Parsed::Complete { req, .. } = parse(c.input(), &self.limits) {
                nkeys += add_keys(&req, &mut keys[nkeys..]);
            }
        }
        if nkeys > 1 {
            self.shared.store.prefetch(&keys[..nkeys]);
        }
    }

    /// Serves one connection as far as it can go without blocking.
    fn drive(&mut self, idx: usize) {
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return;
        };
        let shared = &*self.shared;
        let stats = &*self.stats;
        let ctx = Ctx {
            shared,
            stats,
            now: shared.now(),
            fd: conn.info.fd,
        };
        let max_input = input_limit(shared.cfg.item_size_max);
        let mut dead = false;
        let mut short_read = std::mem::take(&mut conn.drained);
        // -R bounds the requests served per wake-up across all the reads of this round, so
        // a client that keeps its socket full cannot hold the thread while others wait.
        let mut budget = shared.cfg.reqs_per_event;
        let step = loop {
            let step = {
                // Changes reach the replication log once per batch, before its replies go out.
                let _batch = shared.store.batch();
                process(conn, &ctx, &self.limits, &mut budget)
            };
            // Replies wait while more input may be in the socket, so one write carries the
            // answers to several reads; they go out when this round ends (below), when the
            // socket has been drained, or once a batch has built up.
            let more_input = matches!(step, Step::NeedInput) && !short_read;
            if !more_input || conn.pending_output() >= FLUSH_BATCH {
                match conn.flush() {
                    Ok(n) => bump(&stats.bytes_written, n as u64),
                    Err(_) => {
                        dead = true;
                        break Step::Close;
                    }
                }
            }
            match step {
                Step::NeedInput if conn.pending_output() > OUTPUT_HIGH_WATER => {
                    break Step::Blocked
                }
                Step::NeedInput => {}
                Step::Blocked if conn.pending_output() == 0 => continue,
                other => break other,
            }
            if short_read {
                break Step::NeedInput;
            }
            if conn.eof {
                break Step::Close;
            }
            if conn.buffered() > max_input {
                log::warn!(
                    "<{} request larger than {max_input} bytes, closing",
                    conn.info.fd
                );
                break Step::Close;
            }
            match conn.read_some() {
                ReadOutcome::Data { n, drained } => {
                    bump(&stats.bytes_read, n as u64);
                    // A short read emptied the socket: once this input is served, wait for
                    // the next readiness event instead of spending a syscall to hear
                    // "would block" (new data, or the client's FIN, raises a new event).
                    short_read = drained && !conn.read_closed;
                }
                ReadOutcome::WouldBlock => break Step::NeedInput,
                ReadOutcome::Eof => conn.eof = true,
            }
        };
        if !dead && conn.pending_output() > 0 {
            match conn.flush() {
                Ok(n) => bump(&stats.bytes_written, n as u64),
                Err(_) => dead = true,
            }
        }
        let step = if dead { Step::Close } else { step };
        let wants_write = conn.pending_output() > 0;
        match step {
            Step::Close if dead || !wants_write => {
                self.close(idx);
                return;
            }
            Step::Close => conn.closing = true,
            Step::Yield => {
                bump(&stats.conn_yields, 1);
                self.ready.push_back(idx);
            }
            // The client read everything between the loop's flush and the last one: no
            // writable event will come, and the requests still buffered must not wait for one.
            Step::Blocked if !wants_write => self.ready.push_back(idx),
            Step::NeedInput | Step::Blocked => {}
        }
        if conn.pending_output() == 0 {
            conn.shrink_idle();
        }
        if wants_write != conn.write_interest {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(idx), interest)
                .is_err()
            {
                self.close(idx);
                return;
            }
            conn.write_interest = wants_write;
        }
    }
}

/// Requests parsed (and their keys' lookups started) together before they are executed.
const BATCH: usize = 16;
/// Woken connections read ahead together (`Worker::read_ahead`).
const LOOKAHEAD: usize = 16;
/// Keys of one batch whose lookups are started together.
const BATCH_KEYS: usize = crate::storage::PREFETCH_MAX;

/// Executes buffered requests until input runs out, the per-wake-up budget is spent, or
/// output backs up.
///
/// Requests are parsed a batch at a time and the keys of a batch are prefetched together
/// (`Store::prefetch`): a pipelined client's lookups then wait for memory side by side,
/// where one after the other each would wait for its own chain of cache misses.
fn process(conn: &mut Conn, ctx: &Ctx, limits: &ParseLimits, budget: &mut usize) -> Step {
    // Everything served here had arrived by now: its writes may share one clock reading.
    let _clock = ctx.shared.store.hold_clock();
    let mut touched = false;
    let step = loop {
        conn.swallow_buffered();
        if conn.closing {
            break Step::Close;
        }
        if conn.swallow > 0 || conn.buffered() == 0 {
            break Step::NeedInput;
        }
        if conn.pending_output() > OUTPUT_HIGH_WATER {
            break Step::Blocked;
        }
        if *budget == 0 {
            break Step::Yield;
        }
        let pending = conn.pending_output();
        let (input, out) = conn.io_split();
        let (first, first_len) = match parse(input, limits) {
            Parsed::Incomplete => break Step::NeedInput,
            Parsed::Complete { req, consumed } => (req, consumed),
        };
        let (used, after) = if first_len == input.len() || *budget == 1 {
            // Nothing pipelined behind it: no lookups to overlap.
            let text = input.get(..first_len).unwrap_or_default();
            *budget -= 1;
            (first_len, execute_logged(ctx, text, &first, out))
        } else {
            let room = OUTPUT_HIGH_WATER.saturating_sub(pending);
            run_batch(ctx, limits, input, out, (first, first_len), budget, room)
        };
        conn.consume(used);
        touched = true;
        match after {
            After::Continue => {}
            After::Swallow(n) => conn.swallow = n,
            After::Close => conn.closing = true,
        }
    };
    if touched {
        conn.info.last_cmd.store(ctx.now, Ordering::Relaxed);
    }
    step
}

/// Parses up to BATCH requests from `input` (the first already parsed), starts their
/// keys' lookups together, then executes them in order until one changes how the bytes
/// after it are read, the budget is spent, or more than `room` bytes of replies are
/// queued. Returns the input bytes used and the last request's outcome.
fn run_batch<'a>(
    ctx: &Ctx,
    limits: &ParseLimits,
    input: &'a [u8],
    out: &mut Vec<u8>,
    first: (Request<'a>, usize),
    budget: &mut usize,
    room: usize,
) -> (usize, After) {
    let written = out.len();
    let mut batch: [Option<(Request, usize)>; BATCH] = [const { None }; BATCH];
    let mut keys: [&[u8]; BATCH_KEYS] = [&[]; BATCH_KEYS];
    let mut nkeys = add_keys(&first.0, &mut keys);
    let (mut parsed, mut off) = (1, first.1);
    batch[0] = Some(first);
    while parsed < BATCH.min(*budget) {
        let rest = input.get(off..).unwrap_or_default();
        let Parsed::Complete { req, consumed } = parse(rest, limits) else {
            break;
        };
        nkeys += add_keys(&req, &mut keys[nkeys..]);
        batch[parsed] = Some((req, consumed));
        off += consumed;
        parsed += 1;
    }
    if nkeys > 1 {
        ctx.shared.store.prefetch(&keys[..nkeys]);
    }
    let (mut used, mut after) = (0, After::Continue);
    // By reference: a request is 152 bytes, and moving each out of the batch and on into
    // `execute` was 2.5% of a worker's samples at 100 B sets, pipeline 16, in memcpy.
    for (i, (req, consumed)) in batch.iter().take(parsed).flatten().enumerate() {
        if i > 0 && out.len() - written > room {
            break;
        }
        let text = input.get(used..used + consumed).unwrap_or_default();
        after = execute_logged(ctx, text, req, out);
        used += consumed;
        *budget -= 1;
        if after != After::Continue {
            break;
        }
    }
    (used, after)
}

/// Executes one request whose bytes are `text`, logging its line at debug level.
fn execute_logged(ctx: &Ctx, text: &[u8], req: &Request, out: &mut Vec<u8>) -> After {
    if log::log_enabled!(log::Level::Debug) {
        let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
        log::debug!("<{} {}", ctx.fd, String::from_utf8_lossy(line).trim_end());
    }
    execute(ctx, req, out)
}

/// Puts the keys `req` will look up into `keys` (as many as fit); returns how many.
fn add_keys<'a>(req: &Request<'a>, keys: &mut [&'a [u8]]) -> usize {
    let mut n = 0;
    match *req {
        Request::Get { keys: list, .. } => {
            for (slot, k) in keys.iter_mut().zip(crate::protocol::text::keys(list)) {
                *slot = k;
                n += 1;
            }
        }
        // A meta key sent in base64 is looked up decoded: warming its encoded form is
        // wasted, never wrong.
        Request::Store { key, .. }
        | Request::Delete { key, .. }
        | Request::Arith { key, .. }
        | Request::Touch { key, .. }
        | Request::Meta(MetaRequest { key, .. }) => {
            if let Some(slot) = keys.first_mut() {
                *slot = key;
                n = 1;
            }
        }
        _ => {}
    }
    n
}
