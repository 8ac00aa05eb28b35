//! Behavioural tests of the store: memcached semantics (checked against memcached 1.6.18
//! where noted), eviction order, expiry, flush, memory accounting and the change sink.

use super::hlc::EPOCH_UNIX_MS;
use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const NOW: u32 = 1_700_000_000;

fn cfg(limit: usize, shards: usize) -> StoreConfig {
    StoreConfig {
        memory_limit: limit,
        evictions: true,
        item_size_max: 1024 * 1024,
        cas_enabled: true,
        shards,
        node_id: 1,
    }
}

fn clock_at(secs: u32) -> (Arc<AtomicU64>, hlc::ClockFn) {
    let t = Arc::new(AtomicU64::new(u64::from(secs) * 1_000_000));
    let t2 = t.clone();
    (t, Arc::new(move || t2.load(Ordering::SeqCst)))
}

fn store_with(c: StoreConfig) -> Store {
    let (_t, clock) = clock_at(NOW);
    Store::new(c).with_clock(clock).with_start_time(NOW - 1000)
}

fn set(s: &Store, k: &str, v: &str, exp: i32, now: u32) -> StoreOutcome {
    s.store(StoreCmd::Set, k.as_bytes(), 0, exp, v.as_bytes(), 0, now)
}

fn get(s: &Store, k: &str, now: u32) -> Option<String> {
    s.get(k.as_bytes(), now, |it| {
        String::from_utf8_lossy(it.value).into_owned()
    })
    .1
}

fn gets(s: &Store, k: &str, now: u32) -> Option<(String, u64)> {
    s.get(k.as_bytes(), now, |it| {
        (String::from_utf8_lossy(it.value).into_owned(), it.cas)
    })
    .1
}

/// Accounted cost of one item with this key and value, stored with no flags or exptime.
fn cost_of(k: &str, v: &str) -> usize {
    item::cost_of_len(item::HDR_SHORT + k.len() + v.len())
}

/// Stores `kNN` for each NN in `range` with a 10-byte value, at `now` (+ NN when `stagger`,
/// so each key is older than the next).
fn set_numbered(s: &Store, range: std::ops::Range<u32>, now: u32, stagger: bool) {
    for i in range {
        let at = if stagger { now + i } else { now };
        assert_eq!(
            set(s, &format!("k{i:02}"), "vvvvvvvvvv", 0, at),
            StoreOutcome::Stored
        );
    }
}

fn assert_evicted(s: &Store, range: std::ops::Range<u32>, now: u32) {
    for i in range {
        assert_eq!(
            get(s, &format!("k{i:02}"), now),
            None,
            "k{i:02} should be evicted"
        );
    }
}

#[test]
fn set_get_replace_add() {
    let s = store_with(cfg(1 << 20, 4));
    assert_eq!(get(&s, "a", NOW), None);
    assert_eq!(s.get(b"a", NOW, |_| ()).0, Lookup::Miss);
    assert_eq!(set(&s, "a", "1", 0, NOW), StoreOutcome::Stored);
    assert_eq!(get(&s, "a", NOW).as_deref(), Some("1"));
    assert_eq!(
        s.store(StoreCmd::Add, b"a", 0, 0, b"2", 0, NOW),
        StoreOutcome::NotStored
    );
    assert_eq!(
        s.store(StoreCmd::Replace, b"b", 0, 0, b"2", 0, NOW),
        StoreOutcome::NotStored
    );
    assert_eq!(
        s.store(StoreCmd::Add, b"b", 5, 0, b"2", 0, NOW),
        StoreOutcome::Stored
    );
    assert_eq!(
        s.store(StoreCmd::Replace, b"a", 9, 0, b"3", 0, NOW),
        StoreOutcome::Stored
    );
    assert_eq!(s.get(b"a", NOW, |it| it.flags).1, Some(9));
    assert_eq!(s.get(b"b", NOW, |it| it.flags).1, Some(5));
    assert!(s.delete(b"a", NOW));
    assert!(!s.delete(b"a", NOW));
    let st = s.stats(NOW);
    assert_eq!(st.curr_items, 1);
    assert_eq!(st.total_items, 3);
    assert_eq!(st.mem_requested, 2);
}

