//! Executes one parsed request against the store and appends memcached's reply.

use crate::protocol::response::{write_line, write_u64, write_value};
use crate::protocol::text::keys;
use crate::protocol::Request;
use crate::stats::{bump, ThreadStats};
use crate::storage::{ArithOutcome, StoreCmd, StoreOutcome};

use super::shared::Shared;
use super::stats_cmd;

/// What the connection must do after the reply is queued.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Write what is pending, then close.
    Close,
    /// Discard this many input bytes (the data block of a refused value).
    Swallow(usize),
}

/// Everything a request may touch, borrowed for one batch of requests.
pub struct Ctx<'a> {
    pub shared: &'a Shared,
    pub stats: &'a ThreadStats,
    pub now: u32,
    /// The fd of the connection, for `stats conns`.
    pub fd: i32,
}

fn reply(out: &mut Vec<u8>, noreply: bool, msg: &[u8]) {
    if !noreply {
        write_line(out, msg);
    }
}

pub fn execute(ctx: &Ctx, req: &Request, out: &mut Vec<u8>) -> After {
    let store = &*ctx.shared.store;
    let st = ctx.stats;
    match *req {
        Request::Get {
            keys: list,
            cas,
            touch,
        } => {
            get(ctx, list, cas, touch, out);
            out.extend_from_slice(b"END\r\n");
            After::Continue
        }
        Request::GetKeyTooLong {
            keys: list,
            cas,
            touch,
        } => {
            // memcached has already looked up (and for gat, touched) the keys before the
            // bad one when it notices it; their effects and counters stay, the reply goes.
            let mut discard = Vec::new();
            get(ctx, list, cas, touch, &mut discard);
            write_line(out, b"CLIENT_ERROR bad command line format");
            After::Continue
        }
        Request::BadDataChunk { noreply } => {
            bump(&st.cmd_set, 1);
            reply(out, noreply, b"CLIENT_ERROR bad data chunk");
            After::Continue
        }
        Request::FlushAllInvalid { noreply } => {
            bump(&st.cmd_flush, 1);
            if ctx.shared.cfg.flush_enabled {
                reply(out, noreply, b"CLIENT_ERROR invalid exptime argument");
            } else {
                reply(out, noreply, b"CLIENT_ERROR flush_all not allowed");
            }
            After::Continue
        }
        Request::ShutdownInvalid => {
            if ctx.shared.cfg.enable_shutdown {
                write_line(out, b"CLIENT_ERROR invalid shutdown mode");
            } else {
                write_line(out, b"ERROR: shutdown not enabled");
            }
            After::Continue
        }
        Request::Store {
            cmd,
            key,
            flags,
            exptime,
            value,
            cas_unique,
            noreply,
        } => {
            bump(&st.cmd_set, 1);
            let outcome = store.store(cmd, key, flags, exptime, value, cas_unique, ctx.now);
            count_cas(st, cmd, outcome);
            let msg: &[u8] = match outcome {
                StoreOutcome::Stored => b"STORED",
                StoreOutcome::NotStored => b"NOT_STORED",
                StoreOutcome::Exists => b"EXISTS",
                StoreOutcome::NotFound => b"NOT_FOUND",
                StoreOutcome::TooLarge => {
                    bump(&st.store_too_large, 1);
                    b"SERVER_ERROR object too large for cache"
                }
                StoreOutcome::OutOfMemory => {
                    bump(&st.store_no_memory, 1);
                    b"SERVER_ERROR out of memory storing object"
                }
            };
            reply(out, noreply, msg);
            After::Continue
        }
        Request::StoreTooLarge {
            cmd,
            key,
            noreply,
            swallow,
        } => {
            bump(&st.store_too_large, 1);
            // memcached drops the old value of a refused `set` so a stale copy cannot be
            // read back as if the write had not happened.
            if cmd == StoreCmd::Set {
                store.remove(key);
            }
            reply(out, noreply, b"SERVER_ERROR object too large for cache");
            After::Swallow(swallow)
        }
        Request::Delete { key, noreply } => {
            if store.delete(key, ctx.now) {
                bump(&st.delete_hits, 1);
                reply(out, noreply, b"DELETED");
            } else {
                bump(&st.delete_misses, 1);
                reply(out, noreply, b"NOT_FOUND");
            }
            After::Continue
        }
        Request::Arith {
            incr,
            key,
            delta,
            noreply,
        } => {
            match store.arith(key, incr, delta, ctx.now) {
                ArithOutcome::Value(v) => {
                    bump(if incr { &st.incr_hits } else { &st.decr_hits }, 1);
                    if !noreply {
                        write_u64(out, v);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                ArithOutcome::NotFound => {
                    bump(
                        if incr {
                            &st.incr_misses
                        } else {
                            &st.decr_misses
                        },
                        1,
                    );
                    reply(out, noreply, b"NOT_FOUND");
                }
                ArithOutcome::NonNumeric => reply(
                    out,
                    noreply,
                    b"CLIENT_ERROR cannot increment or decrement non-numeric value",
                ),
                ArithOutcome::OutOfMemory => reply(out, noreply, b"SERVER_ERROR out of memory"),
            }
            After::Continue
        }
        Request::Touch {
            key,
            exptime,
            noreply,
        } => {
            bump(&st.cmd_touch, 1);
            if store.touch(key, exptime, ctx.now) {
                bump(&st.touch_hits, 1);
                reply(out, noreply, b"TOUCHED");
            } else {
                bump(&st.touch_misses, 1);
                reply(out, noreply, b"NOT_FOUND");
            }
            After::Continue
        }
        Request::FlushAll { delay, noreply } => {
            bump(&st.cmd_flush, 1);
            if !ctx.shared.cfg.flush_enabled {
                reply(out, noreply, b"CLIENT_ERROR flush_all not allowed");
            } else {
                store.flush_all(delay, ctx.now);
                reply(out, noreply, b"OK");
            }
            After::Continue
        }
        Request::Stats { args } => {
            stats_cmd::stats(ctx, args, out);
            After::Continue
        }
        Request::Version => {
            out.extend_from_slice(b"VERSION ");
            write_line(out, crate::PROTOCOL_VERSION.as_bytes());
            After::Continue
        }
        Request::Verbosity { level, noreply } => {
            ctx.shared.set_verbosity(level);
            reply(out, noreply, b"OK");
            After::Continue
        }
        Request::Quit => After::Close,
        Request::Shutdown { graceful } => {
            if !ctx.shared.cfg.enable_shutdown {
                write_line(out, b"ERROR: shutdown not enabled");
                return After::Continue;
            }
            log::info!(
                "shutdown{} requested by a client",
                if graceful { " graceful" } else { "" }
            );
            ctx.shared.request_shutdown();
            After::Close
        }
        Request::CacheMemlimit { megabytes, noreply } => {
            if megabytes < 8 {
                reply(
                    out,
                    noreply,
                    b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m",
                );
            } else if megabytes > 1_000_000_000 {
                reply(
                    out,
                    noreply,
                    b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes",
                );
            } else {
                store.set_memory_limit((megabytes as usize).saturating_mul(1024 * 1024), ctx.now);
                reply(out, noreply, b"OK");
            }
            After::Continue
        }
        Request::Reply { msg, noreply } => {
            reply(out, noreply, msg.as_bytes());
            After::Continue
        }
        Request::Meta(ref m) => {
            super::meta::execute(ctx, m, out);
            After::Continue
        }
        Request::MetaDebug { key, base64 } => {
            super::meta::debug(ctx, key, base64, out);
            After::Continue
        }
        Request::ReplySwallow { msg, swallow } => {
            write_line(out, msg.as_bytes());
            After::Swallow(swallow)
        }
        Request::MetaTooLarge {
            key,
            base64,
            swallow,
        } => {
            bump(&st.store_too_large, 1);
            let mut scratch = [0u8; crate::protocol::text::KEY_MAX_LENGTH];
            let key = if base64 {
                crate::protocol::meta::decode_key(key, &mut scratch).unwrap_or_default()
            } else {
                key
            };
            // Whatever the mode, memcached drops the old value of a refused meta set.
            store.remove(key);
            write_line(out, b"SERVER_ERROR object too large for cache");
            After::Swallow(swallow)
        }
        Request::Watch => {
            // With -W memcached refuses; without it, log streaming is not implemented here
            // and the command is answered as unknown.
            if ctx.shared.cfg.watch_enabled {
                write_line(out, b"ERROR");
            } else {
                write_line(out, b"CLIENT_ERROR watch commands not allowed");
            }
            After::Continue
        }
        Request::Close => After::Close,
    }
}

/// Looks up every key of a get/gets/gat/gats and appends a VALUE block per hit.
fn get(ctx: &Ctx, list: &[u8], cas: bool, touch: Option<i32>, out: &mut Vec<u8>) {
    let store = &*ctx.shared.store;
    let st = ctx.stats;
    for key in keys(list) {
        let emit = |it: &crate::storage::ItemRef| {
            write_value(out, key, it.flags, it.value, cas.then_some(it.cas));
        };
        let (_, hit) = match touch {
            None => store.get(key, ctx.now, emit),
            Some(exp) => store.get_and_touch(key, exp, ctx.now, emit),
        };
        // memcached counts gat/gats as touches only.
        count_lookup(st, touch.is_some(), hit.is_some());
    }
}

/// memcached's counters for one key looked up by a get (`cmd_get`, hits, misses) or, when
/// the lookup also set a new TTL, by a touch (`cmd_touch`, touch hits and misses).
pub(super) fn count_lookup(st: &ThreadStats, touched: bool, hit: bool) {
    match (touched, hit) {
        (false, true) => {
            bump(&st.cmd_get, 1);
            bump(&st.get_hits, 1);
        }
        (false, false) => {
            bump(&st.cmd_get, 1);
            bump(&st.get_misses, 1);
        }
        (true, true) => {
            bump(&st.cmd_touch, 1);
            bump(&st.touch_hits, 1);
        }
        (true, false) => {
            bump(&st.cmd_touch, 1);
            bump(&st.touch_misses, 1);
        }
    }
}

/// memcached's CAS counters for a storage command that compared a CAS value.
pub(super) fn count_cas(st: &ThreadStats, cmd: StoreCmd, outcome: StoreOutcome) {
    if cmd != StoreCmd::Cas {
        return;
    }
    match outcome {
        StoreOutcome::Stored => bump(&st.cas_hits, 1),
        StoreOutcome::Exists => bump(&st.cas_badval, 1),
        StoreOutcome::NotFound => bump(&st.cas_misses, 1),
        _ => {}
    }
}
