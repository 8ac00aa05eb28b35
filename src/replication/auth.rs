//! Peer authentication: each side proves it knows the shared secret with HMAC-SHA256 over
//! both run ids and both connection nonces, so a proof is bound to one connection and
//! cannot be replayed on another.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::protocol::repl::{NONCE_LEN, PROOF_LEN};

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: a proof for this protocol is never valid for anything else.
const LABEL: &[u8] = b"repcached peer auth v1";

/// One side of a connection as the proof sees it.
#[derive(Clone, Copy, Debug)]
pub struct Side {
    pub run_id: u64,
    pub nonce: [u8; NONCE_LEN],
}

fn mac(secret: &[u8], from: Side, to: Side) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    m.update(LABEL);
    m.update(&from.run_id.to_be_bytes());
    m.update(&to.run_id.to_be_bytes());
    m.update(&from.nonce);
    m.update(&to.nonce);
    m
}

/// The proof `from` sends to `to`.
pub fn proof(secret: &[u8], from: Side, to: Side) -> [u8; PROOF_LEN] {
    let mut out = [0u8; PROOF_LEN];
    out.copy_from_slice(&mac(secret, from, to).finalize().into_bytes());
    out
}

/// Checks a proof received from `from` (in constant time).
pub fn verify(secret: &[u8], from: Side, to: Side, got: &[u8; PROOF_LEN]) -> bool {
    mac(secret, from, to).verify_slice(got).is_ok()
}

/// A fresh random nonce from the kernel.
pub fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    let mut filled = 0;
    while filled < NONCE_LEN {
        let rest = &mut n[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into the buffer we own.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if got > 0 {
            filled += got as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // No kernel randomness at all: fall back to a hashed clock and pid, which is
            // still unique per connection (nonces must not repeat; secrecy is the secret's).
            let t = crate::clock::wall_ms() ^ (u64::from(std::process::id()) << 32);
            n[..8].copy_from_slice(&t.to_be_bytes());
            break;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(run: u64, b: u8) -> Side {
        Side {
            run_id: run,
            nonce: [b; NONCE_LEN],
        }
    }

    #[test]
    fn a_proof_verifies_only_with_its_secret_sides_and_direction() {
        let (a, b) = (side(1, 0xaa), side(2, 0xbb));
        let p = proof(b"s3cret", a, b);
        assert!(verify(b"s3cret", a, b, &p));
        assert!(!verify(b"other", a, b, &p), "wrong secret");
        assert!(!verify(b"s3cret", b, a, &p), "reflected back to its sender");
        // Replayed on another connection: the receiver's fresh nonce differs.
        assert!(!verify(b"s3cret", a, side(2, 0xcc), &p));
        assert!(!verify(b"s3cret", side(3, 0xaa), b, &p), "another run");
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
    }
}
