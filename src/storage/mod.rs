//! The item store: sharded hash tables of versioned items, memory accounting against `-m`,
//! LRU eviction, expiry and flush rules. Pure data structures: no sockets, no threads.

mod arena;
mod counter;
mod heap;
pub mod hlc;
mod index;
mod item;
mod mapped;
mod meta;
mod repl;
mod shard;
mod store;
#[cfg(test)]
mod tests;

pub use counter::encoding_valid as counter_encoding_valid;
pub use item::{memcached_item_size, realtime, REALTIME_MAXDELTA};
pub use meta::{ArithOpts, DebugView, DeleteOpts, DeleteOutcome, GetOpts, GetView, MetaArith};
pub use repl::{Applied, CopyCursor, RemoteState, StateRef};
pub use store::{
    ArithOutcome, FlushState, ItemRef, Lookup, Store, StoreConfig, StoreOutcome, StoreStats,
    WriteOpts, PREFETCH_MAX, REAP_BATCH,
};

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

/// Hears of every successful mutation, with the key's state once the change is complete
/// (None if the key is gone), so replication can send it. Called while the key's shard is
/// locked: it must not block and must not call back into the store.
pub trait ChangeSink: Send + Sync {
    fn changed(&self, key: &[u8], state: Option<&StateRef>);

    /// A `flush_all` changed the flush watermarks (called without any shard lock).
    fn flushed(&self, _state: FlushState) {}

    /// Lets the calling thread's next changes be held back and handed over together at
    /// `close_batch` (see `Store::batch`). False when the sink does not batch, or the
    /// thread has a batch open already.
    fn open_batch(&self) -> bool {
        false
    }

    /// Hands over what the calling thread held back since `open_batch`.
    fn close_batch(&self) {}
}
