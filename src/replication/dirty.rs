//! The set of keys changed locally and not yet sent to the peer: coalesced per key (only a
//! key's latest state matters, and it is read at send time), bounded in bytes, cheap for the
//! workers that fill it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use hashbrown::HashTable;

use super::changelog::{keys_of as log_keys_of, Appended, StateLogs};
use crate::clock::wall_ms;
use crate::stats::lock;
use crate::storage::{ChangeSink, FlushState, StateRef};

const SHARDS: usize = 64;

/// Accounting overhead per pending key besides its bytes (its index entry).
const PER_KEY: usize = 32;
/// How long a wake-up of the replication thread may go unanswered before a worker gives up
/// its core for it (see `overdue`). On a core shared by both nodes of a pair each hand-off
/// costs two context switches; at 1 ms rather than 0.5 ms the pair spent 2.7% less CPU per
/// 4 KiB set, and the set-only lag p99 at peak stayed at 0.55 ms (target: 2 ms).
const HANDOFF_NS: u64 = 1_000_000;
/// How finely `note_busy` keeps time, and how long after a busy moment a node still counts
/// as busy with clients.
const BUSY_GRAIN_NS: u64 = 1_000_000;
const BUSY_RECENT_NS: u64 = 10_000_000;

/// One shard of pending keys: the keys back to back in one buffer and an index of their
/// (offset, length) by hash. Workers add keys without an allocation per key, and dropping
/// a million pending keys (a full copy covers them) is two truncations, not a million frees.
#[derive(Default)]
struct KeySet {
    bytes: Vec<u8>,
    index: HashTable<(u32, u32)>,
}

impl KeySet {
    fn key(&self, (off, len): (u32, u32)) -> &[u8] {
        self.bytes
            .get(off as usize..off as usize + len as usize)
            .unwrap_or_default()
    }

    /// Adds `key` unless present; true when it was new.
    fn insert(&mut self, hash: u64, key: &[u8], hasher: &hashbrown::DefaultHashBuilder) -> bool {
        use std::hash::BuildHasher;
        let (bytes, index) = (&self.bytes, &mut self.index);
        let span_key = |&(off, len): &(u32, u32)| {
            bytes
                .get(off as usize..off as usize + len as usize)
                .unwrap_or_default()
        };
        if index.find(hash, |e| span_key(e) == key).is_some() {
            return false;
        }
        let (Ok(off), Ok(len)) = (u32::try_from(self.bytes.len()), u32::try_from(key.len())) else {
            // Beyond 4 GiB of pending keys in one shard: the byte bound overflows long before.
            return false;
        };
        self.bytes.extend_from_slice(key);
        let bytes = &self.bytes;
        self.index.insert_unique(hash, (off, len), |&(o, l)| {
            hasher.hash_one(
                bytes
                    .get(o as usize..o as usize + l as usize)
                    .unwrap_or_default(),
            )
        });
        true
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.index.clear();
    }
}

pub struct DirtySet {
    shards: Box<[Mutex<KeySet>]>,
    hasher: hashbrown::DefaultHashBuilder,
    bytes: AtomicUsize,
    keys: AtomicUsize,
    limit: AtomicUsize,
    /// Set when the bound was hit and keys were dropped: only a full copy can repair
    /// what the peer missed.
    overflowed: AtomicBool,
    flush: Mutex<Option<FlushState>>,
    /// Wall-clock milliseconds when the set last went from empty to non-empty: the age of
    /// the oldest unsent change, reported as replication lag.
    oldest_ms: AtomicU64,
    /// Cleared by the replication thread when it drains; the first change after that wakes
    /// it, later ones ride along, so a burst of writes costs one wake-up.
    armed: AtomicBool,
    /// When the replication thread was last asked to wake up (monotonic ns since the
    /// process's first reading; 0: it has answered since).
    woken_at: AtomicU64,
    /// When a worker last found client work already waiting (monotonic ns, kept to about a
    /// millisecond): a full copy to the peer takes only its share of the time while this is
    /// recent.
    busy_at: AtomicU64,
    waker: OnceLock<mio::Waker>,
    /// Rotates the shard a partial drain starts from, so no shard waits behind others.
    cursor: AtomicUsize,
    /// Changes already encoded while a link streams (see `changelog.rs`); the keys above are
    /// the rest.
    logs: StateLogs,
}

