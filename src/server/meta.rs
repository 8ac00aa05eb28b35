//! Executes meta commands and writes memcached 1.6's meta replies: return flags in request
//! order, quiet mode, and memcached's counters for each command.

use crate::protocol::meta::{decode_key, encode_key, OPAQUE_TOO_LONG};
use crate::protocol::response::{write_i64, write_line, write_u64};
use crate::protocol::text::KEY_MAX_LENGTH;
use crate::protocol::{MetaCmd, MetaFlags, MetaRequest};
use crate::stats::bump;
use crate::storage::{
    memcached_item_size, realtime, ArithOpts, DeleteOpts, DeleteOutcome, GetOpts, MetaArith,
    StoreCmd, StoreOutcome, WriteOpts,
};

use super::exec::{count_cas, count_lookup, Ctx};

const NON_NUMERIC: &[u8] = b"CLIENT_ERROR cannot increment or decrement non-numeric value";

/// Runs one parsed meta request, appending its reply (if any) to `out`.
pub fn execute(ctx: &Ctx, m: &MetaRequest, out: &mut Vec<u8>) {
    let mut scratch = [0u8; KEY_MAX_LENGTH];
    let key = if m.flags.base64 {
        // The parser has decoded it once already; it cannot fail now.
        decode_key(m.key, &mut scratch).unwrap_or_default()
    } else {
        m.key
    };
    if key.is_empty() {
        write_line(out, b"CLIENT_ERROR bad command line format");
        return;
    }
    match m.cmd {
        MetaCmd::Get => get(ctx, m, key, out),
        MetaCmd::Set => set(ctx, m, key, out),
        MetaCmd::Delete => delete(ctx, m, key, out),
        MetaCmd::Arith => arith(ctx, m, key, out),
    }
}

