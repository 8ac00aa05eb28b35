//! repcached: a memcached-compatible cache server that runs alone or as a replicating pair.

pub mod config;
pub mod daemon;
pub mod protocol;
pub mod server;
pub mod stats;
pub mod storage;

/// The version reported by `version`, `stats` and `-V`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
