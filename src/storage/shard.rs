//! One shard: an arena of item slots, a hash index over them, an intrusive LRU list and the
//! shard's counters. Everything here runs under the shard's lock; the store owns locking,
//! global memory accounting and cross-shard eviction.

use super::item::NewItem;
use super::mapped::{self, map_vec, MapVec};
use super::{arena, counter, hlc, index, item};
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

/// The links of a lookup's chain that `Shard::warm` loads, in the order they depend on
/// each other. The arena's page entry between slot and item is left out: warming it cost
/// one more pass over the keys than it saved.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Warm {
    Bucket,
    Slot,
    Item,
}

/// Bytes of an item `Shard::warm` loads.
const WARM_ITEM_BYTES: usize = 192;

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

/// A slot: where the item's buffer is, and its LRU links. `prev` carries the key length
/// in its top byte and `next` the state bits, so a slot is 12 bytes. A free slot has no
/// handle and chains the free list through `next`.
struct Rec {
    h: arena::Handle,
    prev: u32,
    next: u32,
}

impl Rec {
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
    fn klen(&self) -> usize {
        (self.prev >> IDX_BITS) as usize
    }
    fn bits(&self) -> u8 {
        (self.next >> IDX_BITS) as u8
    }
    fn set_bits(&mut self, b: u8) {
        self.next = (self.next & IDX_MASK) | (u32::from(b) << IDX_BITS);
    }
    fn live(&self) -> bool {
        self.h != arena::NO_HANDLE
    }
}

/// Slots a slot array grows by at least: a shard of few items keeps a small array. A large
/// one is a mapping of its own (`mapped::MapAlloc`), grown without a copy.
const MIN_GROWTH: usize = 256;

/// The slot array: one vector (a lookup goes index, slot, page, item, with no further
/// indirection: a block table cost 5-10% of pipelined throughput in cache misses).
struct Slots {
    v: MapVec<Rec>,
}

impl Default for Slots {
    fn default() -> Self {
        Slots { v: map_vec() }
    }
}

impl Slots {
    fn get(&self, i: usize) -> Option<&Rec> {
        self.v.get(i)
    }
    fn get_mut(&mut self, i: usize) -> Option<&mut Rec> {
        self.v.get_mut(i)
    }
    fn len(&self) -> usize {
        self.v.len()
    }
    /// Bytes of memory the array occupies.
    fn resident_bytes(&self) -> usize {
        let size = std::mem::size_of::<Rec>();
        mapped::resident(self.v.len() * size, self.v.capacity() * size)
    }
    fn push(&mut self, rec: Rec) {
        if self.v.len() == self.v.capacity() {
            let extra = (self.v.len() / 4).max(MIN_GROWTH);
            self.v.reserve_exact(extra);
        }
        self.v.push(rec);
    }
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Rec> {
        self.v.iter_mut()
    }
}

/// A slot with its item, borrowed from a shard.
#[derive(Clone, Copy)]
pub(crate) struct Slot<'a> {
    rec: &'a Rec,
    data: &'a [u8],
}

/// A slot with its item, borrowed for a change in place.
pub(crate) struct SlotMut<'a> {
    rec: &'a mut Rec,
    data: &'a mut [u8],
}

impl<'a> Slot<'a> {
    pub(crate) fn klen(&self) -> usize {
        self.rec.klen()
    }
    pub(crate) fn bits(&self) -> u8 {
        self.rec.bits()
    }
    pub(crate) fn live(&self) -> bool {
        self.rec.live()
    }
    pub(crate) fn is_tombstone(&self) -> bool {
        self.bits() & BIT_TOMBSTONE != 0
    }
    pub(crate) fn data(&self) -> &'a [u8] {
        self.data
    }
    pub(crate) fn key(&self) -> &'a [u8] {
        item::key(self.data, self.klen())
    }
    /// The value clients see (without a counter trailer).
    pub(crate) fn value(&self) -> &'a [u8] {
        let v = item::value(self.data, self.klen());
        let t = self.counter().map_or(0, <[u8]>::len);
        v.get(..v.len() - t).unwrap_or(&[])
    }
    /// The counter trailer's encoding, for an incremented item.
    pub(crate) fn counter(&self) -> Option<&'a [u8]> {
        if self.bits() & BIT_COUNTER == 0 || self.is_tombstone() {
            return None;
        }
        let v = item::value(self.data, self.klen());
        let len = counter::trailer_len(v)?;
        v.get(v.len() - len..)
    }
    /// The version that orders this state against a different one: the version the
    /// counter started from for an incremented item, the item's own version otherwise.
    pub(crate) fn base_version(&self) -> u64 {
        self.counter()
            .and_then(counter::base_version_of)
            .unwrap_or_else(|| item::version(self.data))
    }
    pub(crate) fn cost(&self) -> usize {
        item::cost(self.data)
    }
}

