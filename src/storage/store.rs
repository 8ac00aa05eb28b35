//! The sharded store and its public operations: memcached's storage semantics over
//! versioned items, global memory accounting, LRU eviction, expiry and flush.

use super::hlc::{self, ClockFn, Hlc};
use super::item::{self, realtime, Draft, NewItem};
use super::shard::{
    self, Dead, FlushView, KeyHasher, Shard, Warm, BIT_ACTIVE, BIT_FETCHED, BIT_KEY_BINARY,
    BIT_STALE, BIT_WIN_SENT, NIL,
};
use super::{ChangeSink, StoreCmd};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Sizing and policy of a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `-m` in bytes: the bound on accounted item memory.
    pub memory_limit: usize,
    /// `-M` clears this: refuse stores instead of evicting when memory is full.
    pub evictions: bool,
    /// `-I` in bytes.
    pub item_size_max: usize,
    /// `-C` clears this (changes `cas` command semantics like memcached's `use_cas`).
    pub cas_enabled: bool,
    /// Number of shards; rounded up to a power of two.
    pub shards: usize,
    /// This node's id, stored in the low byte of every version it creates.
    pub node_id: u8,
}

/// What a lookup found, for memcached's get_hits/get_misses/get_expired/get_flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
    Expired,
    Flushed,
}

/// A live item, borrowed while its shard is locked.
#[derive(Debug)]
pub struct ItemRef<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub flags: u32,
    /// Absolute unix seconds; 0 = never.
    pub exptime: u32,
    /// The item's version, which is its CAS value.
    pub version: u64,
    /// The CAS value to show clients: the version, or 0 under `-C` (as memcached's `gets`).
    pub cas: u64,
    /// Unix seconds of the last access.
    pub last_access: u32,
    /// Whether the item had been read before this access.
    pub fetched: bool,
    /// The state bits that replicate with the item (stale, binary key).
    pub repl_bits: u8,
    /// The counter state of an item incremented in a pair (its encoding), if any.
    pub counter: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    NotStored,
    Exists,
    NotFound,
    TooLarge,
    OutOfMemory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOutcome {
    Value(u64),
    NotFound,
    NonNumeric,
    OutOfMemory,
}

/// Store-wide counters and gauges, summed over shards on demand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub curr_items: u64,
    pub total_items: u64,
    /// Accounted bytes of live items (what `memory_limit` bounds).
    pub bytes: u64,
    pub evictions: u64,
    pub reclaimed: u64,
    pub expired_unfetched: u64,
    pub evicted_unfetched: u64,
    pub evicted_active: u64,
    pub crawler_reclaimed: u64,
    pub crawler_items_checked: u64,
    pub outofmemory: u64,
    /// Seconds since the last access of the least recently used item (0 when empty).
    pub oldest_item_age: u32,
    /// Time since last access of the most recently evicted item, at eviction.
    pub evicted_time: u32,
    /// Sum of key+value bytes of live items (memcached's mem_requested equivalent).
    pub mem_requested: u64,
    pub memory_limit: u64,
    /// Lookups (by any command) that found an expired item: memcached counts these in
    /// do_item_get for every command, not only `get`.
    pub get_expired: u64,
    /// Lookups (by any command) that found a flushed item.
    pub get_flushed: u64,
    /// Evicted items that had an expiry time.
    pub evicted_nonzero: u64,
    /// Bytes of the index structures (hash tables and slot arrays).
    pub hash_bytes: u64,
    /// log2 of the total number of hash buckets.
    pub hash_power_level: u32,
    /// Deleted keys remembered for replication.
    pub tombstones: u64,
}

/// The flush watermarks (memcached's `oldest_live` and `oldest_cas`), plus the version
/// form of the time rule for replication.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushState {
    /// Unix seconds; 0 = no flush. From this second on, items last accessed at or before
    /// it are invisible.
    pub oldest_live: u32,
    /// After an immediate flush: items with a lower version are invisible (0 = none).
    pub oldest_version: u64,
}

impl FlushState {
    /// The time rule as a version watermark: versions created before second
    /// `oldest_live + 1` (per their physical part). 0 when no flush is set.
    pub fn time_watermark(&self) -> u64 {
        if self.oldest_live == 0 {
            return 0;
        }
        hlc::version_floor_at_unix_ms((u64::from(self.oldest_live) + 1) * 1000)
    }
}

/// Meta-command refinements of a storage command.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOpts {
    /// `C` with append/prepend: the item's CAS must match (0 = no check).
    pub compare: u64,
    /// `I` with a CAS write: a CAS below the item's is accepted, the value stored stale.
    pub stale_ok: bool,
    /// `E`: the version the write creates. Refused (`Exists`) unless it is above the key's
    /// current version, item or tombstone.
    pub version: Option<u64>,
    /// The key came base64-encoded (meta `b`).
    pub key_binary: bool,
}

/// One storage request, as store_locked needs it.
struct Write<'a> {
    cmd: StoreCmd,
    key: &'a [u8],
    hash: u64,
    flags: u32,
    exp: u32,
    value: &'a [u8],
    cas_unique: u64,
}

/// Where the version of a state being linked comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// A client write: the store assigns a fresh version and tells replication.
    Local,
    /// A client write whose version is already in the data (meta `E`): replicated.
    LocalVersioned,
    /// A peer's state, applied as received: not replicated back.
    Remote,
}

