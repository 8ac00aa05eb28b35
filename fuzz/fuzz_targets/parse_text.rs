//! Fuzz target: the text parser (classic and meta commands) on arbitrary bytes must never panic and must keep
//! its contract (bounded `consumed`, valid keys, results that depend only on the bytes
//! they consumed, incomplete strict prefixes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use repcached::protocol::text::{keys, parse, Parsed, KEY_MAX_LENGTH};
use repcached::protocol::{ParseLimits, Request};

fn check_key(k: &[u8]) {
    assert!((1..=KEY_MAX_LENGTH).contains(&k.len()), "key length {}", k.len());
    assert!(!k.iter().any(|&b| b == b' ' || b == b'\n' || b == 0), "{k:?}");
}

fn check(buf: &[u8], limits: &ParseLimits) {
    let Parsed::Complete { req, consumed } = parse(buf, limits) else {
        return;
    };
    assert!(consumed > 0 && consumed <= buf.len());
    match &req {
        Request::Get { keys: list, .. } | Request::GetKeyTooLong { keys: list, .. } => {
            keys(list).for_each(check_key);
            assert!(!list.contains(&b'\n') && !list.contains(&0));
        }
        Request::Store { key, value, .. } => {
            check_key(key);
            assert!(consumed >= value.len() + 2);
        }
        Request::StoreTooLarge { key, swallow, .. } => {
            check_key(key);
            assert!(*swallow >= 2);
        }
        Request::Delete { key, .. } | Request::Arith { key, .. } | Request::Touch { key, .. } => {
            check_key(key)
        }
        Request::Meta(m) => {
            check_key(m.key);
            assert!(!m.tokens.contains(&b'\n') && !m.tokens.contains(&0));
            if m.flags.base64 {
                let mut out = [0u8; KEY_MAX_LENGTH];
                assert!(repcached::protocol::meta::decode_key(m.key, &mut out).is_some());
            }
        }
        Request::ReplySwallow { swallow, .. } | Request::MetaTooLarge { swallow, .. } => {
            assert!(*swallow >= 2);
        }
        Request::Close if !buf.contains(&b'\n') => {
            assert!(buf.len() > 2048 && consumed == buf.len());
            return;
        }
        _ => {}
    }
    assert_eq!(parse(&buf[..consumed], limits), parse(buf, limits));
    if consumed <= 2048 {
        for cut in 0..consumed {
            assert_eq!(parse(&buf[..cut], limits), Parsed::Incomplete);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits so both CAS settings and a tiny -I get explored.
    let Some((&sel, buf)) = data.split_first() else {
        return;
    };
    let limits = ParseLimits {
        item_size_max: if sel & 1 == 0 { 1024 * 1024 } else { 1024 },
        cas_enabled: sel & 2 == 0,
    };
    // Walk the buffer as a connection would, checking every request on the way.
    let mut off = 0;
    while let Some(rest) = buf.get(off..) {
        check(rest, &limits);
        match parse(rest, &limits) {
            Parsed::Complete { req, consumed } => {
                off += consumed;
                if req == Request::Close {
                    break;
                }
            }
            Parsed::Incomplete => break,
        }
    }
});