#[test]
fn eviction_is_strict_lru_in_one_shard_and_touched_items_survive() {
    let per = cost_of("k00", "vvvvvvvvvv");
    let s = store_with(cfg(per * 10, 1));
    set_numbered(&s, 0..10, NOW, true);
    assert_eq!(s.stats(NOW).evictions, 0);
    // Reading k00 and touching k01 makes them most recent.
    assert!(get(&s, "k00", NOW + 20).is_some());
    assert!(s.touch(b"k01", 0, NOW + 20));
    // An add on an existing key also promotes it (memcached's do_store_item).
    assert_eq!(
        s.store(StoreCmd::Add, b"k02", 0, 0, b"x", 0, NOW + 20),
        StoreOutcome::NotStored
    );
    set_numbered(&s, 10..15, NOW + 30, false);
    // Five evictions, in LRU order: k03..k07.
    assert_evicted(&s, 3..8, NOW + 31);
    for k in ["k00", "k01", "k02", "k08", "k09", "k10", "k14"] {
        assert!(get(&s, k, NOW + 31).is_some(), "{k} should survive");
    }
    let st = s.stats(NOW + 31);
    assert_eq!(st.evictions, 5);
    assert_eq!(st.evicted_unfetched, 5);
    assert_eq!(
        st.evicted_time,
        30 - 7,
        "age of k07 (set at +7) when evicted at +30"
    );
    assert!(s.used_bytes() <= s.memory_limit());
}

#[test]
fn expired_items_are_reclaimed_before_evicting() {
    let per = cost_of("k0", "v");
    let s = store_with(cfg(per * 4, 1));
    assert_eq!(set(&s, "k0", "v", 0, NOW), StoreOutcome::Stored);
    assert_eq!(set(&s, "k1", "v", 5, NOW), StoreOutcome::Stored);
    assert_eq!(set(&s, "k2", "v", 0, NOW), StoreOutcome::Stored);
    assert_eq!(set(&s, "k3", "v", 0, NOW), StoreOutcome::Stored);
    // k1 expired at NOW+5; the next store reclaims it instead of evicting k0.
    assert_eq!(set(&s, "k4", "v", 0, NOW + 6), StoreOutcome::Stored);
    assert!(get(&s, "k0", NOW + 6).is_some());
    let st = s.stats(NOW + 6);
    assert_eq!(
        (st.reclaimed, st.expired_unfetched, st.evictions),
        (1, 1, 0)
    );
}

#[test]
fn expiry_rules_with_injected_time() {
    let s = store_with(cfg(1 << 20, 4));
    // relative
    set(&s, "rel", "x", 10, NOW);
    assert!(get(&s, "rel", NOW + 9).is_some());
    assert_eq!(s.get(b"rel", NOW + 10, |_| ()).0, Lookup::Expired);
    assert_eq!(
        s.get(b"rel", NOW + 10, |_| ()).0,
        Lookup::Miss,
        "dropped on access"
    );
    // 30 days exactly is still relative; one more second is an absolute (past) time.
    set(&s, "30d", "x", 2_592_000, NOW);
    assert_eq!(s.get(b"30d", NOW, |it| it.exptime).1, Some(NOW + 2_592_000));
    set(&s, "30d1", "x", 2_592_001, NOW);
    assert_eq!(s.get(b"30d1", NOW, |_| ()).0, Lookup::Expired);
    // absolute in the future / past
    set(&s, "abs", "x", (NOW + 100) as i32, NOW);
    assert!(get(&s, "abs", NOW + 99).is_some());
    assert_eq!(s.get(b"abs", NOW + 100, |_| ()).0, Lookup::Expired);
    set(&s, "past", "x", (NOW - 1) as i32, NOW);
    assert_eq!(s.get(b"past", NOW, |_| ()).0, Lookup::Expired);
    // negative: stored, then already expired
    assert_eq!(set(&s, "neg", "x", -1, NOW), StoreOutcome::Stored);
    assert_eq!(s.get(b"neg", NOW, |_| ()).0, Lookup::Expired);
    // 0 never expires
    set(&s, "never", "x", 0, NOW);
    assert!(get(&s, "never", u32::MAX).is_some());
    // touch and gat move the expiry
    set(&s, "t", "x", 10, NOW);
    assert!(s.touch(b"t", 100, NOW + 5));
    assert!(get(&s, "t", NOW + 50).is_some());
    let (l, e) = s.get_and_touch(b"t", 0, NOW + 60, |it| it.exptime);
    assert_eq!((l, e), (Lookup::Hit, Some(0)));
    assert!(!s.touch(b"missing", 10, NOW));
    assert_eq!(s.stats(NOW).get_expired, 5);
}

#[test]
fn touch_keeps_the_cas_like_memcached() {
    let s = store_with(cfg(1 << 20, 4));
    set(&s, "a", "1", 0, NOW);
    let (_, c1) = gets(&s, "a", NOW).unwrap_or_default();
    assert!(s.touch(b"a", 100, NOW));
    let (_, c2) = gets(&s, "a", NOW).unwrap_or_default();
    assert_eq!(c1, c2);
}

