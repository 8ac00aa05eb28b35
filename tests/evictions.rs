//! Memory limit: with a small -m, filling past it evicts the oldest items (and counts them);
//! with -M the server refuses new items with SERVER_ERROR out of memory instead.

mod common;

use common::{assert_bytes, stat_u64, Conn, Server};

const VALUE_LEN: usize = 1000;

/// Stores `n` keys `key0..` with 1000-byte values, pipelined in batches; returns each reply line.
fn fill(c: &mut Conn, n: usize) -> Vec<Vec<u8>> {
    let value = vec![b'v'; VALUE_LEN];
    let mut replies = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let mut req = Vec::new();
        for i in chunk {
            req.extend_from_slice(format!("set key{i} 0 0 {VALUE_LEN}\r\n").as_bytes());
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
        }
        c.send(&req);
        for _ in chunk {
            replies.push(c.read_line());
        }
    }
    replies
}

fn present(c: &mut Conn, i: usize) -> bool {
    c.request(format!("get key{i}\r\n").as_bytes())
        .starts_with(b"VALUE ")
}

#[test]
fn filling_past_the_limit_evicts_the_oldest_items() {
    let s = Server::start(&["-m", "4"]);
    let mut c = s.connect();
    // About 10 MB of items into a 4 MB cache.
    let n = 10_000;
    for (i, r) in fill(&mut c, n).iter().enumerate() {
        assert_bytes(r, b"STORED\r\n");
        let _ = i;
    }
    let st = s.stats("");
    let evictions = stat_u64(&st, "evictions");
    assert!(
        evictions > 0,
        "no evictions after storing {n} items in 4 MB"
    );
    let curr = stat_u64(&st, "curr_items");
    assert!(curr < n as u64, "all {n} items still resident");
    assert_eq!(stat_u64(&st, "total_items"), n as u64);
    assert!(stat_u64(&st, "bytes") <= 4 * 1024 * 1024, "bytes over -m");
    // Oldest gone, most recent present.
    assert!(!present(&mut c, 0), "the first key survived");
    assert!(!present(&mut c, 1), "the second key survived");
    for i in n - 50..n {
        assert!(present(&mut c, i), "recent key{i} was evicted");
    }
    // Evictions keep counting as we write more.
    fill(&mut c, 2000);
    assert!(stat_u64(&s.stats(""), "evictions") > evictions);
}

#[test]
fn disabled_evictions_give_out_of_memory() {
    let s = Server::start(&["-m", "4", "-M"]);
    let mut c = s.connect();
    let replies = fill(&mut c, 10_000);
    let oom = b"SERVER_ERROR out of memory storing object\r\n";
    let first_oom = replies
        .iter()
        .position(|r| r.as_slice() == oom)
        .unwrap_or_else(|| panic!("no out-of-memory reply: last was {:?}", replies.last()));
    assert!(
        first_oom > 100,
        "memory ran out after only {first_oom} items"
    );
    for r in &replies[..first_oom] {
        assert_bytes(r, b"STORED\r\n");
    }
    // The data of refused items was swallowed: the connection is still in sync.
    assert_bytes(
        &c.request(b"get key0\r\n"),
        &common::value_reply("key0", 0, &[b'v'; VALUE_LEN]),
    );
    let st = s.stats("");
    assert_eq!(stat_u64(&st, "evictions"), 0);
    assert!(stat_u64(&st, "store_no_memory") > 0);
    assert_eq!(
        s.stats("settings").get("evictions").map(String::as_str),
        Some("off")
    );
}

/// Stores `count` large items of pseudo-random sizes (1,100 to 12,000 bytes) under keys
/// `big0..big{keys}`, pipelined; each overwrite usually changes the item's size.
fn churn_large(c: &mut Conn, count: usize, keys: usize, seed: u64) {
    let mut x = seed;
    let data = vec![b'd'; 12_000];
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let mut req = Vec::new();
        for _ in chunk {
            // A 64-bit LCG: deterministic, and enough to spread keys and sizes.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (x >> 33) as usize % keys;
            let len = 1_100 + (x >> 17) as usize % 10_900;
            req.extend_from_slice(format!("set big{key} 0 0 {len}\r\n").as_bytes());
            req.extend_from_slice(&data[..len]);
            req.extend_from_slice(b"\r\n");
        }
        c.send(&req);
        for _ in chunk {
            assert_bytes(&c.read_line(), b"STORED\r\n");
        }
    }
}

#[test]
fn churning_large_items_of_mixed_sizes_keeps_memory_near_the_limit() {
    let s = Server::start(&["-m", "16"]);
    let mut c = s.connect();
    let empty = s.rss_kib().unwrap_or(0);
    // About 100 MB of items of sizes that keep changing, into a 16 MB cache.
    churn_large(&mut c, 15_000, 4_000, 1);
    let full = s.rss_kib().unwrap_or(0);
    eprintln!("rss empty {empty} KiB, after churn {full} KiB");
    assert!(
        stat_u64(&s.stats(""), "evictions") > 0,
        "the churn never filled the cache"
    );
    // Freed buffers are reused whatever their size: memory stays within a few times -m.
    assert!(
        full < empty + 64 * 1024,
        "RSS {full} KiB after churning a 16 MB cache"
    );
    // A flush and as much again: the memory the first round left is reused, not added to.
    assert_bytes(&c.request(b"flush_all\r\n"), b"OK\r\n");
    churn_large(&mut c, 15_000, 4_000, 2);
    let again = s.rss_kib().unwrap_or(0);
    eprintln!("rss after flush and churn {again} KiB");
    assert!(
        again < full + 8 * 1024,
        "RSS grew from {full} to {again} KiB"
    );
}