impl DirtySet {
    pub fn new(limit_bytes: usize) -> DirtySet {
        DirtySet {
            shards: (0..SHARDS).map(|_| Mutex::new(KeySet::default())).collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            bytes: AtomicUsize::new(0),
            keys: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit_bytes),
            overflowed: AtomicBool::new(false),
            flush: Mutex::new(None),
            oldest_ms: AtomicU64::new(0),
            armed: AtomicBool::new(true),
            woken_at: AtomicU64::new(0),
            busy_at: AtomicU64::new(0),
            waker: OnceLock::new(),
            cursor: AtomicUsize::new(0),
            logs: StateLogs::default(),
        }
    }

    /// Whether changes go to the logs as frames (a link is up) or to the key set.
    pub fn set_streaming(&self, on: bool) {
        self.logs.set_streaming(on);
    }

    /// Takes the encoded changes, as (frames bytes, frame count).
    pub fn take_logs(&self, out: &mut Vec<(Vec<u8>, usize)>) {
        self.logs.take(out);
        if self.pending_keys() == 0 {
            self.oldest_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Returns a buffer from `take_logs` once its frames are acknowledged or re-recorded.
    pub fn recycle(&self, buf: Vec<u8>) {
        self.logs.recycle(buf);
    }

    /// Records the keys of the frames in `buf` (from `take_logs`) as pending: the link
    /// that was to carry them is gone.
    pub fn requeue_frames(&self, buf: &[u8]) {
        log_keys_of(buf, |k| {
            self.add(k);
        });
    }

    /// Moves what the logs hold back to the key set (the link went down).
    pub fn unlog(&self) {
        let mut out = Vec::new();
        self.logs.take(&mut out);
        for (buf, _) in out {
            self.requeue_frames(&buf);
            self.recycle(buf);
        }
    }

    /// Installs the waker of the replication thread.
    pub fn set_waker(&self, w: mio::Waker) {
        let _ = self.waker.set(w);
    }

    fn hash(&self, key: &[u8]) -> (u64, &Mutex<KeySet>) {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key);
        (h, &self.shards[(h >> 58) as usize % SHARDS])
    }

    /// Returns true when this call asked the replication thread to wake up.
    fn noted(&self) -> bool {
        if self.oldest_ms.load(Ordering::Relaxed) == 0 {
            self.oldest_ms.store(wall_ms(), Ordering::Relaxed);
        }
        // Read before swapping: every write comes here, and an unconditional swap would
        // bounce the flag's cache line between the workers while the set is non-empty.
        // SeqCst pairs with `arm`: the key count went up before this load, so either this
        // load sees the flag armed or the replication thread's check after arming sees the key.
        if self.armed.load(Ordering::SeqCst) && self.armed.swap(false, Ordering::AcqRel) {
            self.woken_at.store(mono_ns().max(1), Ordering::Relaxed);
            if let Some(w) = self.waker.get() {
                let _ = w.wake();
            }
            return true;
        }
        false
    }

    /// Records a changed key; true when the replication thread was asked to wake up.
    pub fn add(&self, key: &[u8]) -> bool {
        let cost = key.len() + PER_KEY;
        if self.bytes.load(Ordering::Relaxed) + cost > self.limit.load(Ordering::Relaxed) {
            return self.overflow();
        }
        let (hash, shard) = self.hash(key);
        let mut set = lock(shard);
        if set.insert(hash, key, &self.hasher) {
            self.bytes.fetch_add(cost, Ordering::Relaxed);
            self.keys.fetch_add(1, Ordering::SeqCst);
        }
        drop(set);
        self.noted()
    }

    /// Drops every pending key and records that the peer must be repaired by a full copy.
    fn overflow(&self) -> bool {
        if !self.overflowed.swap(true, Ordering::AcqRel) {
            log::warn!("replication backlog over its bound: falling back to a full copy");
        }
        self.clear();
        self.noted()
    }

    pub fn add_flush(&self, ev: FlushState) {
        let mut f = lock(&self.flush);
        *f = Some(match *f {
            Some(old) if old.oldest_version > ev.oldest_version => old,
            _ => ev,
        });
        drop(f);
        self.noted();
    }

    /// Asks for a wake-up on the next change. The replication thread calls it before it
    /// looks at whether anything is pending: a wake-up taken and then answered without a
    /// drain (the keys had already gone with an earlier one) would otherwise leave the flag
    /// down, and later changes would wait for the loop's timer.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// The replication thread calls this whenever it wakes: the wake-up was answered, even
    /// when there is nothing it can send (no link), so workers stop yielding for it.
    pub fn answered(&self) {
        self.woken_at.store(0, Ordering::Relaxed);
    }

    /// True when the replication thread was asked to wake up a while ago and has not run
    /// since. It runs with SCHED_BATCH (see `Replicator::start`), so on a core the workers
    /// keep busy it waits for them; a worker that sees this yields its core, which bounds
    /// the replication lag while letting changes pile up into large batches meanwhile.
    pub fn overdue(&self) -> bool {
        match self.woken_at.load(Ordering::Relaxed) {
            0 => false,
            t => mono_ns().saturating_sub(t) >= HANDOFF_NS,
        }
    }

    /// A worker calls this when its poll found client work already waiting: the core is
    /// busy with clients, not just touched by an occasional request.
    pub fn note_busy(&self) {
        let now = mono_ns();
        // Written at most once a millisecond, so the workers do not bounce its cache line.
        if now.saturating_sub(self.busy_at.load(Ordering::Relaxed)) >= BUSY_GRAIN_NS {
            self.busy_at.store(now, Ordering::Relaxed);
        }
    }

    /// True when a worker was busy with clients within the last few milliseconds.
    pub fn clients_busy(&self) -> bool {
        match self.busy_at.load(Ordering::Relaxed) {
            0 => false,
            t => mono_ns().saturating_sub(t) < BUSY_RECENT_NS,
        }
    }

    /// Takes up to `max` pending keys (and the pending flush) for sending; the rest stay
    /// for the next call, so a large backlog is sent in slices as the link drains.
    pub fn drain(&self, keys: &mut Vec<Box<[u8]>>, max: usize) -> Option<FlushState> {
        self.armed.store(true, Ordering::Release);
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut taken = 0;
        for i in 0..SHARDS {
            let room = max - taken;
            if room == 0 {
                break;
            }
            let mut guard = lock(&self.shards[(start + i) % SHARDS]);
            let set = &mut *guard;
            if set.len() <= room {
                for &span in set.index.iter() {
                    let k = set.key(span);
                    self.forget(k);
                    keys.push(k.into());
                    taken += 1;
                }
                set.clear();
            } else {
                // The taken keys' bytes stay in the buffer until the shard empties.
                let mut n = room;
                let bytes = &set.bytes;
                for span in set.index.extract_if(|_| {
                    let take = n > 0;
                    n = n.saturating_sub(1);
                    take
                }) {
                    let (off, len) = (span.0 as usize, span.1 as usize);
                    let k = bytes.get(off..off + len).unwrap_or_default();
                    self.forget(k);
                    keys.push(k.into());
                    taken += 1;
                }
            }
        }
        if self.pending_keys() == 0 {
            self.oldest_ms.store(0, Ordering::Relaxed);
        }
        lock(&self.flush).take()
    }

    fn forget(&self, k: &[u8]) {
        self.bytes.fetch_sub(k.len() + PER_KEY, Ordering::Relaxed);
        self.keys.fetch_sub(1, Ordering::Relaxed);
    }

    /// Forgets every pending key (a full copy is about to cover them).
    pub fn clear(&self) {
        for s in self.shards.iter() {
            let mut set = lock(s);
            // Only the keys still indexed count: drained ones were forgotten already.
            let n = set.len();
            let bytes: usize = set.index.iter().map(|&(_, len)| len as usize).sum();
            set.clear();
            // Shrink a buffer a large backlog grew, so the memory goes back.
            if set.bytes.capacity() > 1 << 20 {
                *set = KeySet::default();
            }
            drop(set);
            self.bytes.fetch_sub(bytes + n * PER_KEY, Ordering::Relaxed);
            self.keys.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// True once if the set overflowed since the last call.
    pub fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, Ordering::AcqRel)
    }

    /// Changes not yet sent: keys recorded, plus frames in the logs.
    pub fn pending_keys(&self) -> usize {
        self.keys.load(Ordering::SeqCst) + self.logs.frames()
    }

    pub fn pending_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.pending_keys() == 0 && lock(&self.flush).is_none()
    }

    /// Milliseconds since the oldest unsent change was made (0 when nothing is pending).
    pub fn lag_ms(&self) -> u64 {
        match self.oldest_ms.load(Ordering::Relaxed) {
            0 => 0,
            t => wall_ms().saturating_sub(t),
        }
    }
}