#[test]
fn flush_immediate_hides_older_items_only() {
    let s = store_with(cfg(1 << 20, 4));
    set(&s, "old", "x", 0, NOW - 10);
    set(&s, "same", "x", 0, NOW);
    s.flush_all(0, NOW);
    set(&s, "new", "x", 0, NOW);
    assert_eq!(s.get(b"old", NOW, |_| ()).0, Lookup::Flushed);
    assert_eq!(s.get(b"same", NOW, |_| ()).0, Lookup::Flushed);
    assert!(
        get(&s, "new", NOW).is_some(),
        "stored after the flush in the same second"
    );
    assert!(get(&s, "new", NOW + 100).is_some());
    assert_eq!(s.stats(NOW).get_flushed, 2);
    // a negative delay is immediate too
    set(&s, "n2", "x", 0, NOW + 1);
    s.flush_all(-5, NOW + 2);
    assert_eq!(s.get(b"n2", NOW + 2, |_| ()).0, Lookup::Flushed);
}

#[test]
fn flush_delayed_applies_when_due() {
    let s = store_with(cfg(1 << 20, 4));
    set(&s, "a", "x", 0, NOW);
    s.flush_all(10, NOW);
    // memcached's oldest_live = realtime(10) - 1: effective one second early.
    assert!(get(&s, "a", NOW + 8).is_some());
    set(&s, "b", "x", 0, NOW + 8);
    assert_eq!(s.get(b"a", NOW + 9, |_| ()).0, Lookup::Flushed);
    assert_eq!(s.get(b"b", NOW + 9, |_| ()).0, Lookup::Flushed);
    set(&s, "c", "x", 0, NOW + 10);
    assert!(get(&s, "c", NOW + 10).is_some());
    let fs = s.flush_state();
    assert_eq!(fs.oldest_live, NOW + 9);
    assert!(fs.time_watermark() > 0);
}

#[test]
fn flush_quirks_match_memcached() {
    // `flush_all 1` (checked on 1.6.18): items set later in the same second vanish too.
    let s = store_with(cfg(1 << 20, 4));
    s.flush_all(1, NOW);
    set(&s, "c", "x", 0, NOW);
    assert_eq!(s.get(b"c", NOW, |_| ()).0, Lookup::Flushed);
    assert!(set(&s, "d", "x", 0, NOW + 1) == StoreOutcome::Stored);
    assert!(get(&s, "d", NOW + 1).is_some());
    // Under -C an immediate flush hides the rest of the current second (1.6.18 -C).
    let mut c = cfg(1 << 20, 4);
    c.cas_enabled = false;
    let s = store_with(c);
    s.flush_all(0, NOW);
    set(&s, "c", "x", 0, NOW);
    assert_eq!(get(&s, "c", NOW), None);
    set(&s, "d", "x", 0, NOW + 1);
    assert!(get(&s, "d", NOW + 1).is_some());
    // An absolute time before process start cancels flushing altogether.
    let s = store_with(cfg(1 << 20, 4));
    set(&s, "e", "x", 0, NOW);
    s.flush_all(2_600_000, NOW);
    assert!(get(&s, "e", NOW + 1).is_some());
}

#[test]
fn reap_drops_expired_and_flushed_items() {
    let s = store_with(cfg(1 << 20, 8));
    for i in 0..100 {
        set(&s, &format!("e{i}"), "x", 5, NOW);
        set(&s, &format!("k{i}"), "x", 0, NOW);
    }
    // Dead for less than the grace period: left for lookups to find expired.
    let mut early = 0;
    for _ in 0..20 {
        early += s.reap(NOW + 6);
    }
    assert_eq!(early, 0);
    let mut dropped = 0;
    for _ in 0..20 {
        dropped += s.reap(NOW + 10);
    }
    assert_eq!(dropped, 100);
    let st = s.stats(NOW + 10);
    assert_eq!(st.curr_items, 100);
    assert_eq!(st.crawler_reclaimed, 100);
    assert!(st.crawler_items_checked >= 200);
    s.flush_all(0, NOW + 10);
    let mut dropped = 0;
    for _ in 0..20 {
        dropped += s.reap(NOW + 14);
    }
    assert_eq!(dropped, 100);
    assert_eq!(s.stats(NOW).curr_items, 0);
    assert_eq!(s.used_bytes(), 0);
}

#[test]
fn cas_semantics() {
    let s = store_with(cfg(1 << 20, 4));
    let cas =
        |k: &str, v: &str, c: u64| s.store(StoreCmd::Cas, k.as_bytes(), 0, 0, v.as_bytes(), c, NOW);
    assert_eq!(cas("a", "1", 5), StoreOutcome::NotFound);
    set(&s, "a", "1", 0, NOW);
    let (_, c1) = gets(&s, "a", NOW).unwrap_or_default();
    assert_ne!(c1, 0);
    assert_eq!(cas("a", "2", c1 + 1), StoreOutcome::Exists);
    assert_eq!(
        cas("a", "2", 0),
        StoreOutcome::Exists,
        "0 never matches (1.6.18)"
    );
    assert_eq!(cas("a", "2", c1), StoreOutcome::Stored);
    let (v, c2) = gets(&s, "a", NOW).unwrap_or_default();
    assert_eq!(v, "2");
    assert!(c2 > c1);
    assert_eq!(cas("a", "3", c1), StoreOutcome::Exists);
    // every successful modification gets a new, higher CAS
    set(&s, "a", "4", 0, NOW);
    let (_, c3) = gets(&s, "a", NOW).unwrap_or_default();
    assert!(c3 > c2);
    s.store(StoreCmd::Append, b"a", 0, 0, b"5", 0, NOW);
    let (_, c4) = gets(&s, "a", NOW).unwrap_or_default();
    assert!(c4 > c3);
}

