//! repcached: a memcached-compatible cache server that runs alone or as a replicating pair.

pub mod clock;
pub mod config;
pub mod daemon;
pub mod netio;
pub mod protocol;
pub mod replication;
pub mod server;
pub mod stats;
pub mod storage;

/// The version reported by `version`, `stats` and `-V`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `version` and `stats` report: the memcached protocol level this server speaks,
/// then this server's own version, so clients that parse `major.minor.patch` see 1.6.
pub const PROTOCOL_VERSION: &str = concat!("1.6.39-repcached-", env!("CARGO_PKG_VERSION"));