/// Seconds an item stays dead before the background sweep removes it.
const REAP_GRACE: u32 = 3;
/// Items checked per `reap` call.
pub const REAP_BATCH: usize = 2048;
/// How many items from the LRU tail an eviction looks at for an expired one first
/// (memcached's lru_pull_tail search depth).
const TAIL_SEARCH: usize = 5;
/// Store retries after making room in other shards before answering out-of-memory.
const ROOM_RETRIES: usize = 4;

pub(super) enum Step<T> {
    Done(T),
    /// The operation needs this many more bytes than the home shard could free.
    NeedRoom(usize),
}

pub struct Store {
    pub(super) cfg: StoreConfig,
    pub(super) shards: Box<[Mutex<Shard>]>,
    shard_mask: usize,
    hasher: KeyHasher,
    pub(super) hlc: Hlc,
    used: AtomicUsize,
    limit: AtomicUsize,
    oldest_live: AtomicU32,
    oldest_version: AtomicU64,
    /// memcached's process_started: absolute flush times at or before it disable flushing.
    started: u32,
    sink: Option<Arc<dyn ChangeSink>>,
    /// Part of a replicating pair: deletes leave tombstones, touches take a new version,
    /// and delayed flushes compare versions (access times differ between the nodes).
    pub(super) pair: bool,
    /// Tombstones created before this unix second may be dropped (set by replication once
    /// the peer can no longer send an older state of the key).
    pub(super) tomb_horizon: AtomicU32,
    evict_cursor: AtomicUsize,
    reap_cursor: Mutex<(usize, u32)>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("cfg", &self.cfg)
            .field("used", &self.used.load(Ordering::Relaxed))
            .finish()
    }
}

/// A locked shard. Changes noted while it is held go to the change sink on release.
pub(super) struct ShardGuard<'a> {
    sh: MutexGuard<'a, Shard>,
    store: &'a Store,
}

impl std::ops::Deref for ShardGuard<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.sh
    }
}

impl std::ops::DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.sh
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        if self.sh.has_notes() {
            self.store.report(&mut self.sh);
        }
        // Every item write happens under a guard: this orders its streaming stores before
        // the lock's release.
        super::item::fence_streams();
    }
}

/// A batch of changes open on the calling thread (see `Store::batch`); closes on drop.
pub struct Batch<'a> {
    store: &'a Store,
    open: bool,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if let (true, Some(sink)) = (self.open, &self.store.sink) {
            sink.close_batch();
        }
    }
}

