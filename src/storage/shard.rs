//! One shard: an arena of item slots, a hash index over them, an intrusive LRU list and the
//! shard's counters. Everything here runs under the shard's lock; the store owns locking,
//! global memory accounting and cross-shard eviction.

use super::{counter, hlc, item};
use hashbrown::HashTable;
use std::hash::BuildHasher;

const IDX_BITS: u32 = 24;
const IDX_MASK: u32 = (1 << IDX_BITS) - 1;
/// "No slot": the end of a list.
pub(crate) const NIL: u32 = IDX_MASK;
/// How many slots ahead a sequential walk asks the CPU to start loading item buffers.
pub(crate) const PREFETCH_AHEAD: u32 = 8;

/// Hints the CPU to start loading the cache line at `p`. A walk over many items (a full
/// copy, the digest, the sweep) is otherwise bound by one cache miss per item buffer,
/// since buffers sit wherever the allocator put them.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and reads nothing into the
    // program, whatever the address. SSE, which provides it, is part of x86_64's baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The key hash: foldhash with an explicit seed (see `Store::with_hash_seed`).
pub(crate) type KeyHasher = foldhash::fast::FixedState;

/// Slots per shard: indices are 24 bits so the key length and state bits can share the
/// link words (see `Slot`). 16.7M items per shard, 4.3G with the default 256 shards.
pub(crate) const MAX_SLOTS: usize = IDX_MASK as usize;

/// The item was read at least once since it was stored.
pub(crate) const BIT_FETCHED: u8 = 1;
/// The item was read again after its first read (memcached's ITEM_ACTIVE).
pub(crate) const BIT_ACTIVE: u8 = 2;
/// The slot is a deleted key's tombstone (key and version, no value): invisible to
/// clients, kept so that an older state from the peer cannot bring the key back.
pub(crate) const BIT_TOMBSTONE: u8 = 4;
/// Meta `I`: the item was invalidated; readers see `X` and one of them wins a recache.
pub(crate) const BIT_STALE: u8 = 8;
/// Meta: a recache win (`W`) was handed out for this item; later readers see `Z`.
pub(crate) const BIT_WIN_SENT: u8 = 16;
/// Meta `b`: the key was sent base64-encoded, so `k` returns it encoded.
pub(crate) const BIT_KEY_BINARY: u8 = 32;
/// The item buffer ends in a counter trailer (see `counter.rs`): the item was incremented
/// in a pair. Plain items never carry one.
pub(crate) const BIT_COUNTER: u8 = 64;
/// The bits that are part of an item's replicated state.
pub(crate) const REPLICATED_BITS: u8 = BIT_STALE | BIT_KEY_BINARY;

/// An arena entry. `prev` carries the key length in its top byte and `next` the state bits,
/// so a slot stays 24 bytes. A free slot has an empty buffer (no allocation) and chains the
/// free list through `next`.
pub(crate) struct Slot {
    data: Box<[u8]>,
    prev: u32,
    next: u32,
}

impl Slot {
    fn prev(&self) -> u32 {
        self.prev & IDX_MASK
    }
    fn next(&self) -> u32 {
        self.next & IDX_MASK
    }
    fn set_prev(&mut self, p: u32) {
        self.prev = (self.prev & !IDX_MASK) | (p & IDX_MASK);
    }
    fn set_next(&mut self, n: u32) {
        self.next = (self.next & !IDX_MASK) | (n & IDX_MASK);
    }
    pub(crate) fn klen(&self) -> usize {
        (self.prev >> IDX_BITS) as usize
    }
    pub(crate) fn bits(&self) -> u8 {
        (self.next >> IDX_BITS) as u8
    }
    pub(crate) fn set_bits(&mut self, b: u8) {
        self.next = (self.next & IDX_MASK) | (u32::from(b) << IDX_BITS);
    }
    pub(crate) fn live(&self) -> bool {
        !self.data.is_empty()
    }
    pub(crate) fn is_tombstone(&self) -> bool {
        self.bits() & BIT_TOMBSTONE != 0
    }
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }
    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
    pub(crate) fn key(&self) -> &[u8] {
        item::key(&self.data, self.klen())
    }
    /// The value clients see (without a counter trailer).
    pub(crate) fn value(&self) -> &[u8] {
        let v = item::value(&self.data, self.klen());
        let t = self.counter().map_or(0, <[u8]>::len);
        v.get(..v.len() - t).unwrap_or(&[])
    }
    /// The counter trailer's encoding, for an incremented item.
    pub(crate) fn counter(&self) -> Option<&[u8]> {
        if self.bits() & BIT_COUNTER == 0 || self.is_tombstone() {
            return None;
        }
        let v = item::value(&self.data, self.klen());
        let len = counter::trailer_len(v)?;
        v.get(v.len() - len..)
    }
    /// The version that orders this state against a different one: the version the
    /// counter started from for an incremented item, the item's own version otherwise.
    pub(crate) fn base_version(&self) -> u64 {
        self.counter()
            .and_then(counter::base_version_of)
            .unwrap_or_else(|| item::version(&self.data))
    }
    pub(crate) fn cost(&self) -> usize {
        item::cost(self.data.len())
    }
}

