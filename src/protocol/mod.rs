//! Wire formats as pure functions over byte slices: the classic text protocol's request
//! parser and the response writers. Nothing here touches a socket.

pub mod repl;
pub mod response;
pub mod text;

pub use crate::storage::StoreCmd;

/// A request as the classic text parser understood it. Slices borrow from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `get`/`gets`/`gat`/`gats`/`bget`. `keys` is the raw, space-separated key list,
    /// already validated (every key 1..=250 bytes); iterate it with [`text::keys`].
    Get {
        keys: &'a [u8],
        cas: bool,
        /// Raw exptime for gat/gats (memcached's signed 32-bit value).
        touch: Option<i32>,
    },
    /// A storage command whose data block arrived complete and ended in `\r\n`.
    Store {
        cmd: StoreCmd,
        key: &'a [u8],
        flags: u32,
        exptime: i32,
        /// The data block without its trailing `\r\n`.
        value: &'a [u8],
        /// The `cas unique` token; 0 for commands other than `cas`.
        cas_unique: u64,
        noreply: bool,
    },
    /// A storage command whose item would exceed `-I`: reply
    /// `SERVER_ERROR object too large for cache` (unless noreply), delete the key when
    /// `cmd` is `Set` (stale data must not survive), then discard `swallow` bytes.
    StoreTooLarge {
        cmd: StoreCmd,
        key: &'a [u8],
        noreply: bool,
        swallow: usize,
    },
    Delete {
        key: &'a [u8],
        noreply: bool,
    },
    Arith {
        incr: bool,
        key: &'a [u8],
        delta: u64,
        noreply: bool,
    },
    Touch {
        key: &'a [u8],
        exptime: i32,
        noreply: bool,
    },
    /// `flush_all [delay] [noreply]`; `delay` is 0 when absent.
    FlushAll {
        delay: i32,
        noreply: bool,
    },
    /// `stats [args…]`: the raw argument text after `stats`, trimmed of spaces.
    Stats {
        args: &'a [u8],
    },
    Version,
    Verbosity {
        level: u32,
        noreply: bool,
    },
    Quit,
    /// `shutdown [graceful]`.
    Shutdown {
        graceful: bool,
    },
    CacheMemlimit {
        megabytes: u64,
        noreply: bool,
    },
    /// A reply the parser decided on by itself (an error string or a fixed answer for a
    /// command this server accepts but has nothing to do for). `noreply` suppresses it.
    Reply {
        msg: &'static str,
        noreply: bool,
    },
    /// The connection must be closed without a reply (over-long line, `HTTP/` request).
    Close,
}

/// Limits the parser needs to answer like memcached without buffering an oversized value.
#[derive(Clone, Copy, Debug)]
pub struct ParseLimits {
    /// `-I`: the largest whole item (header + key + value) the server stores.
    pub item_size_max: usize,
    /// `-C` off: memcached counts 8 more header bytes per item when CAS is on.
    pub cas_enabled: bool,
}