impl SlotMut<'_> {
    pub(crate) fn klen(&self) -> usize {
        self.rec.klen()
    }
    pub(crate) fn bits(&self) -> u8 {
        self.rec.bits()
    }
    pub(crate) fn set_bits(&mut self, b: u8) {
        self.rec.set_bits(b)
    }
    pub(crate) fn data(&self) -> &[u8] {
        self.data
    }
    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        self.data
    }
}

impl Shard {
    /// Prefetches the item buffer of the slot `PREFETCH_AHEAD` positions after `pos`.
    #[inline(always)]
    pub(crate) fn prefetch_ahead(&self, pos: u32) {
        if let Some(s) = self.slots.get((pos + PREFETCH_AHEAD) as usize) {
            if s.live() {
                prefetch(self.arena.get(s.h).as_ptr());
            }
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
pub(crate) fn dead(s: Slot<'_>, now: u32, flush: &FlushView) -> Option<Dead> {
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
    slots: Slots,
    arena: arena::Arena,
    free: u32,
    index: index::Index,
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
    /// Keys changed under the current lock, reported to the change sink when the lock is
    /// released (see `store::ShardGuard`): by then the change is complete, bits and all.
    notes: Notes,
}

/// Changed keys back to back, with their hashes.
#[derive(Default)]
pub(crate) struct Notes {
    keys: Vec<u8>,
    /// (hash, key length, the slot the change left the key in, or NIL when not known).
    spans: Vec<(u64, u32, u32)>,
}

impl Notes {
    pub(crate) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Visits the (hash, key, slot hint) of each note in the order they were noted.
    pub(crate) fn for_each(&self, mut f: impl FnMut(u64, &[u8], u32)) {
        let mut off = 0usize;
        for &(hash, len, hint) in &self.spans {
            let end = off + len as usize;
            f(hash, self.keys.get(off..end).unwrap_or_default(), hint);
            off = end;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.keys.clear();
        self.spans.clear();
    }
}

impl Shard {
    pub(crate) fn new(hasher: KeyHasher) -> Shard {
        Shard {
            hasher,
            slots: Slots::default(),
            arena: arena::Arena::default(),
            free: NIL,
            index: index::Index::default(),
            head: NIL,
            tail: NIL,
            items: 0,
            tombstones: 0,
            bytes: 0,
            requested: 0,
            c: Counters::default(),
            notes: Notes::default(),
        }
    }

    /// Records that `key` changed, for the change sink.
    /// Notes a change to `key`, which now lives in slot `hint` (NIL: look it up when the
    /// note is reported).
    pub(crate) fn note(&mut self, hash: u64, key: &[u8], hint: u32) {
        self.notes.keys.extend_from_slice(key);
        self.notes.spans.push((hash, key.len() as u32, hint));
    }

    pub(crate) fn has_notes(&self) -> bool {
        !self.notes.is_empty()
    }

    /// Takes the noted keys; `give_back_notes` returns the emptied buffers for reuse.
    pub(crate) fn take_notes(&mut self) -> Notes {
        std::mem::take(&mut self.notes)
    }

    pub(crate) fn give_back_notes(&mut self, mut n: Notes) {
        n.clear();
        self.notes = n;
    }

    pub(crate) fn slot(&self, i: u32) -> Option<Slot<'_>> {
        let rec = self.slots.get(i as usize)?;
        let data = if rec.live() {
            self.arena.get(rec.h)
        } else {
            &[]
        };
        Some(Slot { rec, data })
    }
    pub(crate) fn slot_mut(&mut self, i: u32) -> Option<SlotMut<'_>> {
        let rec = self.slots.get_mut(i as usize)?;
        let data = if rec.live() {
            self.arena.get_mut(rec.h)
        } else {
            &mut []
        };
        Some(SlotMut { rec, data })
    }
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }
    /// Buckets of the hash index.
    pub(crate) fn buckets(&self) -> usize {
        self.index.buckets()
    }

    /// Memory of the index (4 bytes a bucket), the slot array and the
    /// arena's bookkeeping and unused chunks.
    pub(crate) fn index_bytes(&self) -> usize {
        self.buckets() * 4 + self.slots.resident_bytes() + self.arena.overhead_bytes()
    }

    /// The hash of the key in slot `j` (for rebuilding the index).
    fn rehash(slots: &Slots, arena: &arena::Arena, hasher: &KeyHasher, j: u32) -> u64 {
        slots
            .get(j as usize)
            .map(|s| hasher.hash_one(item::key(arena.get(s.h), s.klen())))
            .unwrap_or(0)
    }

    pub(crate) fn tail(&self) -> u32 {
        self.tail
    }
    pub(crate) fn prev_of(&self, i: u32) -> u32 {
        self.slots.get(i as usize).map(|s| s.prev()).unwrap_or(NIL)
    }

    pub(crate) fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.index.find(hash, |i| self.holds(i, key))
    }

