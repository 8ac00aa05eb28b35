//! The `stats` family of replies, with memcached's field names, order and formats.

use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::Ordering;

use crate::protocol::response::write_line;
use crate::stats::lock;

use super::exec::Ctx;

/// Appends `STAT <name> <value>\r\n`.
fn stat(out: &mut Vec<u8>, name: &str, value: impl Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "STAT {name} {value}\r\n");
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub fn stats(ctx: &Ctx, args: &[u8], out: &mut Vec<u8>) {
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let sub = words.next();
    let rest: Vec<&[u8]> = words.collect();
    match sub {
        None => general(ctx, out),
        Some(b"settings") => settings(ctx, out),
        Some(b"items") => items(ctx, out),
        Some(b"slabs") => slabs(ctx, out),
        Some(b"sizes") => {
            // Item sizes are not tracked per 32-byte bucket (memcached also needs
            // `-o track_sizes` for this).
            stat(out, "sizes_status", "disabled");
        }
        Some(b"conns") => conns(ctx, out),
        Some(b"repl") => repl(ctx, ctx.shared.store.stats(ctx.now).tombstones, out),
        Some(b"digest") => {
            // Live items and an order-independent fingerprint of their (key, version):
            // equal on both nodes of a pair exactly when they hold the same data.
            let (items, digest) = ctx.shared.store.digest(ctx.now);
            stat(out, "digest_items", items);
            stat(out, "digest", format_args!("{digest:016x}"));
        }
        Some(b"reset") => {
            ctx.shared.stats.reset();
            ctx.shared.store.reset_stats();
            ctx.shared.total_conns.store(0, Ordering::Relaxed);
            ctx.shared.rejected_conns.store(0, Ordering::Relaxed);
            out.extend_from_slice(b"RESET\r\n");
            return;
        }
        Some(b"detail") => {
            match rest.first().copied() {
                // Per-prefix accounting is not kept, so a dump is empty and on/off are
                // refused rather than acknowledged and ignored.
                Some(b"dump") if rest.len() == 1 => {}
                _ => {
                    out.extend_from_slice(b"CLIENT_ERROR usage: stats detail on|off|dump\r\n");
                    return;
                }
            }
        }
        Some(b"cachedump") => {
            if let Err(msg) = cachedump(ctx, &rest, out) {
                write_line(out, msg.as_bytes());
                return;
            }
        }
        Some(_) => {
            out.extend_from_slice(b"ERROR\r\n");
            return;
        }
    }
    out.extend_from_slice(b"END\r\n");
}

/// memcached caps a cachedump reply at 2 MB.
const CACHEDUMP_MAX: usize = 2 * 1024 * 1024;
/// memcached's MAX_NUMBER_OF_SLAB_CLASSES: class ids at or above it are illegal.
const SLAB_CLASSES: u32 = 64;

/// `stats cachedump <class> <limit>`: class 1 (the whole store here) lists its items as
/// `ITEM <key> [<bytes> b; <expiry> s]`; other legal classes are empty.
fn cachedump(ctx: &Ctx, args: &[&[u8]], out: &mut Vec<u8>) -> Result<(), &'static str> {
    if !ctx.shared.cfg.dump_enabled {
        return Err("CLIENT_ERROR stats cachedump not allowed");
    }
    let [class, limit, ..] = args else {
        return Err("CLIENT_ERROR bad command line");
    };
    let num = |t: &[u8]| {
        std::str::from_utf8(t)
            .ok()
            .and_then(|t| t.parse::<u32>().ok())
    };
    let (Some(class), Some(limit)) = (num(class), num(limit)) else {
        return Err("CLIENT_ERROR bad command line format");
    };
    if class >= SLAB_CLASSES {
        return Err("CLIENT_ERROR Illegal slab id");
    }
    if class != 1 {
        return Ok(());
    }
    let store = &ctx.shared.store;
    let start = out.len();
    let mut left = if limit == 0 {
        usize::MAX
    } else {
        limit as usize
    };
    'shards: for shard in 0..store.shard_count() {
        let mut cursor = Some(0);
        while let Some(c) = cursor {
            if left == 0 || out.len() - start >= CACHEDUMP_MAX {
                break 'shards;
            }
            cursor = store.visit(shard, c, left.min(256), ctx.now, |it| {
                out.extend_from_slice(b"ITEM ");
                out.extend_from_slice(it.key);
                let _ = write!(out, " [{} b; {} s]\r\n", it.value.len(), it.exptime);
                left -= 1;
            });
        }
    }
    Ok(())
}