/// ` k<key>`, base64-encoded with a ` b` after it for a binary key (memcached's META_KEY).
fn write_key(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    out.extend_from_slice(b" k");
    if binary {
        encode_key(key, out);
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

/// The `O` and `k` return flags, which every reply carries, hit or miss.
fn write_opaque_and_key(out: &mut Vec<u8>, m: &MetaRequest, key: &[u8]) {
    for tok in m.flag_tokens() {
        match tok.first() {
            Some(b'O') => {
                out.push(b' ');
                out.extend_from_slice(tok);
            }
            Some(b'k') => write_key(out, key, m.flags.base64),
            _ => {}
        }
    }
}

/// memcached prints a remaining TTL as `exptime - now` in unsigned 32-bit arithmetic.
fn write_ttl(out: &mut Vec<u8>, exptime: u32, now: u32) {
    if exptime == 0 {
        out.extend_from_slice(b"-1");
    } else {
        write_u64(out, u64::from(exptime.wrapping_sub(now)));
    }
}

/// The expiry a meta TTL token asks for (memcached's realtime(): negative is already
/// expired); 0 when the flag is absent.
fn ttl(t: Option<i32>, now: u32) -> u32 {
    t.map_or(0, |t| realtime(i64::from(t), now))
}

fn get(ctx: &Ctx, m: &MetaRequest, key: &[u8], out: &mut Vec<u8>) {
    let store = &*ctx.shared.store;
    let st = ctx.stats;
    let f: &MetaFlags = &m.flags;
    let now = ctx.now;
    let opts = GetOpts {
        no_update: f.no_update,
        touch: f.ttl.is_some(),
        vivify: f.vivify.is_some(),
        version: f.new_cas,
        key_binary: f.base64,
    };
    let (t_exp, n_exp, r_time) = (ttl(f.ttl, now), ttl(f.vivify, now), ttl(f.recache, now));
    let start = out.len();
    let (_, hit) = store.meta_get(key, &opts, now, |v| {
        let mut won = false;
        if f.value {
            out.extend_from_slice(b"VA ");
            write_u64(out, v.item.value.len() as u64);
        } else {
            out.extend_from_slice(b"HD");
        }
        for tok in m.flag_tokens() {
            let Some(&c) = tok.first() else { continue };
            match c {
                b'T' => v.exptime = t_exp,
                b'N' if v.created => {
                    v.exptime = n_exp;
                    won = true;
                }
                b'R' if !v.win_sent && !v.created && v.exptime != 0 && v.exptime < r_time => {
                    won = true;
                }
                b's' => {
                    out.extend_from_slice(b" s");
                    write_u64(out, v.item.value.len() as u64);
                }
                b't' => {
                    out.extend_from_slice(b" t");
                    write_ttl(out, v.exptime, now);
                }
                b'c' => {
                    out.extend_from_slice(b" c");
                    write_u64(out, v.item.cas);
                }
                b'f' => {
                    out.extend_from_slice(b" f");
                    write_u64(out, u64::from(v.item.flags));
                }
                b'l' => {
                    out.extend_from_slice(b" l");
                    write_u64(out, u64::from(now.wrapping_sub(v.item.last_access)));
                }
                b'h' => out.extend_from_slice(if v.item.fetched { b" h1" } else { b" h0" }),
                b'O' => {
                    out.push(b' ');
                    out.extend_from_slice(tok);
                }
                b'k' => write_key(out, v.item.key, v.key_binary),
                _ => {}
            }
        }
        if f.opaque_too_long {
            return false;
        }
        // A win already handed out is reported (Z) instead of a second one.
        if v.win_sent {
            out.extend_from_slice(b" Z");
        }
        if v.stale {
            out.extend_from_slice(b" X");
            if !v.win_sent {
                won = true;
            }
        }
        if won {
            out.extend_from_slice(b" W");
            v.won = true;
        }
        out.extend_from_slice(b"\r\n");
        if f.value {
            out.extend_from_slice(v.item.value);
            out.extend_from_slice(b"\r\n");
        }
        true
    });
    if f.opaque_too_long {
        // memcached notices the long opaque while writing the reply, after the lookup
        // and its effects, and counts nothing.
        out.truncate(start);
        write_line(out, OPAQUE_TOO_LONG.as_bytes());
        return;
    }
    // memcached decides "touch" while writing a hit's flags, so a miss with T is a get miss.
    count_lookup(st, f.ttl.is_some() && hit.is_some(), hit.is_some());
    if hit.is_none() && !f.quiet {
        out.extend_from_slice(b"EN");
        write_opaque_and_key(out, m, key);
        out.extend_from_slice(b"\r\n");
    }
}

fn set(ctx: &Ctx, m: &MetaRequest, key: &[u8], out: &mut Vec<u8>) {
    let store = &*ctx.shared.store;
    let st = ctx.stats;
    let f = &m.flags;
    let mut cmd = match f.mode {
        b'E' => StoreCmd::Add,
        b'A' => StoreCmd::Append,
        b'P' => StoreCmd::Prepend,
        b'R' => StoreCmd::Replace,
        _ => StoreCmd::Set,
    };
    // memcached turns set and replace with a compare value into a CAS write.
    if f.compare_cas.is_some() && matches!(cmd, StoreCmd::Set | StoreCmd::Replace) {
        cmd = StoreCmd::Cas;
    }
    let opts = WriteOpts {
        compare: if matches!(cmd, StoreCmd::Append | StoreCmd::Prepend) {
            f.compare_cas.unwrap_or(0)
        } else {
            0
        },
        stale_ok: f.invalidate && cmd == StoreCmd::Cas,
        version: f.new_cas,
        key_binary: f.base64,
    };
    bump(&st.cmd_set, 1);
    let (outcome, cas) = store.store_with(
        cmd,
        key,
        f.client_flags,
        f.ttl.unwrap_or(0),
        m.value,
        f.compare_cas.unwrap_or(0),
        ctx.now,
        &opts,
    );
    count_cas(st, cmd, outcome);
    let code: &[u8] = match outcome {
        StoreOutcome::Stored if f.quiet => return,
        StoreOutcome::Stored => b"HD",
        StoreOutcome::NotStored => b"NS",
        StoreOutcome::Exists => b"EX",
        StoreOutcome::NotFound => b"NF",
        StoreOutcome::TooLarge => {
            bump(&st.store_too_large, 1);
            store.remove(key);
            write_line(out, b"SERVER_ERROR object too large for cache");
            return;
        }
        StoreOutcome::OutOfMemory => {
            bump(&st.store_no_memory, 1);
            // As memcached: a failed meta set never leaves the old value readable.
            store.remove(key);
            write_line(out, b"SERVER_ERROR out of memory storing object");
            return;
        }
    };
    out.extend_from_slice(code);
    for tok in m.flag_tokens() {
        match tok.first() {
            Some(b'O') => {
                out.push(b' ');
                out.extend_from_slice(tok);
            }
            Some(b'k') => write_key(out, key, f.base64),
            Some(b'c') => {
                out.extend_from_slice(b" c");
                write_u64(out, cas);
            }
            _ => {}
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn delete(ctx: &Ctx, m: &MetaRequest, key: &[u8], out: &mut Vec<u8>) {
    let store = &*ctx.shared.store;
    let st = ctx.stats;
    let f = &m.flags;
    let opts = DeleteOpts {
        compare: f.compare_cas,
        invalidate: f.invalidate,
        remove_value: f.remove_value,
        exptime: f.ttl.map(|t| realtime(i64::from(t), ctx.now)),
        version: f.new_cas,
    };
    let code: &[u8] = match store.meta_delete(key, &opts, ctx.now) {
        DeleteOutcome::Done => {
            if !f.invalidate {
                bump(&st.delete_hits, 1);
            }
            if f.quiet {
                return;
            }
            b"HD"
        }
        DeleteOutcome::NotFound => {
            bump(&st.delete_misses, 1);
            b"NF"
        }
        DeleteOutcome::Exists => {
            bump(&st.delete_misses, 1);
            b"EX"
        }
    };
    out.extend_from_slice(code);
    write_opaque_and_key(out, m, key);
    out.extend_from_slice(b"\r\n");
}

fn arith(ctx: &Ctx, m: &MetaRequest, key: &[u8], out: &mut Vec<u8>) {
    let store = &*ctx.shared.store;
    let st = ctx.stats;
    let f = &m.flags;
    let now = ctx.now;
    let incr = !matches!(f.mode, b'D' | b'-');
    let (t_exp, n_exp) = (ttl(f.ttl, now), ttl(f.vivify, now));
    // A created item ends with whichever of N and T comes later in the request.
    let mut created_exptime = 0;
    for tok in m.flag_tokens() {
        match tok.first() {
            Some(b'T') => created_exptime = t_exp,
            Some(b'N') => created_exptime = n_exp,
            _ => {}
        }
    }
    let opts = ArithOpts {
        compare: f.compare_cas.unwrap_or(0),
        vivify: f.vivify.map(|_| f.initial),
        exptime: f.ttl.map(|_| t_exp),
        created_exptime,
        version: f.new_cas,
    };
    let outcome = store.meta_arith(key, incr, f.delta.unwrap_or(1), &opts, now);
    let (value, cas, exptime_before, created) = match outcome {
        MetaArith::Value {
            value,
            cas,
            exptime_before,
            created,
        } => (value, cas, exptime_before, created),
        MetaArith::NonNumeric => return write_line(out, NON_NUMERIC),
        MetaArith::OutOfMemory => return write_line(out, b"SERVER_ERROR out of memory"),
        MetaArith::NotFound | MetaArith::Exists => {
            let code: &[u8] = if outcome == MetaArith::NotFound {
                bump(
                    if incr {
                        &st.incr_misses
                    } else {
                        &st.decr_misses
                    },
                    1,
                );
                b"NF"
            } else {
                b"EX"
            };
            if f.opaque_too_long {
                return write_line(out, OPAQUE_TOO_LONG.as_bytes());
            }
            out.extend_from_slice(code);
            write_opaque_and_key(out, m, key);
            out.extend_from_slice(b"\r\n");
            return;
        }
    };
    if !created {
        bump(if incr { &st.incr_hits } else { &st.decr_hits }, 1);
    }
    if f.opaque_too_long {
        return write_line(out, OPAQUE_TOO_LONG.as_bytes());
    }
    // memcached suppresses a quiet success, but not the reply of an auto-create.
    if f.quiet && !created {
        return;
    }
    let mut digits = Vec::with_capacity(20);
    write_u64(&mut digits, value);
    if f.value {
        out.extend_from_slice(b"VA ");
        write_u64(out, digits.len() as u64);
    } else {
        out.extend_from_slice(b"HD");
    }
    let mut exptime = exptime_before;
    for tok in m.flag_tokens() {
        match tok.first() {
            Some(b'c') => {
                out.extend_from_slice(b" c");
                write_u64(out, cas);
            }
            Some(b't') => {
                out.extend_from_slice(b" t");
                write_ttl(out, exptime, now);
            }
            Some(b'T') => exptime = t_exp,
            Some(b'N') if created => exptime = n_exp,
            Some(b'O') => {
                out.push(b' ');
                out.extend_from_slice(tok);
            }
            Some(b'k') => write_key(out, key, f.base64),
            _ => {}
        }
    }
    if f.value {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&digits);
    }
    out.extend_from_slice(b"\r\n");
}

/// `me <key> [b]`: memcached's one-line item dump. `exp` is memcached's own arithmetic
/// (`now - exptime`, so a live item with a TTL shows a negative number); `cls` and `size`
/// are what memcached's slab allocator would use for the item.
pub fn debug(ctx: &Ctx, key: &[u8], base64: bool, out: &mut Vec<u8>) {
    bump(&ctx.stats.cmd_meta, 1);
    let mut scratch = [0u8; KEY_MAX_LENGTH];
    let key = if base64 {
        decode_key(key, &mut scratch).unwrap_or_default()
    } else {
        key
    };
    let now = ctx.now;
    let Some(v) = ctx.shared.store.meta_debug(key, now) else {
        write_line(out, b"EN");
        return;
    };
    let cfg = &ctx.shared.cfg;
    let size = memcached_item_size(v.key.len(), v.value_len, v.flags, cfg.cas_enabled);
    out.extend_from_slice(b"ME ");
    if v.key_binary {
        encode_key(&v.key, out);
    } else {
        out.extend_from_slice(&v.key);
    }
    out.extend_from_slice(b" exp=");
    if v.exptime == 0 {
        out.extend_from_slice(b"-1");
    } else {
        write_i64(out, i64::from(now.wrapping_sub(v.exptime) as i32));
    }
    out.extend_from_slice(b" la=");
    write_u64(out, u64::from(now.wrapping_sub(v.last_access)));
    out.extend_from_slice(b" cas=");
    write_u64(out, v.cas);
    out.extend_from_slice(if v.fetched {
        b" fetch=yes"
    } else {
        b" fetch=no"
    });
    out.extend_from_slice(b" cls=");
    let cls = slab_class(size, cfg.chunk_size, cfg.growth_factor, cfg.cas_enabled, &v);
    write_u64(out, u64::from(cls));
    out.extend_from_slice(b" size=");
    write_u64(out, size as u64);
    out.extend_from_slice(b"\r\n");
}

/// memcached's largest slab chunk (half of its 1 MiB slab page); bigger items are chunked.
const SLAB_CHUNK_MAX: usize = 512 * 1024;

/// The slab class memcached 1.6 files an item of `size` bytes under: classes start at
/// 48 + `-n` bytes, 8-byte aligned, growing by `-f` until the chunk maximum.
fn slab_class(
    size: usize,
    chunk_min: u32,
    factor: f64,
    cas: bool,
    v: &crate::storage::DebugView,
) -> u32 {
    // A chunked item's class is that of its header: key, flags, CAS and a chunk header.
    let size = if size > SLAB_CHUNK_MAX {
        let suffix = if v.flags != 0 { 4 } else { 0 };
        v.key.len() + 1 + suffix + 48 + 24 + if cas { 8 } else { 0 }
    } else {
        size
    };
    let mut class_size = 48 + chunk_min as usize;
    let mut id = 1u32;
    while id < 63 {
        if (class_size as f64) >= SLAB_CHUNK_MAX as f64 / factor {
            break;
        }
        if class_size % 8 != 0 {
            class_size += 8 - class_size % 8;
        }
        if size <= class_size {
            return id;
        }
        class_size = (class_size as f64 * factor) as usize;
        id += 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::DebugView;

    fn view(klen: usize) -> DebugView {
        DebugView {
            key: vec![b'k'; klen],
            key_binary: false,
            exptime: 0,
            last_access: 0,
            cas: 0,
            fetched: false,
            value_len: 0,
            flags: 0,
        }
    }

    #[test]
    fn slab_classes_follow_memcached_defaults() {
        let v = view(1);
        // memcached 1.6 with -n 48 -f 1.25: 96, 120, 152, 192, 240, ... 524288.
        assert_eq!(slab_class(61, 48, 1.25, true, &v), 1);
        assert_eq!(slab_class(96, 48, 1.25, true, &v), 1);
        assert_eq!(slab_class(97, 48, 1.25, true, &v), 2);
        assert_eq!(slab_class(120, 48, 1.25, true, &v), 2);
        assert_eq!(slab_class(121, 48, 1.25, true, &v), 3);
        assert_eq!(slab_class(500_000, 48, 1.25, true, &v), 39);
        assert_eq!(slab_class(524_288, 48, 1.25, true, &v), 39);
    }
}