#[test]
fn cas_disabled_like_memcached_dash_c() {
    let mut c = cfg(1 << 20, 4);
    c.cas_enabled = false;
    let s = store_with(c);
    set(&s, "a", "1", 0, NOW);
    let (_, shown) = gets(&s, "a", NOW).unwrap_or_default();
    assert_eq!(shown, 0);
    let version = s.get(b"a", NOW, |it| it.version).1.unwrap_or(0);
    assert_ne!(version, 0, "versions still exist for replication");
    for c in [0, version, 5] {
        assert_eq!(
            s.store(StoreCmd::Cas, b"a", 0, 0, b"2", c, NOW),
            StoreOutcome::Exists
        );
    }
    assert_eq!(
        s.store(StoreCmd::Cas, b"q", 0, 0, b"2", 5, NOW),
        StoreOutcome::NotFound
    );
}

#[test]
fn arith_semantics() {
    let s = store_with(cfg(1 << 20, 4));
    assert_eq!(s.arith(b"n", true, 1, NOW), ArithOutcome::NotFound);
    s.store(StoreCmd::Set, b"n", 42, 1000, b"10", 0, NOW);
    let (_, c0) = gets(&s, "n", NOW).unwrap_or_default();
    assert_eq!(s.arith(b"n", false, 1, NOW), ArithOutcome::Value(9));
    // memcached 1.6.18: `decr` 10 -> 9 keeps the length: "9 "
    let (v, c1) = gets(&s, "n", NOW).unwrap_or_default();
    assert_eq!(v, "9 ");
    assert!(c1 > c0);
    assert_eq!(s.arith(b"n", true, 100, NOW), ArithOutcome::Value(109));
    assert_eq!(get(&s, "n", NOW).as_deref(), Some("109"));
    assert_eq!(
        s.get(b"n", NOW, |it| (it.flags, it.exptime)).1,
        Some((42, NOW + 1000))
    );
    // decr clamps at zero
    assert_eq!(s.arith(b"n", false, 1000, NOW), ArithOutcome::Value(0));
    assert_eq!(get(&s, "n", NOW).as_deref(), Some("0  "));
    // incr wraps modulo 2^64
    set(&s, "w", "18446744073709551615", 0, NOW);
    assert_eq!(s.arith(b"w", true, 2, NOW), ArithOutcome::Value(1));
    assert_eq!(get(&s, "w", NOW).as_deref(), Some("1                   "));
    // non-numeric values
    for bad in ["", "abc", "5ab", "-1", "18446744073709551616", "  "] {
        set(&s, "b", bad, 0, NOW);
        assert_eq!(
            s.arith(b"b", true, 1, NOW),
            ArithOutcome::NonNumeric,
            "{bad:?}"
        );
    }
    // accepted oddities: leading space, plus sign, NUL terminator, trailing tab
    for (ok, want) in [
        (" 5", "6 "),
        ("+5", "6 "),
        ("5\0ab", "6   "),
        ("5\tb", "6  "),
    ] {
        set(&s, "o", ok, 0, NOW);
        assert_eq!(
            s.arith(b"o", true, 1, NOW),
            ArithOutcome::Value(6),
            "{ok:?}"
        );
        assert_eq!(get(&s, "o", NOW).as_deref(), Some(want));
    }
}