fn general(ctx: &Ctx, out: &mut Vec<u8>) {
    let sh = ctx.shared;
    let c = sh.stats.sum();
    let s = sh.store.stats(ctx.now);
    let (user, sys) = crate::stats::rusage();
    let now = ctx.now;
    stat(out, "pid", std::process::id());
    stat(out, "uptime", now.saturating_sub(sh.started));
    stat(out, "time", now);
    stat(out, "version", crate::PROTOCOL_VERSION);
    stat(out, "pointer_size", usize::BITS);
    stat(out, "rusage_user", format_args!("{user:.6}"));
    stat(out, "rusage_system", format_args!("{sys:.6}"));
    let curr = sh.curr_conns.load(Ordering::Relaxed);
    let listeners = sh.listeners.load(Ordering::Relaxed);
    stat(out, "max_connections", sh.cfg.max_conns);
    stat(out, "curr_connections", curr);
    stat(
        out,
        "total_connections",
        sh.total_conns.load(Ordering::Relaxed),
    );
    if sh.cfg.maxconns_fast {
        stat(
            out,
            "rejected_connections",
            sh.rejected_conns.load(Ordering::Relaxed),
        );
    }
    stat(out, "connection_structures", curr + listeners);
    stat(out, "cmd_get", c.cmd_get);
    stat(out, "cmd_set", c.cmd_set);
    stat(out, "cmd_flush", c.cmd_flush);
    stat(out, "cmd_touch", c.cmd_touch);
    stat(out, "cmd_meta", c.cmd_meta);
    stat(out, "get_hits", c.get_hits);
    stat(out, "get_misses", c.get_misses);
    stat(out, "get_expired", s.get_expired);
    stat(out, "get_flushed", s.get_flushed);
    stat(out, "delete_misses", c.delete_misses);
    stat(out, "delete_hits", c.delete_hits);
    stat(out, "incr_misses", c.incr_misses);
    stat(out, "incr_hits", c.incr_hits);
    stat(out, "decr_misses", c.decr_misses);
    stat(out, "decr_hits", c.decr_hits);
    stat(out, "cas_misses", c.cas_misses);
    stat(out, "cas_hits", c.cas_hits);
    stat(out, "cas_badval", c.cas_badval);
    stat(out, "touch_hits", c.touch_hits);
    stat(out, "touch_misses", c.touch_misses);
    stat(out, "store_too_large", c.store_too_large);
    stat(out, "store_no_memory", c.store_no_memory);
    stat(out, "auth_cmds", c.auth_cmds);
    stat(out, "auth_errors", c.auth_errors);
    if sh.cfg.idle_timeout > 0 {
        stat(out, "idle_kicks", c.idle_kicks);
    }
    stat(out, "bytes_read", c.bytes_read);
    stat(out, "bytes_written", c.bytes_written);
    stat(out, "limit_maxbytes", s.memory_limit);
    stat(
        out,
        "accepting_conns",
        u8::from(sh.accepting.load(Ordering::Relaxed)),
    );
    stat(
        out,
        "listen_disabled_num",
        sh.listen_disabled.load(Ordering::Relaxed),
    );
    stat(out, "time_in_listen_disabled_us", 0);
    stat(out, "threads", sh.cfg.threads);
    stat(out, "conn_yields", c.conn_yields);
    stat(out, "hash_power_level", s.hash_power_level);
    stat(out, "hash_bytes", s.hash_bytes);
    stat(out, "hash_is_expanding", 0);
    stat(out, "lru_crawler_running", 0);
    stat(
        out,
        "lru_crawler_starts",
        sh.reaper_runs.load(Ordering::Relaxed),
    );
    stat(out, "malloc_fails", 0);
    stat(out, "bytes", s.bytes);
    stat(out, "curr_items", s.curr_items);
    stat(out, "total_items", s.total_items);
    stat(out, "expired_unfetched", s.expired_unfetched);
    stat(out, "evicted_unfetched", s.evicted_unfetched);
    stat(out, "evicted_active", s.evicted_active);
    stat(out, "evictions", s.evictions);
    stat(out, "reclaimed", s.reclaimed);
    stat(out, "crawler_reclaimed", s.crawler_reclaimed);
    stat(out, "crawler_items_checked", s.crawler_items_checked);
    // One LRU per shard, no hot/warm/cold segments: these moves never happen here.
    stat(out, "moves_to_cold", 0);
    stat(out, "moves_to_warm", 0);
    stat(out, "moves_within_lru", 0);
    // Every eviction is done by the worker that needed the memory.
    stat(out, "direct_reclaims", s.evictions);
    stat(out, "repcached_version", crate::VERSION);
    repl(ctx, s.tombstones, out);
}