impl Shard {
    /// Prefetches the item buffer of the slot `PREFETCH_AHEAD` positions after `pos`.
    #[inline(always)]
    pub(crate) fn prefetch_ahead(&self, pos: u32) {
        if let Some(s) = self.slots.get((pos + PREFETCH_AHEAD) as usize) {
            prefetch(s.data.as_ptr());
        }
    }
}

/// Counters kept per shard and summed on demand.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub total_items: u64,
    pub evictions: u64,
    pub reclaimed: u64,
    pub expired_unfetched: u64,
    pub evicted_unfetched: u64,
    pub evicted_active: u64,
    pub crawler_reclaimed: u64,
    pub crawler_items_checked: u64,
    pub outofmemory: u64,
    pub get_expired: u64,
    pub get_flushed: u64,
    pub evicted_nonzero: u64,
    pub evicted_time: u32,
}

/// Why an item is no longer visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dead {
    Expired,
    Flushed,
}

/// The flush watermarks as a lookup sees them (memcached's oldest_live / oldest_cas).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlushView {
    pub oldest_live: u32,
    pub oldest_version: u64,
    /// Compare versions only (a replicating pair): an item's last-access time differs
    /// between the nodes, its version does not.
    pub by_version: bool,
}

impl FlushView {
    /// memcached's `item_is_flushed`: the watermark applies from `oldest_live` on, to items
    /// last accessed at or before it, and (after an immediate flush) to every older version.
    pub(crate) fn flushed(&self, time: u32, version: u64, now: u32) -> bool {
        if self.oldest_live == 0 || self.oldest_live > now {
            return false;
        }
        if self.by_version {
            let at = hlc::version_floor_at_unix_ms((u64::from(self.oldest_live) + 1) * 1000);
            return version < at.max(self.oldest_version);
        }
        time <= self.oldest_live || (self.oldest_version != 0 && version < self.oldest_version)
    }
}

/// Whether an item is dead. A flush compares an incremented item by its base version: the
/// flush replaces the counter as it would the `set` that started it.
pub(crate) fn dead(s: &Slot, now: u32, flush: &FlushView) -> Option<Dead> {
    let d = s.data();
    if flush.flushed(item::time(d), s.base_version(), now) {
        return Some(Dead::Flushed);
    }
    let e = item::exptime(d);
    if e != 0 && e <= now {
        return Some(Dead::Expired);
    }
    None
}

pub(crate) struct Shard {
    hasher: KeyHasher,
    slots: Vec<Slot>,
    free: u32,
    table: HashTable<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    /// Linked slots, tombstones included.
    pub items: u64,
    /// Linked tombstones (not items for clients or stats).
    pub tombstones: u64,
    /// Accounted bytes of this shard's items.
    pub bytes: usize,
    /// Key + value bytes of this shard's items.
    pub requested: u64,
    pub c: Counters,
}