#[test]
fn append_prepend() {
    let s = store_with(cfg(1 << 20, 4));
    assert_eq!(
        s.store(StoreCmd::Append, b"a", 0, 0, b"x", 0, NOW),
        StoreOutcome::NotStored
    );
    s.store(StoreCmd::Set, b"a", 7, 100, b"mid", 0, NOW);
    assert_eq!(
        s.store(StoreCmd::Append, b"a", 1, 5, b">>", 0, NOW),
        StoreOutcome::Stored
    );
    assert_eq!(
        s.store(StoreCmd::Prepend, b"a", 2, 6, b"<<", 0, NOW),
        StoreOutcome::Stored
    );
    let r = s
        .get(b"a", NOW, |it| (it.value.to_vec(), it.flags, it.exptime))
        .1;
    assert_eq!(
        r,
        Some((b"<<mid>>".to_vec(), 7, NOW + 100)),
        "old flags and exptime kept"
    );
    // Growing past -I is NOT_STORED (memcached 1.6.18, -I 1k), the item unchanged.
    let mut c = cfg(1 << 20, 4);
    c.item_size_max = 1024;
    let s = store_with(c);
    let v900 = vec![b'a'; 900];
    assert_eq!(
        s.store(StoreCmd::Set, b"k", 0, 0, &v900, 0, NOW),
        StoreOutcome::Stored
    );
    assert_eq!(
        s.store(StoreCmd::Append, b"k", 0, 0, &[b'b'; 64], 0, NOW),
        StoreOutcome::Stored
    );
    assert_eq!(
        s.store(StoreCmd::Append, b"k", 0, 0, &[b'b'; 1], 0, NOW),
        StoreOutcome::NotStored
    );
    assert_eq!(s.get(b"k", NOW, |it| it.value.len()).1, Some(964));
}

#[test]
fn too_large_and_set_removes_stale_item() {
    let mut c = cfg(1 << 20, 4);
    c.item_size_max = 1024;
    let s = store_with(c);
    assert_eq!(
        s.store(StoreCmd::Set, b"k", 0, 0, &[b'a'; 964], 0, NOW),
        StoreOutcome::Stored
    );
    assert_eq!(
        s.store(StoreCmd::Set, b"k", 0, 0, &[b'a'; 965], 0, NOW),
        StoreOutcome::TooLarge
    );
    assert_eq!(
        get(&s, "k", NOW),
        None,
        "a too-large set drops the old value"
    );
    assert_eq!(
        s.store(StoreCmd::Set, b"k", 1, 0, &[b'a'; 961], 0, NOW),
        StoreOutcome::TooLarge
    );
    assert!(!s.remove(b"k"));
    set(&s, "z", "1", 0, NOW);
    assert!(s.remove(b"z"));
}

#[test]
fn out_of_memory_without_evictions() {
    let per = cost_of("k0", "v");
    let mut c = cfg(per * 3, 1);
    c.evictions = false;
    let s = store_with(c);
    for i in 0..3 {
        assert_eq!(set(&s, &format!("k{i}"), "v", 0, NOW), StoreOutcome::Stored);
    }
    assert_eq!(set(&s, "k3", "v", 0, NOW), StoreOutcome::OutOfMemory);
    assert_eq!(
        s.store(StoreCmd::Append, b"k0", 0, 0, &[b'x'; 200], 0, NOW),
        StoreOutcome::OutOfMemory
    );
    // Overwriting with the same size needs no new room.
    assert_eq!(set(&s, "k1", "w", 0, NOW), StoreOutcome::Stored);
    let st = s.stats(NOW);
    assert_eq!((st.curr_items, st.evictions), (3, 0));
    assert!(st.outofmemory >= 2);
    // A set that fails for memory removes the old value (memcached's process_update_cmd).
    assert_eq!(
        s.store(StoreCmd::Set, b"k2", 0, 0, &[b'x'; 300], 0, NOW),
        StoreOutcome::OutOfMemory
    );
    assert_eq!(get(&s, "k2", NOW), None);
    // Expired items are still reclaimed under -M.
    set(&s, "e", "v", 1, NOW);
    assert_eq!(set(&s, "k4", "v", 0, NOW + 2), StoreOutcome::Stored);
}

#[test]
fn eviction_crosses_shards() {
    let per = cost_of("key-0000", "value-0000");
    let s = store_with(cfg(per * 100, 16));
    for i in 0..1000 {
        let k = format!("key-{i:04}");
        assert_eq!(
            set(&s, &k, "value-0000", 0, NOW + i / 10),
            StoreOutcome::Stored
        );
        assert!(s.used_bytes() <= s.memory_limit());
    }
    let st = s.stats(NOW + 100);
    assert_eq!(st.curr_items + st.evictions, 1000);
    assert!(
        st.curr_items >= 90,
        "memory stays well used: {}",
        st.curr_items
    );
    // The most recent key is always present.
    assert!(get(&s, "key-0999", NOW + 100).is_some());
}

#[test]
fn lowering_the_memory_limit_evicts() {
    let per = cost_of("k00", "v");
    let s = store_with(cfg(per * 50, 8));
    for i in 0..50 {
        set(&s, &format!("k{i:02}"), "v", 0, NOW);
    }
    s.set_memory_limit(per * 10, NOW);
    assert!(s.used_bytes() <= per * 10);
    assert_eq!(s.stats(NOW).memory_limit, (per * 10) as u64);
}

