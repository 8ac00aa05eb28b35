//! Wire formats as pure functions over byte slices: the classic text protocol's request
//! parser and the response writers. Nothing here touches a socket.

pub mod meta;
pub mod repl;
pub mod response;
pub mod text;

pub use crate::storage::StoreCmd;
pub use meta::{MetaCmd, MetaFlags, MetaRequest};

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
    /// `get`/`gets`/`gat`/`gats`/`bget` whose key list holds a key longer than 250 bytes.
    /// memcached has already looked up (and, for gat/gats, touched) the keys before it,
    /// counting them in `cmd_get`/`get_misses`/`cmd_touch`/…, when it meets the long key;
    /// it then drops the partial response. So: process `keys` (the valid keys before the
    /// long one, possibly empty) for their side effects and stats only, discard their
    /// output, and reply `CLIENT_ERROR bad command line format`. Never suppressed.
    GetKeyTooLong {
        keys: &'a [u8],
        cas: bool,
        touch: Option<i32>,
    },
    /// A storage command whose data block arrived complete but did not end in `\r\n`.
    /// memcached counts it in `cmd_set` (it had allocated the item) and replies
    /// `CLIENT_ERROR bad data chunk` unless noreply. Nothing is stored. `consumed` covers
    /// the line and the whole `<bytes>+2` block; the bytes after it are the next request.
    BadDataChunk {
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
    /// `flush_all [delay] [noreply]`; `delay` is 0 when absent. With `-F` the server
    /// replies `CLIENT_ERROR flush_all not allowed` instead (still counting `cmd_flush`).
    FlushAll {
        delay: i32,
        noreply: bool,
    },
    /// `flush_all` whose delay token is not a number. memcached counts `cmd_flush` and
    /// checks `-F` before parsing the delay, so the server replies
    /// `CLIENT_ERROR flush_all not allowed` under `-F`, otherwise
    /// `CLIENT_ERROR invalid exptime argument`; both suppressed by noreply.
    FlushAllInvalid {
        noreply: bool,
    },
    /// `stats [args…]`: the raw argument text after `stats`, trimmed of spaces.
    Stats {
        args: &'a [u8],
    },
    Version,
    /// `verbosity <level> [noreply]`: reply `OK`. `level` is the parsed value (memcached
    /// clamps it to 2 when applying it).
    Verbosity {
        level: u32,
        noreply: bool,
    },
    Quit,
    /// `shutdown` or `shutdown graceful`. Without `-A` memcached 1.6.18 replies
    /// `ERROR: shutdown not enabled` (sic: `ERROR:`, not `SERVER_ERROR:`).
    Shutdown {
        graceful: bool,
    },
    /// `shutdown` with any other arguments. memcached checks `-A` first: without it the
    /// reply is `ERROR: shutdown not enabled`, with it `CLIENT_ERROR invalid shutdown mode`.
    ShutdownInvalid,
    /// `cache_memlimit <MB> [noreply]` with 8 <= MB <= 1_000_000_000 (the parser answers
    /// the out-of-range and non-numeric forms itself). Reply `OK` after adjusting the
    /// limit to `megabytes * 1024 * 1024` bytes, or
    /// `MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust`.
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
    /// `mg`/`ms`/`md`/`ma` that parsed cleanly (errors come as `Reply`/`ReplySwallow`).
    Meta(MetaRequest<'a>),
    /// `me <key> [b]`: memcached's item debug line. `key` is still base64 when `base64`.
    MetaDebug {
        key: &'a [u8],
        base64: bool,
    },
    /// An error a meta set reports once its data length is known: reply `msg` (never
    /// suppressed), then discard `swallow` bytes (the data block and its `\r\n`).
    ReplySwallow {
        msg: &'static str,
        swallow: usize,
    },
    /// A meta set whose item would exceed `-I`: like `StoreTooLarge` for `set` (the old
    /// value goes, whatever the mode), never suppressed. `key` is still base64 when `base64`.
    MetaTooLarge {
        key: &'a [u8],
        base64: bool,
        swallow: usize,
    },
    /// `watch [...]`: log streaming is not implemented; the reply depends on `-W`.
    Watch,
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
