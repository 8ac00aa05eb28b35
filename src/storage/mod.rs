//! The item store: sharded hash tables of versioned items, memory accounting against `-m`,
//! LRU eviction, expiry and flush rules. Pure data structures: no sockets, no threads.

pub mod hlc;
mod store;

pub use store::{ArithOutcome, ItemRef, Lookup, Store, StoreConfig, StoreOutcome, StoreStats};

/// Which storage command a write carries (memcached's `NREAD_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreCmd {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
}

/// Receives the key of every successful mutation, so replication can send the key's
/// current state later. Called while the key's shard is locked: it must not block and
/// must not call back into the store.
pub trait ChangeSink: Send + Sync {
    fn changed(&self, key: &[u8]);
}
