//! The set of keys changed locally and not yet sent to the peer: coalesced per key (only a
//! key's latest state matters, and it is read at send time), bounded in bytes, cheap for the
//! workers that fill it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use hashbrown::HashSet;

use crate::clock::wall_ms;
use crate::stats::lock;
use crate::storage::{ChangeSink, FlushState};

const SHARDS: usize = 64;

type KeySet = HashSet<Box<[u8]>>;
/// Accounting overhead per pending key besides its bytes (set slot and allocation header).
const PER_KEY: usize = 32;

pub struct DirtySet {
    shards: Box<[Mutex<KeySet>]>,
    hasher: hashbrown::DefaultHashBuilder,
    bytes: AtomicUsize,
    keys: AtomicUsize,
    limit: AtomicUsize,
    /// Set when the bound was hit and keys were dropped: only a full exchange can repair
    /// what the peer missed.
    overflowed: AtomicBool,
    flush: Mutex<Option<FlushState>>,
    /// Wall-clock milliseconds when the set last went from empty to non-empty: the age of
    /// the oldest unsent change, reported as replication lag.
    oldest_ms: AtomicU64,
    /// Cleared by the replication thread when it drains; the first change after that wakes
    /// it, later ones ride along, so a burst of writes costs one wake-up.
    armed: AtomicBool,
    waker: OnceLock<mio::Waker>,
    /// Rotates the shard a partial drain starts from, so no shard waits behind others.
    cursor: AtomicUsize,
}

impl DirtySet {
    pub fn new(limit_bytes: usize) -> DirtySet {
        DirtySet {
            shards: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            bytes: AtomicUsize::new(0),
            keys: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit_bytes),
            overflowed: AtomicBool::new(false),
            flush: Mutex::new(None),
            oldest_ms: AtomicU64::new(0),
            armed: AtomicBool::new(true),
            waker: OnceLock::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Installs the waker of the replication thread.
    pub fn set_waker(&self, w: mio::Waker) {
        let _ = self.waker.set(w);
    }

    fn shard(&self, key: &[u8]) -> &Mutex<KeySet> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key);
        &self.shards[(h >> 58) as usize % SHARDS]
    }

    fn noted(&self) {
        if self.oldest_ms.load(Ordering::Relaxed) == 0 {
            self.oldest_ms.store(wall_ms(), Ordering::Relaxed);
        }
        if self.armed.swap(false, Ordering::AcqRel) {
            if let Some(w) = self.waker.get() {
                let _ = w.wake();
            }
        }
    }

    pub fn add(&self, key: &[u8]) {
        let cost = key.len() + PER_KEY;
        if self.bytes.load(Ordering::Relaxed) + cost > self.limit.load(Ordering::Relaxed) {
            self.overflow();
            return;
        }
        let mut set = lock(self.shard(key));
        if !set.contains(key) {
            set.insert(key.into());
            self.bytes.fetch_add(cost, Ordering::Relaxed);
            self.keys.fetch_add(1, Ordering::Relaxed);
        }
        drop(set);
        self.noted();
    }

    /// Drops every pending key and records that the peer must be repaired by a full exchange.
    fn overflow(&self) {
        if !self.overflowed.swap(true, Ordering::AcqRel) {
            log::warn!("replication backlog over its bound: falling back to a full exchange");
        }
        self.clear();
        self.noted();
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
            let mut set = lock(&self.shards[(start + i) % SHARDS]);
            if set.len() <= room {
                for k in std::mem::take(&mut *set) {
                    self.forget(&k);
                    keys.push(k);
                    taken += 1;
                }
            } else {
                let mut n = room;
                let part: Vec<Box<[u8]>> = set
                    .extract_if(|_| {
                        let take = n > 0;
                        n = n.saturating_sub(1);
                        take
                    })
                    .collect();
                for k in part {
                    self.forget(&k);
                    keys.push(k);
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
            let taken = std::mem::take(&mut *lock(s));
            for k in taken {
                self.forget(&k);
            }
        }
    }

    /// True once if the set overflowed since the last call.
    pub fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, Ordering::AcqRel)
    }

    pub fn pending_keys(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
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

impl ChangeSink for DirtySet {
    fn changed(&self, key: &[u8]) {
        self.add(key);
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