/// Keys `Store::prefetch` warms at most.
pub const PREFETCH_MAX: usize = 32;

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard lock cannot leave the shard half-linked in a way
    // that breaks memory safety; keep serving rather than poisoning the whole cache.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    pub fn new(cfg: StoreConfig) -> Store {
        let n = cfg.shards.max(1).next_power_of_two();
        // A random seed unless the pair sets a shared one (with_hash_seed).
        let hasher = KeyHasher::with_seed(foldhash::fast::RandomState::default().hash_one(n));
        let shards: Vec<Mutex<Shard>> = (0..n).map(|_| Mutex::new(Shard::new(hasher))).collect();
        let started = (hlc::system_clock_us() / 1_000_000) as u32;
        Store {
            hlc: Hlc::new(cfg.node_id),
            limit: AtomicUsize::new(cfg.memory_limit),
            shard_mask: n - 1,
            shards: shards.into_boxed_slice(),
            hasher,
            used: AtomicUsize::new(0),
            oldest_live: AtomicU32::new(0),
            oldest_version: AtomicU64::new(0),
            // memcached sets process_started 62 s before its real start.
            started: started.saturating_sub(62),
            sink: None,
            pair: false,
            tomb_horizon: AtomicU32::new(0),
            evict_cursor: AtomicUsize::new(0),
            reap_cursor: Mutex::new((0, 0)),
            cfg,
        }
    }

    /// Reports every successful mutation's key to `sink` (not evictions or expiry).
    pub fn with_change_sink(mut self, sink: Arc<dyn ChangeSink>) -> Store {
        self.sink = Some(sink);
        self
    }

    /// Hashes keys with `seed`. Both nodes of a pair use the same seed, so a key lives in the
    /// same shard on both and a full copy, which walks the sender's shards in order, fills
    /// the receiver one shard at a time instead of scattering over all of them. Call before
    /// any item is stored.
    pub fn with_hash_seed(mut self, seed: u64) -> Store {
        let hasher = KeyHasher::with_seed(seed);
        self.hasher = hasher;
        self.shards = (0..self.shards.len())
            .map(|_| Mutex::new(Shard::new(hasher)))
            .collect();
        self
    }

    /// Makes this store one node of a replicating pair (see the `pair` field).
    pub fn replicated(mut self) -> Store {
        self.pair = true;
        self
    }

    /// Draws versions from `clock` (unix milliseconds) instead of the system clock.
    pub fn with_clock(mut self, clock: ClockFn) -> Store {
        self.hlc = Hlc::with_clock(self.cfg.node_id, clock);
        self
    }

    /// Sets memcached's process start time (unix seconds) used by `flush_all <absolute>`.
    pub fn with_start_time(mut self, unix_secs: u32) -> Store {
        self.started = unix_secs.saturating_sub(62);
        self
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// The clock that versions this store's items (replication observes peer versions
    /// through it).
    pub fn hlc(&self) -> &Hlc {
        &self.hlc
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Accounted bytes in use right now.
    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn memory_limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    pub fn flush_state(&self) -> FlushState {
        FlushState {
            oldest_live: self.oldest_live.load(Ordering::Acquire),
            oldest_version: self.oldest_version.load(Ordering::Acquire),
        }
    }

    pub(super) fn flush_view(&self) -> FlushView {
        FlushView {
            oldest_live: self.oldest_live.load(Ordering::Acquire),
            oldest_version: self.oldest_version.load(Ordering::Acquire),
            by_version: self.pair,
        }
    }

    pub(super) fn hash(&self, key: &[u8]) -> (u64, usize) {
        let h = self.hasher.hash_one(key);
        // The shard's index takes its bucket from the low 32 bits and its tag from the top
        // 7; taking the shard from bits 32.. keeps both fully random within a shard.
        (h, ((h >> 32) as usize) & self.shard_mask)
    }

    pub(super) fn shard(&self, i: usize) -> ShardGuard<'_> {
        ShardGuard {
            sh: lock(&self.shards[i & self.shard_mask]),
            store: self,
        }
    }

    /// Lets the change sink hold this thread's changes back until the returned guard is
    /// dropped, then take them together: a worker brackets each batch of one client's
    /// requests, so the handover to replication is paid per batch, not per change.
    pub fn batch(&self) -> Batch<'_> {
        let open = self.sink.as_ref().is_some_and(|s| s.open_batch());
        Batch { store: self, open }
    }

    /// Starts loading into the cache what lookups of these keys will read: the index
    /// bucket of every key, then every key's slot, then every item. A lookup is a chain of
    /// dependent loads (bucket, slot, page entry, item) that, done one key after the
    /// other, waits for each cache miss in turn; done a link of every key at a time, the
    /// misses overlap. Each pass takes the shard's lock, since the next link's address is
    /// read from the last one. A hint only: nothing observable changes. Up to
    /// `PREFETCH_MAX` keys are used.
    pub fn prefetch(&self, keys: &[&[u8]]) {
        let mut hs = [(0u64, 0usize); PREFETCH_MAX];
        let n = keys.len().min(PREFETCH_MAX);
        for (h, k) in hs.iter_mut().zip(keys) {
            *h = self.hash(k);
        }
        for step in [Warm::Bucket, Warm::Slot, Warm::Item] {
            for &(h, i) in &hs[..n] {
                lock(&self.shards[i]).warm(h, step);
            }
        }
    }

    /// Notes a change to `key` for the change sink, which hears of it, with the key's
    /// state, when the shard's lock is released.
    pub(super) fn notify(&self, sh: &mut Shard, hash: u64, key: &[u8]) {
        self.notify_at(sh, hash, key, shard::NIL);
    }

    /// `notify` for a key known to live in slot `i` now, which spares the report a lookup.
    fn notify_at(&self, sh: &mut Shard, hash: u64, key: &[u8], i: u32) {
        if self.sink.is_some() {
            sh.note(hash, key, i);
        }
    }

    /// Reports the keys noted in `sh` to the sink, each with its state now. The lookups
    /// find lines the change has just touched: far cheaper than the replication thread
    /// looking every key up again later, from another core.
    fn report(&self, sh: &mut Shard) {
        self.report_sourced(sh, None);
    }

    /// `report`, where the state in slot `src.0` has the value `src.1`, still in the
    /// caller's buffer: a long value written to its item with streaming stores is then
    /// encoded from that buffer, in cache, instead of read back from memory.
    fn report_sourced(&self, sh: &mut Shard, src: Option<(u32, &[u8])>) {
        let notes = sh.take_notes();
        if let Some(sink) = &self.sink {
            notes.for_each(|hash, key, hint| {
                // The hint was right when noted; a later change under the same lock may
                // have moved the key since, hence the check.
                let at = if sh.holds(hint, key) {
                    Some(hint)
                } else {
                    sh.find(hash, key)
                };
                let st = at.and_then(|i| sh.slot(i)).map(|s| {
                    let mut st = super::repl::state_of(self, s);
                    if let (Some((si, v)), super::StateRef::Live(it)) = (src, &mut st) {
                        if at == Some(si) && it.value.len() == v.len() {
                            it.value = v;
                        }
                    }
                    st
                });
                sink.changed(key, st.as_ref());
            });
        }
        sh.give_back_notes(notes);
    }

    pub(super) fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    fn try_reserve(&self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let limit = self.limit.load(Ordering::Acquire);
        let mut cur = self.used.load(Ordering::Acquire);
        loop {
            let Some(next) = cur.checked_add(bytes) else {
                return false;
            };
            if next > limit {
                return false;
            }
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    /// Looks a key up, dropping it when expired or flushed (memcached's do_item_get).
    pub(super) fn lookup(
        &self,
        sh: &mut Shard,
        hash: u64,
        key: &[u8],
        now: u32,
    ) -> Result<u32, Lookup> {
        let Some(i) = sh.find(hash, key) else {
            return Err(Lookup::Miss);
        };
        if sh.slot(i).is_some_and(|s| s.is_tombstone()) {
            // Stays: it is what keeps an older state from the peer out.
            return Err(Lookup::Miss);
        }
        let flush = self.flush_view();
        let state = sh.slot(i).and_then(|s| shard::dead(s, now, &flush));
        match state {
            None => Ok(i),
            Some(d) => {
                let freed = sh.remove(i);
                self.release(freed);
                if d == Dead::Flushed {
                    sh.c.get_flushed += 1;
                    Err(Lookup::Flushed)
                } else {
                    sh.c.get_expired += 1;
                    Err(Lookup::Expired)
                }
            }
        }
    }

    /// Frees one item in `sh` to make room: an expired or flushed item near the LRU tail
    /// first, otherwise (when evictions are on) the least recently used item. `protect`
    /// is never chosen.
    fn evict_one(&self, sh: &mut Shard, now: u32, protect: u32) -> bool {
        let flush = self.flush_view();
        let mut cur = sh.tail();
        let mut victim = NIL;
        for _ in 0..TAIL_SEARCH {
            if cur == NIL {
                break;
            }
            if cur != protect {
                if let Some(s) = sh.slot(cur) {
                    if shard::dead(s, now, &flush).is_some() {
                        let unfetched = s.bits() & BIT_FETCHED == 0;
                        let freed = sh.remove(cur);
                        self.release(freed);
                        sh.c.reclaimed += 1;
                        if unfetched {
                            sh.c.expired_unfetched += 1;
                        }
                        return true;
                    }
                }
                if victim == NIL {
                    victim = cur;
                }
            }
            cur = sh.prev_of(cur);
        }
        if !self.cfg.evictions || victim == NIL {
            return false;
        }
        let Some(s) = sh.slot(victim) else {
            return false;
        };
        let bits = s.bits();
        let age = now.saturating_sub(item::time(s.data()));
        let had_ttl = item::exptime(s.data()) != 0;
        let freed = sh.remove(victim);
        self.release(freed);
        sh.c.evictions += 1;
        if had_ttl {
            sh.c.evicted_nonzero += 1;
        }
        sh.c.evicted_time = age;
        if bits & BIT_FETCHED == 0 {
            sh.c.evicted_unfetched += 1;
        }
        if bits & BIT_ACTIVE != 0 {
            sh.c.evicted_active += 1;
        }
        true
    }

    /// Reserves `need` bytes, first from `credit` (room made earlier in other shards), then
    /// by freeing items of this shard.
    fn reserve_in(
        &self,
        sh: &mut Shard,
        need: usize,
        now: u32,
        protect: u32,
        credit: &mut usize,
    ) -> bool {
        let from_credit = need.min(*credit);
        *credit -= from_credit;
        let need = need - from_credit;
        loop {
            if self.try_reserve(need) {
                return true;
            }
            if !self.evict_one(sh, now, protect) {
                *credit += from_credit;
                return false;
            }
        }
    }

    /// Makes and reserves room for `need` bytes by freeing items in the shards, one shard
    /// lock at a time, starting from a rotating position. Returns false when nothing more
    /// can be freed.
    fn make_room_elsewhere(&self, need: usize, now: u32) -> bool {
        let n = self.shards.len();
        let start = self.evict_cursor.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let mut sh = self.shard(start.wrapping_add(k));
            loop {
                if self.try_reserve(need) {
                    return true;
                }
                if !self.evict_one(&mut sh, now, NIL) {
                    break;
                }
            }
        }
        self.try_reserve(need)
    }

    /// Runs `op` against the key's shard; when it cannot find room there, makes room in the
    /// other shards (never holding two shard locks) and runs it again.
    pub(super) fn with_room<T>(
        &self,
        shard_idx: usize,
        oom: T,
        mut op: impl FnMut(&mut Shard, &mut usize) -> Step<T>,
        now: u32,
    ) -> T {
        let mut credit = 0usize;
        let mut result = oom;
        for _ in 0..ROOM_RETRIES {
            let step = {
                let mut sh = self.shard(shard_idx);
                let s = op(&mut sh, &mut credit);
                if matches!(s, Step::NeedRoom(_)) && !self.cfg.evictions {
                    sh.c.outofmemory += 1;
                }
                s
            };
            match step {
                Step::Done(t) => {
                    result = t;
                    break;
                }
                Step::NeedRoom(bytes) => {
                    if !self.cfg.evictions {
                        break;
                    }
                    let want = bytes.saturating_sub(credit);
                    if !self.make_room_elsewhere(want, now) {
                        self.shard(shard_idx).c.outofmemory += 1;
                        break;
                    }
                    credit += want;
                }
            }
        }
        self.release(credit);
        result
    }

    pub(super) fn item_ref<'a>(&self, s: shard::Slot<'a>) -> ItemRef<'a> {
        let d = s.data();
        let version = item::version(d);
        ItemRef {
            key: s.key(),
            value: s.value(),
            flags: item::flags(d),
            exptime: item::exptime(d),
            version,
            cas: if self.cfg.cas_enabled { version } else { 0 },
            last_access: item::time(d),
            fetched: s.bits() & BIT_FETCHED != 0,
            repl_bits: s.bits() & shard::REPLICATED_BITS,
            counter: s.counter(),
        }
    }

    /// memcached's do_item_bump: marks the item fetched (active on a repeat) and moves it to
    /// the MRU end.
    pub(super) fn touch_access(sh: &mut Shard, i: u32, now: u32) {
        if let Some(mut s) = sh.slot_mut(i) {
            let b = s.bits();
            let nb = if b & BIT_FETCHED == 0 {
                b | BIT_FETCHED
            } else {
                b | BIT_ACTIVE
            };
            s.set_bits(nb);
            item::set_time(s.data_mut(), now);
        }
        sh.bump(i);
    }

    /// `get`: on a hit, calls `f` with the item (before the access is recorded, so
    /// `fetched` says whether it had been read before), marks it fetched and bumps it.
    pub fn get<R>(
        &self,
        key: &[u8],
        now: u32,
        f: impl FnOnce(&ItemRef) -> R,
    ) -> (Lookup, Option<R>) {
        let (hash, si) = self.hash(key);
        let mut sh = self.shard(si);
        match self.lookup(&mut sh, hash, key, now) {
            Err(l) => (l, None),
            Ok(i) => {
                let r = sh.slot(i).map(|s| f(&self.item_ref(s)));
                Self::touch_access(&mut sh, i, now);
                (Lookup::Hit, r)
            }
        }
    }

    /// `gat`/`gats`: a get that also sets a new exptime (memcached's item_touch; the CAS is
    /// unchanged, as in memcached).
    pub fn get_and_touch<R>(
        &self,
        key: &[u8],
        exptime: i32,
        now: u32,
        f: impl FnOnce(&ItemRef) -> R,
    ) -> (Lookup, Option<R>) {
        let (hash, si) = self.hash(key);
        let exp = realtime(i64::from(exptime), now);
        let mut sh = self.shard(si);
        match self.lookup(&mut sh, hash, key, now) {
            Err(l) => (l, None),
            Ok(i) => {
                // memcached keeps the CAS on a touch; a pair needs a new version so the new
                // expiry wins over the old state on the peer.
                let cur = sh.slot(i).map(|s| item::version(s.data())).unwrap_or(0);
                let version = self.pair.then(|| self.version_after(cur));
                sh.set_exptime(i, exp);
                if let Some(v) = version {
                    if let Some(mut s) = sh.slot_mut(i) {
                        item::set_version(s.data_mut(), v);
                    }
                }
                let r = sh.slot(i).map(|s| f(&self.item_ref(s)));
                Self::touch_access(&mut sh, i, now);
                self.notify(&mut sh, hash, key);
                (Lookup::Hit, r)
            }
        }
    }

    /// `touch`: sets a new exptime on a live item. True = TOUCHED, false = NOT_FOUND.
    pub fn touch(&self, key: &[u8], exptime: i32, now: u32) -> bool {
        self.get_and_touch(key, exptime, now, |_| ()).0 == Lookup::Hit
    }

    /// `delete`: true = DELETED, false = NOT_FOUND.
    pub fn delete(&self, key: &[u8], now: u32) -> bool {
        let (hash, si) = self.hash(key);
        let mut sh = self.shard(si);
        match self.lookup(&mut sh, hash, key, now) {
            Err(_) => false,
            Ok(i) => {
                self.unlink_local(&mut sh, i, now);
                self.notify(&mut sh, hash, key);
                true
            }
        }
    }

    /// Takes a key away on behalf of a client: alone, the item goes; in a pair it becomes a
    /// tombstone with a new version, so the deletion wins over older states everywhere.
    fn unlink_local(&self, sh: &mut Shard, i: u32, now: u32) {
        let cur = sh.slot(i).map(|s| item::version(s.data())).unwrap_or(0);
        let version = if self.pair {
            self.version_after(cur)
        } else {
            0
        };
        self.unlink_versioned(sh, i, now, version);
    }

    /// [`Store::unlink_local`] with the tombstone's version chosen by the caller.
    pub(super) fn unlink_versioned(&self, sh: &mut Shard, i: u32, now: u32, version: u64) {
        if !self.pair {
            let freed = sh.remove(i);
            self.release(freed);
            return;
        }
        let Some(s) = sh.slot(i) else { return };
        let data = item::build(s.key(), &[], version, 0, 0, now);
        let new_cost = item::cost(&data);
        // A tombstone is never larger than the item it replaces.
        let Some(old_cost) = sh.replace(i, data) else {
            // No page number left for the tombstone (see `arena::MAX_PAGES`): the key
            // still goes, without the record that keeps an older peer state away.
            let freed = sh.remove(i);
            self.release(freed);
            return;
        };
        sh.mark_tombstone(i);
        // replace() counted a stored item; a deletion is not one.
        sh.c.total_items = sh.c.total_items.saturating_sub(1);
        self.release(old_cost.saturating_sub(new_cost));
    }

    /// Unconditionally unlinks a key (after a too-large or failed `set`, stale data must
    /// not survive). Not reported to the change sink: replication will send the key's
    /// state when the caller reports the failed write as a change, if it wants to.
    pub fn remove(&self, key: &[u8]) -> bool {
        let (hash, si) = self.hash(key);
        let mut sh = self.shard(si);
        match sh.find(hash, key) {
            None => false,
            Some(i) if sh.slot(i).is_some_and(|s| s.is_tombstone()) => false,
            Some(i) => {
                let now = (self.hlc.now_ms() / 1000) as u32;
                self.unlink_local(&mut sh, i, now);
                if self.pair {
                    self.notify(&mut sh, hash, key);
                }
                true
            }
        }
    }

    /// A storage command with memcached's do_store_item semantics.
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &self,
        cmd: StoreCmd,
        key: &[u8],
        flags: u32,
        exptime: i32,
        value: &[u8],
        cas_unique: u64,
        now: u32,
    ) -> StoreOutcome {
        let opts = WriteOpts::default();
        self.store_with(cmd, key, flags, exptime, value, cas_unique, now, &opts)
            .0
    }

    /// [`Store::store`] with the meta-command refinements in `opts`. Also returns the CAS
    /// the stored item shows (0 when nothing was stored or CAS is off).
    #[allow(clippy::too_many_arguments)]
    pub fn store_with(
        &self,
        cmd: StoreCmd,
        key: &[u8],
        flags: u32,
        exptime: i32,
        value: &[u8],
        cas_unique: u64,
        now: u32,
        opts: &WriteOpts,
    ) -> (StoreOutcome, u64) {
        let max = self.cfg.item_size_max;
        let cas_on = self.cfg.cas_enabled;
        if key.len() > item::MAX_KEY
            || item::memcached_item_size(key.len(), value.len(), flags, cas_on) > max
        {
            if cmd == StoreCmd::Set {
                self.remove(key);
            }
            return (StoreOutcome::TooLarge, 0);
        }
        let exp = realtime(i64::from(exptime), now);
        let (hash, si) = self.hash(key);
        let w = Write {
            cmd,
            key,
            hash,
            flags,
            exp,
            value,
            cas_unique,
        };
        let outcome = self.with_room(
            si,
            (StoreOutcome::OutOfMemory, 0),
            |sh, credit| self.store_locked(sh, &w, opts, now, credit),
            now,
        );
        if outcome.0 == StoreOutcome::OutOfMemory && cmd == StoreCmd::Set {
            self.remove(key);
        }
        outcome
    }

    fn shown_cas(&self, version: u64) -> u64 {
        if self.cfg.cas_enabled {
            version
        } else {
            0
        }
    }

    fn store_locked(
        &self,
        sh: &mut Shard,
        w: &Write,
        opts: &WriteOpts,
        now: u32,
        credit: &mut usize,
    ) -> Step<(StoreOutcome, u64)> {
        let (cmd, key, hash) = (w.cmd, w.key, w.hash);
        let not = |o| Step::Done((o, 0));
        let found = self.lookup(sh, hash, key, now).ok();
        // What is left under the key after a miss is a tombstone: a write takes its slot.
        let tomb = if found.is_none() {
            sh.find(hash, key)
        } else {
            None
        };
        let cur_cas = found
            .and_then(|i| sh.slot(i))
            .map(|s| self.shown_cas(item::version(s.data())))
            .unwrap_or(0);
        let mut bits = if opts.key_binary { BIT_KEY_BINARY } else { 0 };
        let mut exp = w.exp;
        let new_data = match (cmd, found) {
            (StoreCmd::Add, Some(i)) => {
                // add on an existing key only promotes it (memcached's do_item_update).
                if let Some(mut s) = sh.slot_mut(i) {
                    item::set_time(s.data_mut(), now);
                }
                sh.bump(i);
                return not(StoreOutcome::NotStored);
            }
            (StoreCmd::Cas, None) => return not(StoreOutcome::NotFound),
            (StoreCmd::Replace | StoreCmd::Append | StoreCmd::Prepend, None) => {
                return not(StoreOutcome::NotStored)
            }
            (StoreCmd::Cas, Some(i)) => {
                // Under -C memcached's items carry CAS 0, so no cas can ever match.
                let matched = self.cfg.cas_enabled && w.cas_unique != 0 && w.cas_unique == cur_cas;
                if !matched {
                    if !(opts.stale_ok && w.cas_unique != 0 && w.cas_unique < cur_cas) {
                        return not(StoreOutcome::Exists);
                    }
                    // A stale write (meta `I`): stored, but marked stale, keeping the
                    // item's TTL and any win already handed out.
                    if let Some(s) = sh.slot(i) {
                        exp = item::exptime(s.data());
                        bits |= BIT_STALE | (s.bits() & BIT_WIN_SENT);
                    }
                }
                None
            }
            (StoreCmd::Append | StoreCmd::Prepend, Some(i)) => {
                if opts.compare != 0 && opts.compare != cur_cas {
                    return not(StoreOutcome::Exists);
                }
                let Some(s) = sh.slot(i) else {
                    return not(StoreOutcome::NotStored);
                };
                let old = s.value();
                let oflags = item::flags(s.data());
                let size = item::memcached_item_size(
                    key.len(),
                    old.len() + w.value.len(),
                    oflags,
                    self.cfg.cas_enabled,
                );
                if size > self.cfg.item_size_max {
                    // memcached's allocation of the combined item fails: NOT_STORED.
                    return not(StoreOutcome::NotStored);
                }
                let parts: [&[u8]; 2] = if cmd == StoreCmd::Append {
                    [old, w.value]
                } else {
                    [w.value, old]
                };
                Some(item::build(
                    key,
                    &parts,
                    0,
                    item::exptime(s.data()),
                    oflags,
                    now,
                ))
            }
            (StoreCmd::Set | StoreCmd::Replace, _) | (StoreCmd::Add, None) => None,
        };
        let parts = [w.value];
        // The item's value is the request's bytes as they came (not an append or prepend).
        let verbatim = new_data.is_none();
        let mut data: NewItem = match new_data {
            Some(d) => d.into(),
            None => Draft {
                key,
                parts: &parts,
                version: 0,
                exptime: exp,
                flags: w.flags,
                time: now,
            }
            .into(),
        };
        let slot = found.or(tomb);
        let origin = match opts.version {
            None => Origin::Local,
            Some(v) => {
                let cur = slot
                    .and_then(|i| sh.slot(i))
                    .map(|s| item::version(s.data()))
                    .unwrap_or(0);
                // A chosen version must order after the key's state, or the pair could
                // not agree on which write is the last.
                if v <= cur {
                    return not(StoreOutcome::Exists);
                }
                data.set_version(v);
                Origin::LocalVersioned
            }
        };
        self.link(sh, key, hash, slot, data, now, credit, origin)
            .map_done(|at| {
                let Some(i) = at else {
                    return (StoreOutcome::OutOfMemory, 0);
                };
                let version = self.set_bits_of(sh, i, bits);
                if verbatim && sh.has_notes() {
                    // Now, while the value is at hand: its item was streamed to memory.
                    self.report_sourced(sh, Some((i, w.value)));
                }
                (StoreOutcome::Stored, self.shown_cas(version))
            })
    }

    /// Sets the meta bits of the state just linked into slot `i`; returns its version.
    pub(super) fn set_bits_of(&self, sh: &mut Shard, i: u32, bits: u8) -> u64 {
        match sh.slot_mut(i) {
            Some(mut s) => {
                if bits != 0 {
                    s.set_bits(s.bits() | bits);
                }
                item::version(s.data())
            }
            None => 0,
        }
    }

    /// Makes this thread's writes share one clock reading until the guard drops (see
    /// `Hlc::hold`): for a batch of requests that had all arrived before the call.
    pub fn hold_clock(&self) -> super::hlc::HeldReading {
        self.hlc.hold()
    }

    /// A version for a local write to a key whose current version (item or tombstone) is
    /// `cur`: the clock's next one, or just past `cur` when a client-chosen version put the
    /// key ahead of the clock. Every write thus orders after the state it replaces.
    pub(super) fn version_after(&self, cur: u64) -> u64 {
        let v = self.hlc.next();
        if v > cur {
            v
        } else {
            hlc::bump_past(cur, self.hlc.node())
        }
    }

    /// Installs `data` for `key`, replacing slot `old` if given. `origin` says where the
    /// version comes from and whether replication hears of the change.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn link<'a>(
        &self,
        sh: &mut Shard,
        key: &[u8],
        hash: u64,
        old: Option<u32>,
        data: impl Into<NewItem<'a>>,
        now: u32,
        credit: &mut usize,
        origin: Origin,
    ) -> Step<Option<u32>> {
        let mut data = data.into();
        let new_cost = data.cost();
        let old_cost = old.and_then(|i| sh.slot(i)).map(|s| s.cost()).unwrap_or(0);
        let old_version = old
            .and_then(|i| sh.slot(i))
            .map(|s| item::version(s.data()))
            .unwrap_or(0);
        let protect = old.unwrap_or(NIL);
        if new_cost > old_cost && !self.reserve_in(sh, new_cost - old_cost, now, protect, credit) {
            return Step::NeedRoom(new_cost - old_cost);
        }
        if old.is_none() && !sh.has_free_slot() && !self.evict_one(sh, now, NIL) {
            self.release(new_cost);
            return Step::Done(None);
        }
        if origin == Origin::Local {
            data.set_version(self.version_after(old_version));
        }
        let at = match old {
            Some(i) => {
                if sh.replace(i, data).is_none() {
                    // No page number left (see `arena::MAX_PAGES`): give back the room
                    // reserved for the growth and fail like an out-of-memory store.
                    self.release(new_cost.saturating_sub(old_cost));
                    return Step::Done(None);
                }
                if old_cost > new_cost {
                    self.release(old_cost - new_cost);
                }
                i
            }
            None => match sh.insert(hash, data, key.len()) {
                Some(i) => i,
                None => {
                    self.release(new_cost);
                    return Step::Done(None);
                }
            },
        };
        if origin != Origin::Remote {
            self.notify_at(sh, hash, key, at);
        }
        Step::Done(Some(at))
    }

    /// `incr`/`decr` with memcached's do_add_delta: incr wraps modulo 2^64, decr stops at
    /// 0; a shorter result is written in place and padded with spaces (memcached keeps the
    /// length), a longer one makes a new item. Flags and exptime are kept; the version is
    /// new either way.
    pub fn arith(&self, key: &[u8], incr: bool, delta: u64, now: u32) -> ArithOutcome {
        // The meta path without its options is exactly incr/decr: one implementation.
        match self.meta_arith(key, incr, delta, &super::ArithOpts::default(), now) {
            super::MetaArith::Value { value, .. } => ArithOutcome::Value(value),
            super::MetaArith::NonNumeric => ArithOutcome::NonNumeric,
            super::MetaArith::OutOfMemory => ArithOutcome::OutOfMemory,
            // Exists needs a compare value or a chosen version, which plain incr lacks.
            super::MetaArith::NotFound | super::MetaArith::Exists => ArithOutcome::NotFound,
        }
    }

    /// `flush_all [delay]` with memcached 1.6's rules (process_flush_all_command).
    pub fn flush_all(&self, delay: i32, now: u32) {
        let new_oldest = if delay > 0 {
            let t = realtime(i64::from(delay), now);
            // An absolute time at/before process start maps to memcached's relative 1,
            // which leaves oldest_live 0: no flush at all.
            if i64::from(delay) > item::REALTIME_MAXDELTA && t <= self.started {
                1
            } else {
                t
            }
        } else {
            now
        };
        if self.cfg.cas_enabled {
            let live = new_oldest.saturating_sub(1);
            if live <= now {
                self.oldest_version
                    .store(self.hlc.next(), Ordering::Release);
            }
            self.oldest_live.store(live, Ordering::Release);
        } else {
            self.oldest_live.store(new_oldest, Ordering::Release);
        }
        if let Some(s) = &self.sink {
            s.flushed(self.flush_state());
        }
    }

    /// Applies flush watermarks received from a peer: each only ever moves forward.
    pub fn apply_flush_state(&self, st: FlushState) {
        self.oldest_version
            .fetch_max(st.oldest_version, Ordering::AcqRel);
        self.oldest_live.fetch_max(st.oldest_live, Ordering::AcqRel);
        self.hlc.observe(st.oldest_version);
    }

    /// A bounded background sweep: checks up to [`REAP_BATCH`] slots, continuing where the
    /// previous call stopped, and drops expired and flushed items. Returns how many it
    /// dropped.
    pub fn reap(&self, now: u32) -> usize {
        let mut cursor = self.reap_cursor.lock().unwrap_or_else(|e| e.into_inner());
        let flush = self.flush_view();
        // Items are reaped a few seconds after they die, so a client polling for an item
        // sees it expire on access (get_expired) as with memcached, whose crawler is not
        // this quick; memory is not at stake, as eviction takes dead items first anyway.
        let now = now.saturating_sub(REAP_GRACE);
        let mut budget = REAP_BATCH;
        let mut dropped = 0;
        let mut shards_seen = 0;
        while budget > 0 && shards_seen <= self.shards.len() {
            let (si, mut pos) = *cursor;
            let mut sh = self.shard(si);
            let end = sh.slot_count();
            while budget > 0 && (pos as usize) < end {
                budget -= 1;
                let horizon = self.tomb_horizon.load(Ordering::Relaxed);
                let old_tomb = sh.slot(pos).is_some_and(|s| {
                    s.live() && s.is_tombstone() && item::time(s.data()) < horizon
                });
                if old_tomb {
                    let freed = sh.remove(pos);
                    self.release(freed);
                    pos += 1;
                    continue;
                }
                let dead = sh
                    .slot(pos)
                    .filter(|s| s.live() && !s.is_tombstone())
                    .map(|s| (shard::dead(s, now, &flush), s.bits()));
                if let Some((d, bits)) = dead {
                    sh.c.crawler_items_checked += 1;
                    if d.is_some() {
                        let freed = sh.remove(pos);
                        self.release(freed);
                        sh.c.crawler_reclaimed += 1;
                        if bits & BIT_FETCHED == 0 {
                            sh.c.expired_unfetched += 1;
                        }
                        dropped += 1;
                    }
                }
                pos += 1;
            }
            if (pos as usize) >= end {
                sh.maybe_shrink();
                *cursor = ((si + 1) & self.shard_mask, 0);
                shards_seen += 1;
            } else {
                *cursor = (si, pos);
            }
        }
        dropped
    }

    /// Changes the memory bound (`cache_memlimit`). When lowered below what is in use,
    /// items are evicted (LRU, one shard at a time) until the store fits, if evictions are
    /// on; with `-M` only expired items are reclaimed and later stores fail until it fits.
    pub fn set_memory_limit(&self, bytes: usize, now: u32) {
        self.limit.store(bytes, Ordering::Release);
        let n = self.shards.len();
        let mut idle = 0;
        let mut k = self.evict_cursor.fetch_add(1, Ordering::Relaxed);
        while self.used.load(Ordering::Acquire) > bytes && idle < n {
            let mut sh = self.shard(k);
            if self.evict_one(&mut sh, now, NIL) {
                idle = 0;
            } else {
                idle += 1;
            }
            k = k.wrapping_add(1);
        }
    }

    /// Visits up to `max` live items of shard `shard` from arena position `cursor`, without
    /// changing their LRU position. Returns the cursor to continue from, or None when the
    /// shard is done. The shard stays locked for the duration of one call.
    pub fn visit(
        &self,
        shard: usize,
        cursor: u32,
        max: usize,
        now: u32,
        mut f: impl FnMut(&ItemRef),
    ) -> Option<u32> {
        if shard >= self.shards.len() {
            return None;
        }
        let flush = self.flush_view();
        let sh = self.shard(shard);
        let end = sh.slot_count();
        let mut pos = cursor as usize;
        let mut seen = 0;
        while pos < end && seen < max {
            if let Some(s) = sh.slot(pos as u32) {
                if s.live() && !s.is_tombstone() && shard::dead(s, now, &flush).is_none() {
                    f(&self.item_ref(s));
                    seen += 1;
                }
            }
            pos += 1;
        }
        if pos < end {
            Some(pos as u32)
        } else {
            None
        }
    }

    /// Counters and gauges summed over the shards (one shard locked at a time).
    pub fn stats(&self, now: u32) -> StoreStats {
        let mut st = StoreStats {
            memory_limit: self.limit.load(Ordering::Acquire) as u64,
            ..StoreStats::default()
        };
        let mut buckets = 0u64;
        for m in self.shards.iter() {
            let sh = lock(m);
            let c = &sh.c;
            st.curr_items += sh.items - sh.tombstones;
            st.tombstones += sh.tombstones;
            st.bytes += sh.bytes as u64;
            st.mem_requested += sh.requested;
            st.total_items += c.total_items;
            st.evictions += c.evictions;
            st.reclaimed += c.reclaimed;
            st.expired_unfetched += c.expired_unfetched;
            st.evicted_unfetched += c.evicted_unfetched;
            st.evicted_active += c.evicted_active;
            st.crawler_reclaimed += c.crawler_reclaimed;
            st.crawler_items_checked += c.crawler_items_checked;
            st.outofmemory += c.outofmemory;
            st.get_expired += c.get_expired;
            st.get_flushed += c.get_flushed;
            st.evicted_nonzero += c.evicted_nonzero;
            st.hash_bytes += sh.index_bytes() as u64;
            buckets += sh.buckets() as u64;
            st.evicted_time = st.evicted_time.max(c.evicted_time);
            if let Some(s) = sh.slot(sh.tail()) {
                st.oldest_item_age = st
                    .oldest_item_age
                    .max(now.saturating_sub(item::time(s.data())));
            }
        }
        st.hash_power_level = 64 - buckets.max(1).leading_zeros() - 1;
        st
    }

    /// `stats reset`: zeroes the counters (not the gauges such as items and bytes).
    pub fn reset_stats(&self) {
        for m in self.shards.iter() {
            lock(m).c = Default::default();
        }
    }
}

impl<T> Step<T> {
    pub(super) fn map_done<U>(self, f: impl FnOnce(T) -> U) -> Step<U> {
        match self {
            Step::Done(t) => Step::Done(f(t)),
            Step::NeedRoom(b) => Step::NeedRoom(b),
        }
    }
}