    /// True when slot `i` holds `key` (an item or a tombstone): where `find` would find it.
    pub(crate) fn holds(&self, i: u32, key: &[u8]) -> bool {
        self.slots
            .get(i as usize)
            .is_some_and(|s| s.live() && item::key(self.arena.get(s.h), s.klen()) == key)
    }

    /// Starts loading one link of the chain a lookup of `hash` reads (see
    /// `Store::prefetch`); the links before it should be loaded already.
    pub(crate) fn warm(&self, hash: u64, step: Warm) {
        if step == Warm::Bucket {
            prefetch(self.index.home_ptr(hash));
            return;
        }
        // The first entry with the hash's tag: almost always the key's (7-bit tags).
        let Some(rec) = self
            .index
            .find(hash, |_| true)
            .and_then(|i| self.slots.get(i as usize))
        else {
            return;
        };
        match step {
            Warm::Slot => prefetch((rec as *const Rec).cast()),
            Warm::Item if rec.live() => {
                // The header and key, and the start of the value that a read copies out
                // or a write overwrites (from the chunk's address: reading the item's
                // length first would wait for the very line being asked for).
                let d = self.arena.chunk(rec.h);
                for off in (0..d.len().min(WARM_ITEM_BYTES)).step_by(64) {
                    prefetch(d.as_ptr().wrapping_add(off));
                }
                // Moving the item to the LRU head rewrites its neighbours and the head.
                for n in [rec.prev(), rec.next(), self.head] {
                    if let Some(r) = self.slots.get(n as usize) {
                        prefetch((r as *const Rec).cast());
                    }
                }
            }
            _ => {}
        }
    }

    /// True when a new item can get a slot (the arena is not at its index limit).
    pub(crate) fn has_free_slot(&self) -> bool {
        self.free != NIL || self.slots.len() < MAX_SLOTS
    }

    fn lru_detach(&mut self, i: u32) {
        let (p, n) = match self.slots.get(i as usize) {
            Some(s) => (s.prev(), s.next()),
            None => return,
        };
        if p == NIL {
            self.head = n;
        } else if let Some(ps) = self.slots.get_mut(p as usize) {
            ps.set_next(n);
        }
        if n == NIL {
            self.tail = p;
        } else if let Some(ns) = self.slots.get_mut(n as usize) {
            ns.set_prev(p);
        }
    }