/// The pair's fields (`stats repl` alone, or at the end of `stats`).
fn repl(ctx: &Ctx, tombstones: u64, out: &mut Vec<u8>) {
    match &ctx.shared.repl {
        Some(r) => r.write_stats(out),
        None => stat(out, "repl_link_state", "standalone"),
    }
    stat(out, "repl_tombstones", tombstones);
}

/// memcached's settings that only tune its slab allocator and LRU maintainer: accepted via
/// `-o` for compatibility and reported as given (or memcached's default).
const COMPAT_SETTINGS: &[(&str, &str)] = &[
    ("hashpower_init", "0"),
    ("slab_reassign", "yes"),
    ("slab_automove", "1"),
    ("slab_automove_ratio", "0.80"),
    ("slab_automove_window", "30"),
    ("slab_chunk_max", "524288"),
    ("lru_crawler", "yes"),
    ("lru_crawler_sleep", "100"),
    ("lru_crawler_tocrawl", "0"),
    ("tail_repair_time", "0"),
];

const COMPAT_SETTINGS_2: &[(&str, &str)] = &[
    ("hash_algorithm", "murmur3"),
    ("lru_maintainer_thread", "yes"),
    ("lru_segmented", "yes"),
    ("hot_lru_pct", "20"),
    ("warm_lru_pct", "40"),
    ("hot_max_factor", "0.20"),
    ("warm_max_factor", "2.00"),
    ("temp_lru", "no"),
    ("temporary_ttl", "61"),
];

fn compat(ctx: &Ctx, out: &mut Vec<u8>, list: &[(&str, &str)]) {
    for (name, default) in list {
        let given = ctx
            .shared
            .cfg
            .extended
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone().unwrap_or_else(|| "yes".to_string()));
        stat(out, name, given.as_deref().unwrap_or(default));
    }
}

fn settings(ctx: &Ctx, out: &mut Vec<u8>) {
    let cfg = &ctx.shared.cfg;
    let store = ctx.shared.store.stats(ctx.now);
    stat(out, "maxbytes", store.memory_limit);
    stat(out, "maxconns", cfg.max_conns);
    stat(out, "tcpport", cfg.port);
    stat(out, "udpport", cfg.udp_port);
    let inter = cfg.listen_spec.as_deref().unwrap_or("NULL");
    stat(out, "inter", inter);
    stat(
        out,
        "verbosity",
        ctx.shared.verbosity.load(Ordering::Relaxed),
    );
    stat(out, "oldest", ctx.shared.store.flush_state().oldest_live);
    stat(out, "evictions", if cfg.evictions { "on" } else { "off" });
    match &cfg.unix_socket {
        Some(p) => stat(out, "domain_socket", p.display()),
        None => stat(out, "domain_socket", "NULL"),
    }
    stat(out, "umask", format_args!("{:o}", cfg.unix_mask));
    stat(out, "shutdown_command", yes_no(cfg.enable_shutdown));
    stat(
        out,
        "growth_factor",
        format_args!("{:.2}", cfg.growth_factor),
    );
    stat(out, "chunk_size", cfg.chunk_size);
    stat(out, "num_threads", cfg.threads);
    stat(out, "num_threads_per_udp", cfg.threads);
    stat(out, "stat_key_prefix", cfg.prefix_delimiter);
    stat(out, "detail_enabled", yes_no(cfg.detail_enabled));
    stat(out, "reqs_per_event", cfg.reqs_per_event);
    stat(out, "cas_enabled", yes_no(cfg.cas_enabled));
    stat(out, "tcp_backlog", cfg.backlog);
    stat(out, "binding_protocol", cfg.binding_protocol.stats_name());
    stat(out, "auth_enabled_sasl", "no");
    stat(out, "auth_enabled_ascii", "no");
    stat(out, "item_size_max", cfg.item_size_max);
    stat(out, "maxconns_fast", yes_no(cfg.maxconns_fast));
    compat(ctx, out, COMPAT_SETTINGS);
    stat(out, "flush_enabled", yes_no(cfg.flush_enabled));
    stat(out, "dump_enabled", yes_no(cfg.dump_enabled));
    compat(ctx, out, COMPAT_SETTINGS_2);
    stat(out, "idle_timeout", cfg.idle_timeout);
    stat(out, "watcher_logbuf_size", 262144);
    stat(out, "worker_logbuf_size", 65536);
    stat(out, "read_buf_mem_limit", 0);
    stat(out, "track_sizes", "no");
    stat(out, "inline_ascii_response", "no");
    // The pair's settings (repcached's own).
    stat(out, "repl_peer", cfg.peer.as_deref().unwrap_or("NULL"));
    stat(out, "repl_port", cfg.repl_port);
    match ctx.shared.repl.as_ref().map(|r| r.cfg.listen) {
        Some(a) => stat(out, "repl_listen", a),
        None => stat(out, "repl_listen", "NULL"),
    }
    stat(out, "repl_heartbeat_ms", cfg.repl_heartbeat_ms);
    stat(out, "repl_timeout_ms", cfg.repl_timeout_ms);
    stat(out, "repl_bootstrap_timeout", cfg.repl_bootstrap_timeout);
    stat(out, "repl_drain_timeout_ms", cfg.repl_drain_timeout_ms);
    stat(out, "repl_backlog_bytes", cfg.repl_backlog);
    stat(out, "repl_copy_share", cfg.repl_copy_share);
    stat(out, "repl_auth", yes_no(cfg.repl_secret_file.is_some()));
    stat(out, "cluster_name", &cfg.cluster_name);
}