/// xorshift64*: a seeded PRNG so failures reproduce (shared by the storage tests).
pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn accounting_never_exceeds_the_limit_in_a_random_workload() {
    for (seed, evictions, shards) in [
        (1u64, true, 1usize),
        (2, true, 8),
        (3, false, 4),
        (4, true, 64),
    ] {
        let mut c = cfg(40_000, shards);
        c.evictions = evictions;
        c.item_size_max = 8 * 1024;
        let s = store_with(c);
        let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut now = NOW;
        let val = vec![b'7'; 4096];
        for step in 0..20_000 {
            if r.below(50) == 0 {
                now += 1;
            }
            let k = format!("k{}", r.below(400));
            let key = k.as_bytes();
            let len = match r.below(10) {
                0 => r.below(4096) as usize,
                1..=3 => r.below(300) as usize,
                _ => r.below(40) as usize,
            };
            let v = &val[..len];
            let exp = match r.below(5) {
                0 => r.below(20) as i32,
                1 => -1,
                _ => 0,
            };
            match r.below(14) {
                0..=3 => {
                    s.store(StoreCmd::Set, key, 0, exp, v, 0, now);
                }
                4 => {
                    s.store(StoreCmd::Add, key, 0, exp, v, 0, now);
                }
                5 => {
                    s.store(StoreCmd::Append, key, 0, exp, v, 0, now);
                }
                6 => {
                    s.store(StoreCmd::Prepend, key, 0, exp, v, 0, now);
                }
                7 => {
                    let c = s.get(key, now, |it| it.cas).1.unwrap_or(0);
                    s.store(StoreCmd::Cas, key, 0, exp, v, c, now);
                }
                8 => {
                    s.arith(key, r.below(2) == 0, r.below(1000), now);
                }
                9 => {
                    s.delete(key, now);
                }
                10 => {
                    s.touch(key, exp, now);
                }
                11 => {
                    if r.below(100) == 0 {
                        s.flush_all(r.below(3) as i32, now);
                    } else {
                        s.reap(now);
                    }
                }
                _ => {
                    s.get(key, now, |it| it.value.len());
                }
            }
            let used = s.used_bytes();
            assert!(used <= 40_000, "seed {seed} step {step}: {used} > limit");
            if step % 1000 == 0 {
                let st = s.stats(now);
                assert_eq!(st.bytes as usize, used, "seed {seed} step {step}");
            }
        }
        let st = s.stats(now);
        assert_eq!(st.bytes as usize, s.used_bytes());
        if evictions {
            assert!(
                st.evictions > 0,
                "seed {seed}: the workload should fill memory"
            );
        }
    }
}

#[test]
fn concurrent_writers_respect_the_limit() {
    let s = Arc::new(store_with(cfg(200_000, 16)));
    let mut hs = Vec::new();
    for t in 0..4u64 {
        let s = s.clone();
        hs.push(std::thread::spawn(move || {
            let mut r = Rng(t + 11);
            for _ in 0..20_000 {
                let k = format!("k{}", r.below(5000));
                let v = vec![b'1'; r.below(200) as usize];
                s.store(StoreCmd::Set, k.as_bytes(), 0, 0, &v, 0, NOW);
                s.arith(k.as_bytes(), true, 1, NOW);
                assert!(s.used_bytes() <= 200_000);
            }
        }));
    }
    for h in hs {
        assert!(h.join().is_ok());
    }
    let st = s.stats(NOW);
    assert_eq!(st.bytes as usize, s.used_bytes());
    assert!(st.evictions > 0);
}

#[derive(Default)]
struct Recorder {
    keys: Mutex<Vec<Vec<u8>>>,
    flushes: Mutex<Vec<FlushState>>,
}
impl ChangeSink for Recorder {
    fn changed(&self, key: &[u8], _state: Option<&StateRef>) {
        if let Ok(mut k) = self.keys.lock() {
            k.push(key.to_vec());
        }
    }
    fn flushed(&self, st: FlushState) {
        if let Ok(mut f) = self.flushes.lock() {
            f.push(st);
        }
    }
}

#[test]
fn change_sink_sees_mutations_but_not_evictions_or_expiry() {
    let rec = Arc::new(Recorder::default());
    let per = cost_of("a", "1");
    let s = store_with(cfg(per * 2, 1)).with_change_sink(rec.clone());
    set(&s, "a", "1", 0, NOW); // a
    s.store(StoreCmd::Add, b"a", 0, 0, b"1", 0, NOW); // not stored: no event
    s.arith(b"a", true, 1, NOW); // a
    s.touch(b"a", 0, NOW); // a
    s.get_and_touch(b"a", 0, NOW, |_| ()); // a
    get(&s, "a", NOW); // reads: no event
    set(&s, "b", "1", 1, NOW); // b
    set(&s, "c", "1", 0, NOW); // c (evicts/reclaims silently)
    get(&s, "b", NOW + 5); // expired: no event
    s.delete(b"c", NOW); // c
    s.delete(b"zz", NOW); // miss: no event
    s.flush_all(0, NOW);
    let keys = rec.keys.lock().map(|k| k.clone()).unwrap_or_default();
    let want: Vec<&[u8]> = vec![b"a", b"a", b"a", b"a", b"b", b"c", b"c"];
    assert_eq!(keys, want.iter().map(|k| k.to_vec()).collect::<Vec<_>>());
    let flushes = rec.flushes.lock().map(|f| f.clone()).unwrap_or_default();
    assert_eq!(flushes.len(), 1);
    assert_eq!(flushes[0].oldest_live, NOW - 1);
    assert_ne!(flushes[0].oldest_version, 0);
}