    fn lru_push_head(&mut self, i: u32) {
        let old = self.head;
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.set_prev(NIL);
            s.set_next(old);
        }
        if old == NIL {
            self.tail = i;
        } else if let Some(os) = self.slots.get_mut(old as usize) {
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

    /// Releases a buffer, compacting its size class when it has become sparse.
    fn free_buffer(&mut self, h: arena::Handle) {
        if let Some(c) = self.arena.free(h, self.slots.len()) {
            self.compact(c);
        }
    }

    /// Moves the items of a sparse size class out of its newest pages and frees those
    /// pages, so memory a class no longer needs can serve other sizes. The pass over the
    /// slots is paid only after an eighth of the class, and at least a byte per slot, has
    /// been freed (see `Arena::free`).
    fn compact(&mut self, c: u8) {
        if !self.arena.begin_drain(c) {
            return;
        }
        for rec in self.slots.iter_mut() {
            if self.arena.in_drain(rec.h) {
                rec.h = self.arena.relocate(rec.h);
            }
        }
        self.arena.end_drain(c);
    }

    /// Links a new item (the key must be absent). Returns its slot, or None when the arena
    /// is at its index limit. The caller has reserved its cost.
    pub(crate) fn insert<'a>(
        &mut self,
        hash: u64,
        data: impl Into<NewItem<'a>>,
        klen: usize,
    ) -> Option<u32> {
        let data = data.into();
        let cost = data.cost();
        let req = data.payload_len() as u64;
        if self.free == NIL && self.slots.len() >= MAX_SLOTS {
            return None;
        }
        let h = self.arena.put(data)?;
        let rec = Rec {
            h,
            prev: (klen as u32) << IDX_BITS,
            next: 0,
        };
        let i = if self.free != NIL {
            let i = self.free;
            let Some(s) = self.slots.get_mut(i as usize) else {
                self.free_buffer(h);
                return None;
            };
            self.free = s.next();
            *s = rec;
            i
        } else {
            self.slots.push(rec);
            (self.slots.len() - 1) as u32
        };
        let (slots, arena, hasher) = (&self.slots, &self.arena, &self.hasher);
        self.index
            .insert(hash, i, |j| Self::rehash(slots, arena, hasher, j));
        self.lru_push_head(i);
        self.items += 1;
        self.bytes += cost;
        self.requested += req;
        self.c.total_items += 1;
        Some(i)
    }

