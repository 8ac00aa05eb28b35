//! Changes already encoded as replication frames by the threads that made them, one log per
//! writer thread, waiting for the replication thread to put them on the link.
//!
//! A worker encodes a change while the key's lines are still in its cache, so the
//! replication thread only copies bytes to the socket instead of looking every key up again
//! from another core. The logs are bounded: a full log (the link is behind) or a link that
//! is down makes the change fall back to the keyed pending set, which coalesces.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::protocol::repl::{decode, encode, Frame};
use crate::stats::lock;
use crate::storage::StateRef;

/// Bytes a log may hold before changes fall back to the keyed set. The replication thread
/// empties the logs at every wake-up, so they reach this only when the link is behind, or
/// when large values pile up between two wake-ups: a worker may go 1 ms without yielding
/// to the replication thread (`DirtySet::overdue`), which is 500 KB at 120,000 sets of 4 KiB
/// a second.
const LOG_CAP: usize = 1 << 20;
/// Logs, shared round-robin by the threads that write (workers, mostly).
const LOGS: usize = 16;
/// Emptied buffers are kept for reuse up to this many bytes of capacity in all: enough
/// for the buffers of a few batches in flight, so steady streaming allocates nothing, while
/// a burst of large values does not leave its buffers behind for good.
const SPARE_BYTES: usize = 4 * LOG_CAP;

#[derive(Default)]
struct Log {
    buf: Vec<u8>,
    frames: usize,
}

pub struct StateLogs {
    logs: Box<[Mutex<Log>]>,
    /// Frames in all logs together.
    frames: AtomicUsize,
    /// Set while a peer link is up and exchanging changes.
    streaming: AtomicBool,
    spares: Mutex<Spares>,
}

#[derive(Default)]
struct Spares {
    bufs: Vec<Vec<u8>>,
    /// Capacity of `bufs` together.
    bytes: usize,
}

/// Values from this long go to the log even during a batch: staging them would copy
/// each one twice to save per-frame work that is small next to the copy.
const STAGE_MAX_VALUE: usize = 1024;

/// The frames a thread holds back while it has a batch open (see `StateLogs::open_batch`).
#[derive(Default)]
struct Stage {
    /// The logs the batch is open on (their address); 0 when no batch is open.
    owner: usize,
    buf: Vec<u8>,
    frames: usize,
}

thread_local! {
    static MY_LOG: Cell<usize> = const { Cell::new(usize::MAX) };
    static STAGE: RefCell<Stage> = RefCell::new(Stage::default());
}

/// Where `StateLogs::append` put a change.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// In a log: the replication thread may need waking.
    Logged,
    /// Held by the calling thread's open batch until it closes.
    Staged,
    /// Nowhere (no link, or the log is full): the caller records the key.
    Refused,
}

fn my_log() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    MY_LOG.with(|c| {
        if c.get() == usize::MAX {
            c.set(NEXT.fetch_add(1, Ordering::Relaxed) % LOGS);
        }
        c.get()
    })
}

impl Default for StateLogs {
    fn default() -> Self {
        StateLogs {
            logs: (0..LOGS).map(|_| Mutex::new(Log::default())).collect(),
            frames: AtomicUsize::new(0),
            streaming: AtomicBool::new(false),
            spares: Mutex::new(Spares::default()),
        }
    }
}

impl StateLogs {
    pub fn set_streaming(&self, on: bool) {
        self.streaming.store(on, Ordering::SeqCst);
    }

    /// Appends `st` to the calling thread's log, or to its open batch.
    pub fn append(&self, st: &StateRef) -> Appended {
        if !self.streaming.load(Ordering::Relaxed) {
            return Appended::Refused;
        }
        let short = match st {
            StateRef::Live(it) => it.value.len() < STAGE_MAX_VALUE,
            StateRef::Tombstone { .. } => true,
        };
        if short && self.stage(st) {
            return Appended::Staged;
        }
        let mut log = lock(&self.logs[my_log()]);
        if log.buf.len() >= LOG_CAP {
            return Appended::Refused;
        }
        encode_state(st, &mut log.buf);
        log.frames += 1;
        // Counted under the log's lock, so a concurrent `take` never subtracts a frame
        // before it was added. SeqCst pairs with the wake-up flag (see `DirtySet::noted`).
        self.frames.fetch_add(1, Ordering::SeqCst);
        Appended::Logged
    }

    fn id(&self) -> usize {
        self as *const StateLogs as usize
    }

    /// Encodes `st` into this thread's batch if one is open on these logs.
    fn stage(&self, st: &StateRef) -> bool {
        STAGE.with(|s| {
            let Ok(mut s) = s.try_borrow_mut() else {
                return false;
            };
            if s.owner != self.id() {
                return false;
            }
            encode_state(st, &mut s.buf);
            s.frames += 1;
            true
        })
    }

    /// Opens a batch on the calling thread: its changes are held back and reach the log
    /// together at `close_batch`, for one lock and one count instead of one per change.
    /// False when the thread has a batch open already (only the opener closes it).
    pub fn open_batch(&self) -> bool {
        STAGE.with(|s| {
            let Ok(mut s) = s.try_borrow_mut() else {
                return false;
            };
            if s.owner != 0 {
                return false;
            }
            s.owner = self.id();
            true
        })
    }