impl Shard {
    pub(crate) fn new(hasher: KeyHasher) -> Shard {
        Shard {
            hasher,
            slots: Vec::new(),
            free: NIL,
            table: HashTable::new(),
            head: NIL,
            tail: NIL,
            items: 0,
            tombstones: 0,
            bytes: 0,
            requested: 0,
            c: Counters::default(),
        }
    }

    pub(crate) fn slot(&self, i: u32) -> Option<&Slot> {
        self.slots.get(i as usize)
    }
    pub(crate) fn slot_mut(&mut self, i: u32) -> Option<&mut Slot> {
        self.slots.get_mut(i as usize)
    }
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }
    /// Hash buckets of the index (a power of two, or 0 before the first insert).
    pub(crate) fn buckets(&self) -> usize {
        match self.table.capacity() {
            0 => 0,
            c => (c * 8 / 7).next_power_of_two(),
        }
    }

    /// Memory of the index: buckets (a u32 and a control byte each) and the slot array.
    pub(crate) fn index_bytes(&self) -> usize {
        self.buckets() * 5 + self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    pub(crate) fn tail(&self) -> u32 {
        self.tail
    }
    pub(crate) fn prev_of(&self, i: u32) -> u32 {
        self.slot(i).map(|s| s.prev()).unwrap_or(NIL)
    }

    pub(crate) fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| {
                slots
                    .get(i as usize)
                    .map(|s| s.key() == key)
                    .unwrap_or(false)
            })
            .copied()
    }

    /// True when a new item can get a slot (the arena is not at its index limit).
    pub(crate) fn has_free_slot(&self) -> bool {
        self.free != NIL || self.slots.len() < MAX_SLOTS
    }

    fn lru_detach(&mut self, i: u32) {
        let (p, n) = match self.slot(i) {
            Some(s) => (s.prev(), s.next()),
            None => return,
        };
        if p == NIL {
            self.head = n;
        } else if let Some(ps) = self.slot_mut(p) {
            ps.set_next(n);
        }
        if n == NIL {
            self.tail = p;
        } else if let Some(ns) = self.slot_mut(n) {
            ns.set_prev(p);
        }
    }

    fn lru_push_head(&mut self, i: u32) {
        let old = self.head;
        if let Some(s) = self.slot_mut(i) {
            s.set_prev(NIL);
            s.set_next(old);
        }
        if old == NIL {
            self.tail = i;
        } else if let Some(os) = self.slot_mut(old) {
            os.set_prev(i);
        }
        self.head = i;
    }

    /// Moves an item to the most-recently-used end.
    pub(crate) fn bump(&mut self, i: u32) {
        if self.head != i {
            self.lru_detach(i);
            self.lru_push_head(i);
        }
    }

    /// Links a new item (the key must be absent). Returns its slot, or None when the arena
    /// is at its index limit. The caller has reserved its cost.
    pub(crate) fn insert(&mut self, hash: u64, data: Box<[u8]>, klen: usize) -> Option<u32> {
        let cost = item::cost(data.len());
        let req = (data.len() - item::HDR) as u64;
        let slot = Slot {
            data,
            prev: (klen as u32) << IDX_BITS,
            next: 0,
        };
        let i = if self.free != NIL {
            let i = self.free;
            let s = self.slots.get_mut(i as usize)?;
            self.free = s.next();
            *s = slot;
            i
        } else if self.slots.len() < MAX_SLOTS {
            if self.slots.len() == self.slots.capacity() {
                // Grow by a quarter, not double: the arena is per-item memory.
                let extra = (self.slots.len() / 4).max(16);
                self.slots.reserve_exact(extra);
            }
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        } else {
            return None;
        };
        let slots = &self.slots;
        let hasher = &self.hasher;
        self.table.insert_unique(hash, i, |&j| {
            slots
                .get(j as usize)
                .map(|s| hasher.hash_one(s.key()))
                .unwrap_or(0)
        });
        self.lru_push_head(i);
        self.items += 1;
        self.bytes += cost;
        self.requested += req;
        self.c.total_items += 1;
        Some(i)
    }

    /// Swaps in a new buffer for the same key, moving the item to the MRU end. Returns the
    /// accounted bytes released by the old buffer.
    pub(crate) fn replace(&mut self, i: u32, data: Box<[u8]>) -> usize {
        let new_cost = item::cost(data.len());
        let new_req = (data.len() - item::HDR) as u64;
        let (old_cost, old_req, was_tomb) = match self.slot_mut(i) {
            Some(s) => {
                let was_tomb = s.is_tombstone();
                let old = std::mem::replace(&mut s.data, data);
                s.set_bits(0);
                (
                    item::cost(old.len()),
                    (old.len() - item::HDR) as u64,
                    was_tomb,
                )
            }
            None => return 0,
        };
        if was_tomb {
            self.tombstones -= 1;
        }
        self.bytes = self.bytes + new_cost - old_cost;
        self.requested = self.requested + new_req - old_req;
        self.c.total_items += 1;
        self.bump(i);
        old_cost
    }

    /// Unlinks an item and frees its buffer. Returns the accounted bytes released.
    pub(crate) fn remove(&mut self, i: u32) -> usize {
        let hash = match self.slot(i) {
            Some(s) if s.live() => self.hasher.hash_one(s.key()),
            _ => return 0,
        };
        if let Ok(e) = self.table.find_entry(hash, |&j| j == i) {
            e.remove();
        }
        self.lru_detach(i);
        let free = self.free;
        let Some(s) = self.slot_mut(i) else { return 0 };
        let was_tomb = s.is_tombstone();
        let old = std::mem::take(&mut s.data);
        s.prev = NIL;
        s.next = free;
        self.free = i;
        if was_tomb {
            self.tombstones -= 1;
        }
        let cost = item::cost(old.len());
        self.items -= 1;
        self.bytes -= cost;
        self.requested -= (old.len() - item::HDR) as u64;
        cost
    }

    /// Marks a freshly linked or replaced slot as a tombstone.
    pub(crate) fn mark_tombstone(&mut self, i: u32) {
        if let Some(s) = self.slot_mut(i) {
            if !s.is_tombstone() {
                s.set_bits(BIT_TOMBSTONE);
                self.tombstones += 1;
            }
        }
    }

    /// Makes room for `n` more items without growing step by step (a full copy announces
    /// its size, and rehashing as the table doubles dominates applying it otherwise).
    pub(crate) fn reserve(&mut self, n: usize) {
        let n = n.min(MAX_SLOTS - self.slots.len());
        self.slots.reserve_exact(n);
        let slots = &self.slots;
        let hasher = &self.hasher;
        self.table.reserve(n, |&j| {
            slots
                .get(j as usize)
                .map(|s| hasher.hash_one(s.key()))
                .unwrap_or(0)
        });
    }

    /// Releases arena and index capacity after the shard emptied out a lot.
    pub(crate) fn maybe_shrink(&mut self) {
        if self.items == 0 && self.slots.len() > 1024 {
            self.slots = Vec::new();
            self.free = NIL;
            self.head = NIL;
            self.tail = NIL;
            self.table = HashTable::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(key: &[u8], v: &[u8]) -> Box<[u8]> {
        item::build(key, &[v], 1, 0, 0, 0)
    }

    #[test]
    fn slot_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), item::SLOT_BYTES);
    }

    #[test]
    fn insert_find_remove_reuse() {
        let hb = KeyHasher::with_seed(7);
        let mut s = Shard::new(hb);
        let h = |k: &[u8]| hb.hash_one(k);
        let a = s.insert(h(b"a"), data(b"a", b"1"), 1);
        let b = s.insert(h(b"bb"), data(b"bb", b"22"), 2);
        assert_eq!(s.find(h(b"a"), b"a"), a);
        assert_eq!(s.find(h(b"bb"), b"bb"), b);
        assert_eq!(s.find(h(b"c"), b"c"), None);
        let Some(ai) = a else { panic!("no slot") };
        assert!(s.remove(ai) > 0);
        assert_eq!(s.find(h(b"a"), b"a"), None);
        let c = s.insert(h(b"c"), data(b"c", b"3"), 1);
        assert_eq!(c, a, "free slot reused");
        assert_eq!(s.items, 2);
        assert_eq!(s.tail(), b.unwrap_or(NIL));
    }
}