#[test]
fn visit_walks_every_live_item_in_bounded_steps() {
    let s = store_with(cfg(1 << 20, 4));
    for i in 0..50 {
        set(&s, &format!("k{i}"), "v", 0, NOW);
    }
    set(&s, "dead", "v", -1, NOW);
    let mut seen = Vec::new();
    for sh in 0..s.shard_count() {
        let mut cur = Some(0);
        while let Some(c) = cur {
            cur = s.visit(sh, c, 3, NOW, |it| seen.push(it.key.to_vec()));
        }
    }
    seen.sort();
    assert_eq!(seen.len(), 50);
    assert!(!seen.contains(&b"dead".to_vec()));
}

#[test]
fn versions_use_the_injected_clock() {
    let (t, clock) = clock_at(NOW);
    let s = Store::new(cfg(1 << 20, 2)).with_clock(clock);
    set(&s, "a", "1", 0, NOW);
    let v = s.get(b"a", NOW, |it| it.version).1.unwrap_or(0);
    assert_eq!(hlc::unix_ms_of(v), u64::from(NOW) * 1000);
    assert_eq!(hlc::node_of(v), 1);
    t.store(u64::from(NOW) * 1_000_000 - 60_000_000, Ordering::SeqCst); // clock steps back
    set(&s, "a", "2", 0, NOW);
    let v2 = s.get(b"a", NOW, |it| it.version).1.unwrap_or(0);
    assert!(v2 > v);
    assert!(u64::from(NOW) * 1000 > EPOCH_UNIX_MS);
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Bytes per item at 1M items of 32-byte keys and 100-byte values, by the accounting and by
/// RSS. Run: cargo test --release --lib bytes_per_item -- --ignored --nocapture
#[test]
#[ignore]
fn bytes_per_item_measurement() {
    let n = 1_000_000u32;
    let before = rss_bytes();
    let s = store_with(cfg(1 << 30, 256));
    let value = [b'v'; 100];
    for i in 0..n {
        let k = format!("key:{i:028}");
        assert_eq!(k.len(), 32);
        assert_eq!(
            s.store(StoreCmd::Set, k.as_bytes(), 0, 0, &value, 0, NOW),
            StoreOutcome::Stored
        );
    }
    let after = rss_bytes();
    let st = s.stats(NOW);
    assert_eq!(st.curr_items, u64::from(n));
    println!(
        "items={} accounted={} B ({:.1} B/item) rss_delta={} B ({:.1} B/item) rss_total={} B ({:.1} B/item)",
        n,
        st.bytes,
        st.bytes as f64 / f64::from(n),
        after - before,
        (after - before) as f64 / f64::from(n),
        after,
        after as f64 / f64::from(n)
    );
}

/// What the sink was told about a change: key, version, replicated bits, value (None for
/// a tombstone).
type Told = (Vec<u8>, u64, u8, Option<Vec<u8>>);

#[derive(Default)]
struct StateRecorder {
    seen: Mutex<Vec<Told>>,
}
impl StateRecorder {
    /// A replicated store with `shards` shards that tells this recorder of its changes.
    fn store(shards: usize) -> (Store, Arc<StateRecorder>) {
        let rec = Arc::new(StateRecorder::default());
        let s = store_with(cfg(1 << 20, shards))
            .replicated()
            .with_change_sink(rec.clone());
        (s, rec)
    }

    fn told(&self) -> Vec<Told> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl ChangeSink for StateRecorder {
    fn changed(&self, key: &[u8], state: Option<&StateRef>) {
        let rec = match state {
            Some(StateRef::Live(it)) => (
                key.to_vec(),
                it.version,
                it.repl_bits,
                Some(it.value.to_vec()),
            ),
            Some(StateRef::Tombstone { version, .. }) => (key.to_vec(), *version, 0, None),
            None => (key.to_vec(), 0, 0, None),
        };
        if let Ok(mut s) = self.seen.lock() {
            s.push(rec);
        }
    }
}

#[test]
fn change_sink_gets_each_change_complete() {
    let (s, rec) = StateRecorder::store(2);
    // The binary-key bit is set after the item is linked: the sink must see it.
    let opts = WriteOpts {
        key_binary: true,
        ..WriteOpts::default()
    };
    let (out, cas) = s.store_with(StoreCmd::Set, b"k", 0, 0, b"v1", 0, NOW, &opts);
    assert_eq!(out, StoreOutcome::Stored);
    assert!(s.delete(b"k", NOW));
    let seen = rec.told();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, b"k");
    assert_eq!(seen[0].1, cas, "the version the client was shown");
    assert_eq!(seen[0].2 & shard::BIT_KEY_BINARY, shard::BIT_KEY_BINARY);
    assert_eq!(seen[0].3.as_deref(), Some(&b"v1"[..]));
    assert!(
        seen[1].1 > cas,
        "the deletion's tombstone orders after the item"
    );
    assert_eq!(seen[1].3, None);
}

#[test]
fn a_long_value_reaches_the_sink_and_the_store_whole() {
    let (s, rec) = StateRecorder::store(2);
    let opts = WriteOpts::default();
    // Streamed (>= 1 KiB), around the streaming threshold, and short.
    for len in [5000usize, 4096, 1024, 1023, 100] {
        let v: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let (out, cas) = s.store_with(StoreCmd::Set, b"k", 0, 0, &v, 0, NOW, &opts);
        assert_eq!(out, StoreOutcome::Stored);
        let seen = rec.told();
        let last = seen.last().cloned();
        assert_eq!(
            last,
            Some((b"k".to_vec(), cas, 0, Some(v.clone()))),
            "{len} bytes"
        );
        let stored = s.get(b"k", NOW, |it| it.value.to_vec()).1;
        assert_eq!(stored, Some(v), "{len} bytes");
    }
    // Appends build their item from two parts: reported from the item.
    s.store_with(StoreCmd::Append, b"k", 0, 0, &[9u8; 2000], 0, NOW, &opts);
    let seen = rec.told();
    let value = seen.last().and_then(|t| t.3.clone()).unwrap_or_default();
    assert_eq!(value.len(), 2100);
    assert_eq!(&value[100..], &[9u8; 2000][..]);
}

#[test]
fn a_note_whose_slot_hint_went_stale_reports_the_key_found_by_lookup() {
    let (s, rec) = StateRecorder::store(1);
    let opts = WriteOpts::default();
    s.store_with(StoreCmd::Set, b"a", 0, 0, b"va", 0, NOW, &opts);
    s.store_with(StoreCmd::Set, b"b", 0, 0, b"vb", 0, NOW, &opts);
    let before = rec.told().len();
    let (hash, si) = s.hash(b"a");
    {
        let mut g = s.shard(si);
        let sh: &mut shard::Shard = &mut g;
        let b_slot = sh.find(s.hash(b"b").0, b"b").expect("b is stored");
        // As if "a" had been linked into b's slot and moved again under the same lock.
        sh.note(hash, b"a", b_slot);
        sh.note(hash, b"a", shard::NIL);
    }
    let seen = rec.told();
    let told: Vec<_> = seen[before..]
        .iter()
        .map(|t| (t.0.clone(), t.3.clone()))
        .collect();
    let a = (b"a".to_vec(), Some(b"va".to_vec()));
    assert_eq!(told, vec![a.clone(), a], "never b's state under a's key");
}

#[test]
fn prefetch_is_only_a_hint() {
    // One shard, full: a prefetch that counted as an access would save its keys from
    // eviction, and one that changed any state would show in the stats or the values.
    let per = cost_of("k00", "vvvvvvvvvv");
    let s = store_with(cfg(per * 10, 1));
    assert_eq!(set(&s, "gone", "x", 0, NOW), StoreOutcome::Stored);
    assert!(s.delete(b"gone", NOW));
    set_numbered(&s, 0..10, NOW, true);
    assert_eq!(s.stats(NOW).evictions, 0);
    let snapshot = |s: &Store| {
        let st = s.stats(NOW);
        (
            gets(s, "k05", NOW),
            st.curr_items,
            st.total_items,
            st.bytes,
            st.mem_requested,
        )
    };
    let before = snapshot(&s);
    // Present, absent, deleted and repeated keys, and more keys than one prefetch takes.
    let names: Vec<String> = (0..PREFETCH_MAX + 8)
        .map(|i| format!("k{:02}", i % 14))
        .chain(["gone".into(), String::new()])
        .collect();
    let keys: Vec<&[u8]> = names.iter().map(|k| k.as_bytes()).collect();
    s.prefetch(&keys);
    s.prefetch(&[]);
    assert_eq!(snapshot(&s), before);
    set_numbered(&s, 10..13, NOW + 30, false);
    // Still strict LRU: k00..k02 went first; k05 was read, so k03, k04 and k06 follow it.
    assert_evicted(&s, 0..3, NOW + 31);
    assert_eq!(s.stats(NOW + 31).evictions, 3);
}