    /// Closes the calling thread's batch: its frames go to the log, or, when the log is
    /// full or the link went down meanwhile, each frame's key goes to `refused`. True when
    /// frames were logged (the replication thread may need waking).
    pub fn close_batch(&self, mut refused: impl FnMut(&[u8])) -> bool {
        STAGE.with(|s| {
            let Ok(mut s) = s.try_borrow_mut() else {
                return false;
            };
            if s.owner != self.id() {
                return false;
            }
            s.owner = 0;
            let frames = std::mem::take(&mut s.frames);
            if frames == 0 {
                return false;
            }
            if self.streaming.load(Ordering::Relaxed) {
                let mut log = lock(&self.logs[my_log()]);
                if log.buf.len() < LOG_CAP {
                    if log.buf.is_empty() {
                        // An emptied log takes the stage's buffer whole, and the stage
                        // keeps the log's spare: no copy.
                        std::mem::swap(&mut log.buf, &mut s.buf);
                    } else {
                        log.buf.extend_from_slice(&s.buf);
                    }
                    log.frames += frames;
                    self.frames.fetch_add(frames, Ordering::SeqCst);
                    drop(log);
                    s.buf.clear();
                    return true;
                }
            }
            keys_of(&s.buf, &mut refused);
            s.buf.clear();
            false
        })
    }

    /// Frames waiting in the logs.
    pub fn frames(&self) -> usize {
        self.frames.load(Ordering::SeqCst)
    }

    /// Moves every non-empty log to `out` as (bytes, frames), leaving empty buffers behind.
    pub fn take(&self, out: &mut Vec<(Vec<u8>, usize)>) {
        if self.frames() == 0 {
            return;
        }
        for l in self.logs.iter() {
            let mut log = lock(l);
            if log.frames == 0 {
                continue;
            }
            let spare = {
                let mut sp = lock(&self.spares);
                let b = sp.bufs.pop().unwrap_or_default();
                sp.bytes -= b.capacity();
                b
            };
            let buf = std::mem::replace(&mut log.buf, spare);
            let n = std::mem::take(&mut log.frames);
            self.frames.fetch_sub(n, Ordering::SeqCst);
            drop(log);
            out.push((buf, n));
        }
    }

    /// Returns a buffer from `take` once its frames are no longer needed.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut sp = lock(&self.spares);
        if sp.bytes + buf.capacity() <= SPARE_BYTES {
            sp.bytes += buf.capacity();
            sp.bufs.push(buf);
        }
    }
}

/// Appends the frame that carries `st` to `out`.
pub fn encode_state(st: &StateRef, out: &mut Vec<u8>) {
    match st {
        StateRef::Live(it) => encode(
            &Frame::State {
                version: it.version,
                flags: it.flags,
                exptime: it.exptime,
                meta: it.repl_bits,
                key: it.key,
                counter: it.counter,
                value: it.value,
            },
            out,
        ),
        StateRef::Tombstone { key, version } => encode(
            &Frame::Tombstone {
                version: *version,
                key,
            },
            out,
        ),
    }
}