/// Monotonic nanoseconds since the first call in this process.
fn mono_ns() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

impl ChangeSink for DirtySet {
    fn changed(&self, key: &[u8], state: Option<&StateRef>) {
        match state.map_or(Appended::Refused, |st| self.logs.append(st)) {
            Appended::Logged => {
                self.noted();
            }
            Appended::Staged => {}
            Appended::Refused => {
                self.add(key);
            }
        }
    }

    fn open_batch(&self) -> bool {
        self.logs.open_batch()
    }

    fn close_batch(&self) {
        if self.logs.close_batch(|k| {
            self.add(k);
        }) {
            self.noted();
        }
    }

    fn flushed(&self, st: FlushState) {
        self.add_flush(st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_keys_and_drains_everything() {
        let d = DirtySet::new(1 << 20);
        for _ in 0..3 {
            d.add(b"a");
            d.add(b"b");
        }
        assert_eq!(d.pending_keys(), 2);
        let mut keys = Vec::new();
        assert_eq!(d.drain(&mut keys, usize::MAX), None);
        keys.sort();
        assert_eq!(keys, vec![Box::from(&b"a"[..]), Box::from(&b"b"[..])]);
        assert_eq!(d.pending_keys(), 0);
        assert_eq!(d.pending_bytes(), 0);
        assert!(d.is_empty());
    }

    #[test]
    fn drains_in_slices() {
        let d = DirtySet::new(1 << 20);
        for i in 0..100 {
            d.add(format!("k{i}").as_bytes());
        }
        let mut keys = Vec::new();
        d.drain(&mut keys, 30);
        assert_eq!(keys.len(), 30);
        assert_eq!(d.pending_keys(), 70);
        while d.pending_keys() > 0 {
            d.drain(&mut keys, 30);
        }
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 100);
        assert_eq!(d.pending_bytes(), 0);
    }

    #[test]
    fn a_change_after_an_empty_check_always_wakes_the_sender() {
        let d = DirtySet::new(1 << 20);
        assert!(d.add(b"a"), "the first change wakes the sender");
        assert!(!d.add(b"b"), "later ones ride along");
        let mut keys = Vec::new();
        d.drain(&mut keys, usize::MAX);
        // A worker took the flag while that drain ran, and its key left with the drain: the
        // sender wakes for it, finds nothing pending and goes back to sleep.
        d.armed.store(false, Ordering::SeqCst);
        d.arm();
        assert!(d.is_empty());
        assert!(
            d.add(b"c"),
            "a change after the sender's empty check must wake it"
        );
    }

    #[test]
    fn clear_after_a_partial_drain_keeps_the_accounting() {
        let d = DirtySet::new(1 << 20);
        for i in 0..200 {
            d.add(format!("key{i}").as_bytes());
        }
        let mut keys = Vec::new();
        d.drain(&mut keys, 50);
        assert_eq!(d.pending_keys(), 150);
        d.clear();
        assert_eq!(d.pending_keys(), 0);
        assert_eq!(d.pending_bytes(), 0);
        // Keys added again after a clear are new, and drain intact.
        d.add(b"again");
        d.add(b"again");
        keys.clear();
        d.drain(&mut keys, usize::MAX);
        assert_eq!(keys, vec![Box::from(&b"again"[..])]);
    }

    #[test]
    fn an_unanswered_wake_up_becomes_overdue_until_answered() {
        let d = DirtySet::new(1 << 20);
        assert!(!d.overdue());
        assert!(d.add(b"k"), "the first change asks for a wake-up");
        std::thread::sleep(std::time::Duration::from_nanos(2 * HANDOFF_NS));
        assert!(d.overdue());
        // Woken with no link: nothing drained, but the thread ran.
        d.answered();
        assert!(!d.overdue());
        // No second wake-up is asked for until the thread re-arms, so none is overdue.
        assert!(!d.add(b"k2"));
        std::thread::sleep(std::time::Duration::from_nanos(2 * HANDOFF_NS));
        assert!(!d.overdue());
    }

    #[test]
    fn overflow_drops_keys_and_is_reported_once() {
        let d = DirtySet::new(3 * (PER_KEY + 1));
        d.add(b"a");
        d.add(b"b");
        d.add(b"c");
        assert!(!d.take_overflow());
        d.add(b"d");
        assert!(d.take_overflow());
        assert!(!d.take_overflow());
        assert_eq!(d.pending_keys(), 0);
        assert_eq!(d.pending_bytes(), 0);
    }

    fn live<'a>(key: &'a [u8], value: &'a [u8]) -> StateRef<'a> {
        StateRef::Live(crate::storage::ItemRef {
            key,
            value,
            flags: 0,
            exptime: 0,
            version: 1,
            cas: 1,
            last_access: 0,
            fetched: false,
            repl_bits: 0,
            counter: None,
        })
    }

    #[test]
    fn changes_go_to_the_logs_while_streaming_and_to_the_keys_when_a_log_is_full() {
        let d = DirtySet::new(1 << 20);
        let value = vec![b'v'; 4000];
        d.changed(b"before", Some(&live(b"before", &value)));
        assert_eq!(
            d.pending_bytes(),
            b"before".len() + PER_KEY,
            "no link: keyed"
        );
        d.set_streaming(true);
        // About 4 KB per frame: a 1 MiB log refuses after some 260 of them.
        let keys: Vec<String> = (0..400).map(|i| format!("k{i}")).collect();
        for k in &keys {
            d.changed(k.as_bytes(), Some(&live(k.as_bytes(), &value)));
        }
        let keyed = d.keys.load(Ordering::SeqCst);
        assert!(
            keyed > 1 && keyed < 200,
            "the overflow went to the keys: {keyed}"
        );
        assert_eq!(d.pending_keys(), 401, "logged frames and keys together");
        let mut got = Vec::new();
        let mut taken = Vec::new();
        d.take_logs(&mut taken);
        for (buf, _) in &taken {
            log_keys_of(buf, |k| got.push(k.to_vec()));
        }
        let mut drained = Vec::new();
        d.drain(&mut drained, usize::MAX);
        got.extend(drained.iter().map(|k| k.to_vec()));
        got.sort();
        let mut want: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        want.push(b"before".to_vec());
        want.sort();
        assert_eq!(got, want, "every change is either a frame or a key");
        assert!(d.is_empty());
        // A broken link puts the frames' keys back.
        d.changed(b"again", Some(&live(b"again", b"1")));
        d.set_streaming(false);
        d.unlog();
        assert_eq!(d.keys.load(Ordering::SeqCst), 1);
        assert_eq!(d.logs.frames(), 0);
    }

    #[test]
    fn keeps_the_newest_flush() {
        let d = DirtySet::new(1 << 20);
        d.add_flush(FlushState {
            oldest_version: 5,
            oldest_live: 1,
        });
        d.add_flush(FlushState {
            oldest_version: 3,
            oldest_live: 1,
        });
        let mut keys = Vec::new();
        assert_eq!(
            d.drain(&mut keys, usize::MAX),
            Some(FlushState {
                oldest_version: 5,
                oldest_live: 1
            })
        );
        assert_eq!(d.drain(&mut keys, usize::MAX), None);
    }
}
