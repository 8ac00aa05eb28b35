//! The sharded store and its public operations.

use super::StoreCmd;

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
}

pub struct Store {
    _cfg: StoreConfig,
}

impl Store {
    pub fn new(cfg: StoreConfig) -> Store {
        Store { _cfg: cfg }
    }

    pub fn get<R>(
        &self,
        _key: &[u8],
        _now: u32,
        _f: impl FnOnce(&ItemRef) -> R,
    ) -> (Lookup, Option<R>) {
        (Lookup::Miss, None)
    }

    pub fn get_and_touch<R>(
        &self,
        _key: &[u8],
        _exptime: i32,
        _now: u32,
        _f: impl FnOnce(&ItemRef) -> R,
    ) -> (Lookup, Option<R>) {
        (Lookup::Miss, None)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &self,
        _cmd: StoreCmd,
        _key: &[u8],
        _flags: u32,
        _exptime: i32,
        _value: &[u8],
        _cas_unique: u64,
        _now: u32,
    ) -> StoreOutcome {
        StoreOutcome::NotStored
    }
}