/// Visits the key of every state in `buf`, frames written by `encode_state`: what a
/// broken link must send again.
pub fn keys_of(mut buf: &[u8], mut f: impl FnMut(&[u8])) {
    while let Ok(Some((frame, n))) = decode(buf) {
        match frame {
            Frame::State { key, .. } | Frame::Tombstone { key, .. } => f(key),
            _ => {}
        }
        buf = buf.get(n..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ItemRef;

    fn live(key: &[u8], value: &[u8]) -> StateRef<'static> {
        let key: &'static [u8] = Box::leak(key.into());
        let value: &'static [u8] = Box::leak(value.into());
        StateRef::Live(ItemRef {
            key,
            value,
            flags: 3,
            exptime: 0,
            version: 9,
            cas: 9,
            last_access: 0,
            fetched: false,
            repl_bits: 0,
            counter: None,
        })
    }

    #[test]
    fn appends_only_while_streaming_and_below_the_cap() {
        let l = StateLogs::default();
        assert_eq!(
            l.append(&live(b"a", b"1")),
            Appended::Refused,
            "no link: the key set records it"
        );
        l.set_streaming(true);
        assert_eq!(Appended::Logged, l.append(&live(b"a", b"1")));
        assert_eq!(
            Appended::Logged,
            l.append(&StateRef::Tombstone {
                key: b"b",
                version: 4
            })
        );
        assert_eq!(l.frames(), 2);
        let big = vec![7u8; LOG_CAP];
        assert_eq!(
            Appended::Logged,
            l.append(&live(b"c", &big)),
            "one frame may cross the cap"
        );
        assert_eq!(
            l.append(&live(b"d", b"1")),
            Appended::Refused,
            "a full log refuses"
        );
        let mut out = Vec::new();
        l.take(&mut out);
        assert_eq!(l.frames(), 0);
        let frames: usize = out.iter().map(|(_, n)| n).sum();
        assert_eq!(frames, 3);
        let mut keys = Vec::new();
        for (buf, _) in &out {
            keys_of(buf, |k| keys.push(k.to_vec()));
        }
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        for (buf, _) in out {
            l.recycle(buf);
        }
        assert_eq!(
            Appended::Logged,
            l.append(&live(b"d", b"1")),
            "the log has room again"
        );
    }

    #[test]
    fn a_batch_holds_short_changes_back_until_it_closes() {
        let l = StateLogs::default();
        l.set_streaming(true);
        assert!(l.open_batch());
        assert!(!l.open_batch(), "only the opener closes a batch");
        assert_eq!(l.append(&live(b"a", b"1")), Appended::Staged);
        let tomb = StateRef::Tombstone {
            key: b"b",
            version: 4,
        };
        assert_eq!(l.append(&tomb), Appended::Staged);
        let long = vec![7u8; STAGE_MAX_VALUE];
        assert_eq!(
            l.append(&live(b"c", &long)),
            Appended::Logged,
            "a long value is not copied twice"
        );
        assert_eq!(l.frames(), 1, "staged frames are not in the log yet");
        // Another set of logs on the same thread is not caught by this batch.
        let other = StateLogs::default();
        other.set_streaming(true);
        assert_eq!(other.append(&live(b"x", b"1")), Appended::Logged);
        assert!(l.close_batch(|_| panic!("nothing is refused")));
        assert_eq!(l.frames(), 3);
        assert!(!l.close_batch(|_| {}), "closed already");
        assert_eq!(l.append(&live(b"d", b"1")), Appended::Logged);
        let mut out = Vec::new();
        l.take(&mut out);
        let mut keys = Vec::new();
        for (buf, _) in &out {
            keys_of(buf, |k| keys.push(k.to_vec()));
        }
        keys.sort();
        let want: Vec<Vec<u8>> = [&b"a"[..], b"b", b"c", b"d"].map(|k| k.to_vec()).into();
        assert_eq!(keys, want);
    }

    #[test]
    fn a_batch_closed_after_the_link_went_down_gives_its_keys_back() {
        let l = StateLogs::default();
        l.set_streaming(true);
        assert!(l.open_batch());
        assert_eq!(l.append(&live(b"a", b"1")), Appended::Staged);
        assert_eq!(l.append(&live(b"b", b"2")), Appended::Staged);
        l.set_streaming(false);
        let mut refused = Vec::new();
        assert!(!l.close_batch(|k| refused.push(k.to_vec())));
        assert_eq!(refused, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(l.frames(), 0);
        // The stage is empty again: the next batch carries only its own frames.
        l.set_streaming(true);
        assert!(l.open_batch());
        assert_eq!(l.append(&live(b"c", b"3")), Appended::Staged);
        assert!(l.close_batch(|_| panic!("nothing is refused")));
        assert_eq!(l.frames(), 1);
    }

    #[test]
    fn kept_spare_buffers_stay_within_their_byte_budget() {
        let l = StateLogs::default();
        for _ in 0..10 {
            l.recycle(Vec::with_capacity(LOG_CAP));
        }
        let sp = lock(&l.spares);
        assert_eq!(sp.bufs.len(), SPARE_BYTES / LOG_CAP);
        assert_eq!(sp.bytes, sp.bufs.iter().map(Vec::capacity).sum::<usize>());
        assert!(sp.bytes <= SPARE_BYTES);
        drop(sp);
        // Taking a log swaps a spare in, and the count follows.
        l.set_streaming(true);
        assert_eq!(Appended::Logged, l.append(&live(b"a", b"1")));
        let mut out = Vec::new();
        l.take(&mut out);
        let sp = lock(&l.spares);
        assert_eq!(sp.bytes, sp.bufs.iter().map(Vec::capacity).sum::<usize>());
    }

    #[test]
    fn frames_decode_to_the_states_encoded() {
        let mut buf = Vec::new();
        encode_state(&live(b"key", b"value"), &mut buf);
        let Ok(Some((
            Frame::State {
                key,
                value,
                flags,
                version,
                ..
            },
            n,
        ))) = decode(&buf)
        else {
            panic!("not a state frame");
        };
        assert_eq!(
            (key, value, flags, version),
            (&b"key"[..], &b"value"[..], 3, 9)
        );
        assert_eq!(n, buf.len());
    }

    #[test]
    fn threads_write_their_own_logs_and_take_sees_every_frame() {
        let l = std::sync::Arc::new(StateLogs::default());
        l.set_streaming(true);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let l = std::sync::Arc::clone(&l);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let k = format!("t{t}-{i}");
                        assert_eq!(Appended::Logged, l.append(&live(k.as_bytes(), b"v")));
                    }
                })
            })
            .collect();
        let mut out = Vec::new();
        let mut seen = 0;
        for t in threads {
            l.take(&mut out);
            let _ = t.join();
        }
        l.take(&mut out);
        for (buf, n) in &out {
            let mut k = 0;
            keys_of(buf, |_| k += 1);
            assert_eq!(k, *n);
            seen += n;
        }
        assert_eq!(seen, 2000);
        assert_eq!(l.frames(), 0);
    }
}