    /// Swaps a slot's buffer for `data` (same key), keeping its bits and LRU place; a
    /// draft must not be made of the slot's own bytes (it may be written over them).
    /// Returns the old buffer's cost, or None when there is no room for the new buffer
    /// (the old one stays).
    fn swap_buffer<'a>(&mut self, i: u32, data: impl Into<NewItem<'a>>) -> Option<usize> {
        let data = data.into();
        let new_cost = data.cost();
        let new_req = data.payload_len() as u64;
        let old_h = self.slots.get(i as usize).filter(|s| s.live())?.h;
        let old = self.arena.get(old_h);
        let (old_cost, old_req) = (item::cost(old), item::payload_len(old) as u64);
        if let Err(data) = self.arena.overwrite(old_h, data) {
            let h = self.arena.put(data)?;
            if let Some(s) = self.slots.get_mut(i as usize) {
                s.h = h;
            }
            self.free_buffer(old_h);
        }
        self.bytes = self.bytes + new_cost - old_cost;
        self.requested = self.requested + new_req - old_req;
        Some(old_cost)
    }

    /// Swaps in a new buffer for the same key, moving the item to the MRU end. Returns the
    /// accounted bytes released by the old buffer, or None (and nothing changed) when the
    /// arena has no page number left (see `arena::MAX_PAGES`).
    pub(crate) fn replace<'a>(&mut self, i: u32, data: impl Into<NewItem<'a>>) -> Option<usize> {
        let was_tomb = self.slot(i).is_some_and(|s| s.is_tombstone());
        let old_cost = self.swap_buffer(i, data)?;
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.set_bits(0);
        }
        if was_tomb {
            self.tombstones -= 1;
        }
        self.c.total_items += 1;
        self.bump(i);
        Some(old_cost)
    }

    /// Gives an item a new exptime, rebuilding it in the long form when it was stored
    /// without one. Its accounted cost does not change (see `item::cost`).
    pub(crate) fn set_exptime(&mut self, i: u32, exptime: u32) {
        let Some(mut s) = self.slot_mut(i) else {
            return;
        };
        if item::set_exptime(s.data_mut(), exptime) {
            return;
        }
        let data = item::with_exptime(s.data(), s.klen(), exptime);
        // Fails only when the arena has no page number left, which takes a shard of some
        // 16.7 million items of over 1016 bytes each (see `arena::MAX_PAGES`); the item
        // then keeps its old exptime, as when a touch races a delete.
        let _ = self.swap_buffer(i, data);
    }

    /// Unlinks an item and frees its buffer. Returns the accounted bytes released.
    pub(crate) fn remove(&mut self, i: u32) -> usize {
        let (hash, h, was_tomb, cost, req) = match self.slot(i) {
            Some(s) if s.live() => (
                self.hasher.hash_one(s.key()),
                s.rec.h,
                s.is_tombstone(),
                s.cost(),
                item::payload_len(s.data()) as u64,
            ),
            _ => return 0,
        };
        self.index.remove(hash, i);
        self.lru_detach(i);
        let free = self.free;
        let Some(s) = self.slots.get_mut(i as usize) else {
            return 0;
        };
        s.h = arena::NO_HANDLE;
        s.prev = NIL;
        s.next = free;
        self.free = i;
        self.free_buffer(h);
        if was_tomb {
            self.tombstones -= 1;
        }
        self.items -= 1;
        self.bytes -= cost;
        self.requested -= req;
        cost
    }

    /// Marks a freshly linked or replaced slot as a tombstone.
    pub(crate) fn mark_tombstone(&mut self, i: u32) {
        if let Some(s) = self.slots.get_mut(i as usize) {
            if s.bits() & BIT_TOMBSTONE == 0 {
                s.set_bits(BIT_TOMBSTONE);
                self.tombstones += 1;
            }
        }
    }

    /// Makes room for `n` more items without growing step by step (a full copy announces
    /// its size, and rehashing as the table doubles dominates applying it otherwise).
    pub(crate) fn reserve(&mut self, n: usize) {
        let n = n.min(MAX_SLOTS - self.slots.len());
        let (slots, arena, hasher) = (&self.slots, &self.arena, &self.hasher);
        self.index
            .reserve(n, |j| Self::rehash(slots, arena, hasher, j));
    }

    /// Releases arena and index capacity after the shard emptied out a lot.
    pub(crate) fn maybe_shrink(&mut self) {
        if self.items == 0 && self.slots.len() > 1024 {
            self.slots = Slots::default();
            self.arena = arena::Arena::default();
            self.free = NIL;
            self.head = NIL;
            self.tail = NIL;
            self.index = index::Index::default();
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
    fn slot_is_12_bytes() {
        assert_eq!(std::mem::size_of::<Rec>(), item::SLOT_BYTES);
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

    #[test]
    fn a_class_that_empties_out_is_compacted_and_its_items_survive() {
        let hb = KeyHasher::with_seed(9);
        let mut s = Shard::new(hb);
        let h = |k: &[u8]| hb.hash_one(k);
        let key = |i: usize| format!("key-{i:05}").into_bytes();
        let val = |i: usize| format!("{i:0100}").into_bytes();
        let mut slot = Vec::new();
        for i in 0..3000 {
            let k = key(i);
            slot.push(s.insert(h(&k), data(&k, &val(i)), k.len()));
        }
        let full = s.arena.overhead_bytes() + s.bytes;
        // Delete nine in ten, then a different size moves in.
        for (i, si) in slot.iter().enumerate() {
            if i % 10 != 0 {
                assert!(s.remove(si.unwrap_or(NIL)) > 0);
            }
        }
        let pages_left: usize = s.arena.overhead_bytes();
        for i in 0..300 {
            let k = format!("other-{i}").into_bytes();
            s.insert(h(&k), data(&k, &[b'x'; 300]), k.len());
        }
        // Compaction gave the emptied pages back: what is left unused in the class is a
        // few pages, not the 90% that was deleted.
        assert!(
            pages_left < full / 8,
            "unused {pages_left} of {full} after deleting 90%"
        );
        for i in (0..3000).step_by(10) {
            let k = key(i);
            let Some(si) = s.find(h(&k), &k) else {
                panic!("key {i} lost")
            };
            assert_eq!(s.slot(si).map(|x| x.value().to_vec()), Some(val(i)));
        }
        assert_eq!(s.items, 600);
    }

    #[test]
    fn giving_an_exptime_to_a_short_item_keeps_everything_else() {
        let hb = KeyHasher::with_seed(3);
        let mut s = Shard::new(hb);
        let k = b"k1";
        let Some(i) = s.insert(hb.hash_one(k), item::build(k, &[b"v"], 42, 0, 0, 7), 2) else {
            panic!("no slot")
        };
        if let Some(mut m) = s.slot_mut(i) {
            m.set_bits(BIT_FETCHED);
        }
        let before = s.bytes;
        s.set_exptime(i, 1000);
        let Some(x) = s.slot(i) else {
            panic!("slot gone")
        };
        let d = x.data();
        assert_eq!(
            (item::exptime(d), item::version(d), item::time(d), x.value()),
            (1000, 42, 7, &b"v"[..])
        );
        assert_eq!(x.bits(), BIT_FETCHED);
        assert_eq!(s.bytes, before, "the exptime was paid for at insert");
        assert_eq!(s.find(hb.hash_one(k), k), Some(i));
    }
}