/// One pseudo slab class (1) stands for the whole store: there are no size classes here,
/// so the per-class figures of memcached are reported once, for all items.
fn items(ctx: &Ctx, out: &mut Vec<u8>) {
    let s = ctx.shared.store.stats(ctx.now);
    if s.curr_items == 0 && s.evictions == 0 && s.outofmemory == 0 {
        return;
    }
    let p = "items:1:";
    let fields: [(&str, u64); 14] = [
        ("number", s.curr_items),
        ("number_hot", 0),
        ("number_warm", 0),
        ("number_cold", s.curr_items),
        ("age_hot", 0),
        ("age_warm", 0),
        ("age", u64::from(s.oldest_item_age)),
        ("mem_requested", s.mem_requested),
        ("evicted", s.evictions),
        ("evicted_nonzero", s.evicted_nonzero),
        ("evicted_time", u64::from(s.evicted_time)),
        ("outofmemory", s.outofmemory),
        ("tailrepairs", 0),
        ("reclaimed", s.reclaimed),
    ];
    for (name, v) in fields {
        stat(out, &format!("{p}{name}"), v);
    }
    for (name, v) in [
        ("expired_unfetched", s.expired_unfetched),
        ("evicted_unfetched", s.evicted_unfetched),
        ("evicted_active", s.evicted_active),
        ("crawler_reclaimed", s.crawler_reclaimed),
        ("crawler_items_checked", s.crawler_items_checked),
    ] {
        stat(out, &format!("{p}{name}"), v);
    }
}

fn slabs(ctx: &Ctx, out: &mut Vec<u8>) {
    let s = ctx.shared.store.stats(ctx.now);
    let c = ctx.shared.stats.sum();
    let active = u8::from(s.curr_items > 0);
    if active == 1 {
        let avg = s.bytes / s.curr_items.max(1);
        stat(out, "1:chunk_size", avg);
        stat(out, "1:chunks_per_page", (1024 * 1024) / avg.max(1));
        stat(out, "1:total_pages", s.bytes.div_ceil(1024 * 1024));
        stat(out, "1:total_chunks", s.curr_items);
        stat(out, "1:used_chunks", s.curr_items);
        stat(out, "1:free_chunks", 0);
        stat(out, "1:free_chunks_end", 0);
        stat(out, "1:get_hits", c.get_hits);
        stat(out, "1:cmd_set", c.cmd_set);
        stat(out, "1:delete_hits", c.delete_hits);
        stat(out, "1:incr_hits", c.incr_hits);
        stat(out, "1:decr_hits", c.decr_hits);
        stat(out, "1:cas_hits", c.cas_hits);
        stat(out, "1:cas_badval", c.cas_badval);
        stat(out, "1:touch_hits", c.touch_hits);
    }
    stat(out, "active_slabs", active);
    stat(out, "total_malloced", s.bytes);
}

fn conns(ctx: &Ctx, out: &mut Vec<u8>) {
    let now = ctx.now;
    for (fd, addr) in lock(&ctx.shared.listen_info).iter() {
        stat(out, &format!("{fd}:addr"), addr);
        stat(out, &format!("{fd}:state"), "conn_listening");
        stat(out, &format!("{fd}:secs_since_last_cmd"), 0);
    }
    for (fd, info) in lock(&ctx.shared.conns).iter() {
        stat(out, &format!("{fd}:addr"), &info.addr);
        stat(out, &format!("{fd}:listen_addr"), &info.listen_addr);
        let state = if *fd == ctx.fd {
            "conn_parse_cmd"
        } else {
            "conn_waiting"
        };
        stat(out, &format!("{fd}:state"), state);
        let last = info.last_cmd.load(Ordering::Relaxed);
        stat(
            out,
            &format!("{fd}:secs_since_last_cmd"),
            now.saturating_sub(last),
        );
    }
}
