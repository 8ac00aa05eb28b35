//! Concurrent writers on both nodes hammering the same keys: once they stop and the link has
//! caught up, both nodes hold the same value at the same version for every key.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::cmd;
use common::pair::{digest, snapshot, Node, Pair, SETTLE_WITHIN};

const KEYS: usize = 50;
const HAMMER_FOR: Duration = Duration::from_secs(2);

/// One client thread writing `KEYS` keys in a mixed pattern on `node` for `HAMMER_FOR`.
fn hammer(
    node: &Node,
    tag: &'static str,
    seed: u64,
    ops: Arc<AtomicU64>,
) -> thread::JoinHandle<()> {
    let mut c = node.connect();
    thread::spawn(move || {
        let until = Instant::now() + HAMMER_FOR;
        let mut x = seed;
        let mut n = 0u64;
        while Instant::now() < until {
            // xorshift: a cheap, seeded spread over keys and operations.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = (x % KEYS as u64) as usize;
            let r = match (x >> 32) % 8 {
                0..=3 => {
                    let v = format!("{tag}{n}");
                    cmd(
                        &mut c,
                        &format!("set key{k} {} 0 {}\r\n{v}\r\n", seed % 1000, v.len()),
                    )
                }
                4 => cmd(&mut c, &format!("append key{k} 0 0 1\r\n{}\r\n", &tag[..1])),
                5 => cmd(&mut c, &format!("delete key{k}\r\n")),
                6 => cmd(&mut c, &format!("incr num{k} 1\r\n")),
                _ => cmd(&mut c, &format!("set num{k} 0 0 1\r\n{}\r\n", n % 10)),
            };
            assert!(!r.contains("ERROR"), "{tag}: {r:?}");
            n += 1;
        }
        ops.fetch_add(n, Ordering::Relaxed);
    })
}

#[test]
fn same_keys_written_on_both_nodes_converge() {
    let p = Pair::start(&[]);
    let ops = Arc::new(AtomicU64::new(0));
    let writers = [
        hammer(&p.a, "aaaa", 0x9e37_79b9_7f4a_7c15, Arc::clone(&ops)),
        hammer(&p.a, "AAAA", 0x6a09_e667_f3bc_c908, Arc::clone(&ops)),
        hammer(&p.b, "bbbb", 0xbb67_ae85_84ca_a73b, Arc::clone(&ops)),
        hammer(&p.b, "BBBB", 0x3c6e_f372_fe94_f82b, Arc::clone(&ops)),
    ];
    for w in writers {
        w.join().expect("writer");
    }
    assert!(
        ops.load(Ordering::Relaxed) > 1000,
        "too few writes to mean anything"
    );
    p.assert_converged(SETTLE_WITHIN);
    let keys: Vec<String> = (0..KEYS)
        .flat_map(|k| [format!("key{k}"), format!("num{k}")])
        .collect();
    let (sa, sb) = (snapshot(&p.a, &keys), snapshot(&p.b, &keys));
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(sa[i], sb[i], "{k} differs between the nodes");
    }
    let (da, db) = (digest(&p.a), digest(&p.b));
    assert_eq!(da, db);
    assert_eq!(
        da.0,
        sa.iter().filter(|g| g.is_some()).count() as u64,
        "digest counts items the snapshot does not show"
    );
    eprintln!("{} ops, {} live keys", ops.load(Ordering::Relaxed), da.0);
}
