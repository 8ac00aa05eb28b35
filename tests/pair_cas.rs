//! CAS across the pair: the version is the CAS value, so a token read on one node is valid on
//! the other, and once it has been used it is stale on both.

mod common;

use common::cmd;
use common::pair::{gets, Pair, SETTLE_WITHIN};

#[test]
fn a_token_from_one_node_works_once_on_the_other() {
    let p = Pair::start(&[]);
    let (mut ca, mut cb) = (p.a.connect(), p.b.connect());
    assert_eq!(cmd(&mut ca, "set k 1 0 2\r\nv1\r\n"), "STORED\r\n");
    p.assert_converged(SETTLE_WITHIN);

    let on_a = gets(&mut ca, "k").expect("k on A");
    let on_b = gets(&mut cb, "k").expect("k on B");
    assert_eq!(on_a, on_b, "gets differs between the nodes");
    let token = on_a.cas;

    assert_eq!(
        cmd(&mut cb, &format!("cas k 2 0 2 {token}\r\nv2\r\n")),
        "STORED\r\n",
        "a token read on A was refused on B"
    );
    p.assert_converged(SETTLE_WITHIN);
    let (na, nb) = (gets(&mut ca, "k"), gets(&mut cb, "k"));
    assert_eq!(na, nb);
    let now = na.expect("k after cas");
    assert_eq!((now.flags, &now.value[..]), (2, &b"v2"[..]));
    assert_ne!(now.cas, token, "a successful cas must change the version");

    // The old token is stale everywhere now.
    for (name, c) in [("B", &mut cb), ("A", &mut ca)] {
        assert_eq!(
            cmd(c, &format!("cas k 3 0 2 {token}\r\nv3\r\n")),
            "EXISTS\r\n",
            "stale token accepted on {name}"
        );
    }
    // The fresh token works once, on the node that did not perform the cas.
    assert_eq!(
        cmd(&mut ca, &format!("cas k 4 0 2 {}\r\nv4\r\n", now.cas)),
        "STORED\r\n"
    );
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(
        cmd(&mut cb, &format!("cas k 5 0 2 {}\r\nv5\r\n", now.cas)),
        "EXISTS\r\n"
    );
    let (fa, fb) = (gets(&mut ca, "k"), gets(&mut cb, "k"));
    assert_eq!(fa, fb);
    assert_eq!(fa.map(|g| g.value), Some(b"v4".to_vec()));
    // A key deleted on the other node: NOT_FOUND, not EXISTS.
    assert_eq!(cmd(&mut cb, "delete k\r\n"), "DELETED\r\n");
    p.assert_converged(SETTLE_WITHIN);
    assert_eq!(
        cmd(&mut ca, &format!("cas k 6 0 2 {}\r\nv6\r\n", now.cas)),
        "NOT_FOUND\r\n"
    );
}
