//! The peer-link wire format: length-prefixed binary frames, encoded into and decoded from
//! byte slices. Nothing on this link can be mistaken for a client command: every frame
//! starts with a big-endian length that a text line would make absurdly large.

use std::fmt;

/// Identifies the protocol in the first frame of every connection.
pub const MAGIC: [u8; 4] = *b"RPCD";
/// Bumped on any incompatible change of the frames below.
pub const PROTOCOL_VERSION: u8 = 3;
/// Bytes of the length prefix.
const LEN: usize = 4;
/// The largest frame accepted: the largest item (`-I` is at most 1 GiB) plus headroom for
/// its header and key. Anything longer is corruption or a stranger, not a peer.
pub const MAX_FRAME: usize = (1 << 30) + 4096;

const T_HELLO: u8 = 1;
const T_STATE: u8 = 2;
const T_TOMBSTONE: u8 = 3;
const T_FLUSH: u8 = 4;
const T_HEARTBEAT: u8 = 5;
const T_BOOTSTRAP_REQ: u8 = 6;
const T_BOOTSTRAP_END: u8 = 7;
const T_BOOTSTRAP_BEGIN: u8 = 8;
const T_AUTH: u8 = 9;
const T_ACK: u8 = 10;
const T_COUNTER: u8 = 11;
/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of an authentication proof (HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
const HELLO_BOOTSTRAP: u8 = 1;
const HELLO_AUTH: u8 = 2;

/// One frame, borrowing its variable parts from the buffer it was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// First frame in each direction.
    Hello {
        version: u8,
        node_id: u8,
        /// New at every process start: tells a restarted peer from a reconnecting one.
        run_id: u64,
        /// The sender starts empty and asks for a full copy.
        wants_bootstrap: bool,
        /// The sender has a shared secret and will prove it (an Auth frame follows).
        auth: bool,
        /// Fresh per connection: the peer's proof must cover it, so no proof replays.
        nonce: [u8; NONCE_LEN],
        cluster: &'a [u8],
    },
    /// The current state of a live item. On the wire it is a State frame, or a Counter
    /// frame when the item carries a counter.
    State {
        version: u64,
        flags: u32,
        /// Absolute unix seconds; 0 = never.
        exptime: u32,
        /// Item state bits that belong to the value: stale (meta `I`), binary key (`b`).
        meta: u8,
        key: &'a [u8],
        /// An item incremented in a pair: base version, base value, floor and per-node
        /// totals (`storage::counter_encoding_valid`'s encoding; a frame with another is
        /// malformed).
        counter: Option<&'a [u8]>,
        value: &'a [u8],
    },
    /// A deleted key: no state older than `version` may bring it back.
    Tombstone { version: u64, key: &'a [u8] },
    /// `flush_all`: items older than `watermark` disappear once `at` (unix seconds, 0 = at
    /// once) has come.
    Flush { watermark: u64, at: u32 },
    /// Liveness, plus the sender's clocks for lag and skew reporting.
    Heartbeat {
        wall_ms: u64,
        hlc: u64,
        pending: u64,
    },
    /// Asks the receiver for a full copy of its data.
    BootstrapReq,
    /// Ends a full copy of `items` states.
    BootstrapEnd { items: u64 },
    /// Starts a full copy of about `items` states (the receiver sizes its tables).
    BootstrapBegin { items: u64 },
    /// Proof of the shared secret: HMAC-SHA256 over both run ids and both nonces.
    Auth { proof: [u8; PROOF_LEN] },
    /// The receiver has applied the first `received` data frames (State, Tombstone, Flush)
    /// of this link: the sender may forget the keys behind them.
    Ack { received: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is zero or larger than [`MAX_FRAME`].
    BadLength(usize),
    UnknownType(u8),
    /// The body is shorter or longer than its type requires, or a field is invalid.
    Malformed(u8),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadLength(n) => write!(f, "bad frame length {n}"),
            FrameError::UnknownType(t) => write!(f, "unknown frame type {t}"),
            FrameError::Malformed(t) => write!(f, "malformed frame of type {t}"),
        }
    }
}

/// Reads fixed-width fields from a frame body, failing instead of panicking on a short one.
struct Reader<'a> {
    buf: &'a [u8],
    ty: u8,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Malformed(self.ty));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn key(&mut self) -> Result<&'a [u8], FrameError> {
        let n = usize::from(self.u8()?);
        if n == 0 {
            return Err(FrameError::Malformed(self.ty));
        }
        self.take(n)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    fn end(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Malformed(self.ty))
        }
    }
}

/// Decodes the first frame of `buf`: `Ok(None)` when more bytes are needed, otherwise the
/// frame and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    if buf.len() < LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(FrameError::BadLength(len));
    }
    let Some(body) = buf.get(LEN..LEN + len) else {
        return Ok(None);
    };
    let ty = body[0];
    let mut r = Reader {
        buf: &body[1..],
        ty,
    };
    let frame = match ty {
        T_HELLO => {
            if r.take(4)? != MAGIC {
                return Err(FrameError::Malformed(ty));
            }
            let version = r.u8()?;
            let node_id = r.u8()?;
            let run_id = r.u64()?;
            let bits = r.u8()?;
            let mut nonce = [0u8; NONCE_LEN];
            nonce.copy_from_slice(r.take(NONCE_LEN)?);
            let n = usize::from(r.u8()?);
            let cluster = r.take(n)?;
            r.end()?;
            Frame::Hello {
                version,
                node_id,
                run_id,
                wants_bootstrap: bits & HELLO_BOOTSTRAP != 0,
                auth: bits & HELLO_AUTH != 0,
                nonce,
                cluster,
            }
        }
        T_STATE | T_COUNTER => {
            let version = r.u64()?;
            let flags = r.u32()?;
            let exptime = r.u32()?;
            let meta = r.u8()?;
            let key = r.key()?;
            let counter = if ty == T_COUNTER {
                let n = r.take(2)?;
                let counter = r.take(usize::from(u16::from_be_bytes([n[0], n[1]])))?;
                if !crate::storage::counter_encoding_valid(counter) {
                    return Err(FrameError::Malformed(ty));
                }
                Some(counter)
            } else {
                None
            };
            let value = r.rest();
            Frame::State {
                version,
                flags,
                exptime,
                meta,
                key,
                counter,
                value,
            }
        }
        T_TOMBSTONE => {
            let version = r.u64()?;
            let key = r.key()?;
            r.end()?;
            Frame::Tombstone { version, key }
        }
        T_FLUSH => {
            let watermark = r.u64()?;
            let at = r.u32()?;
            r.end()?;
            Frame::Flush { watermark, at }
        }
        T_HEARTBEAT => {
            let wall_ms = r.u64()?;
            let hlc = r.u64()?;
            let pending = r.u64()?;
            r.end()?;
            Frame::Heartbeat {
                wall_ms,
                hlc,
                pending,
            }
        }
        T_BOOTSTRAP_REQ => {
            r.end()?;
            Frame::BootstrapReq
        }
        T_BOOTSTRAP_END => {
            let items = r.u64()?;
            r.end()?;
            Frame::BootstrapEnd { items }
        }
        T_BOOTSTRAP_BEGIN => {
            let items = r.u64()?;
            r.end()?;
            Frame::BootstrapBegin { items }
        }
        T_ACK => {
            let received = r.u64()?;
            r.end()?;
            Frame::Ack { received }
        }
        T_AUTH => {
            let mut proof = [0u8; PROOF_LEN];
            proof.copy_from_slice(r.take(PROOF_LEN)?);
            r.end()?;
            Frame::Auth { proof }
        }
        other => return Err(FrameError::UnknownType(other)),
    };
    Ok(Some((frame, LEN + len)))
}

/// Appends the encoding of `frame` to `out`.
///
/// Panics only on a caller bug (a key longer than 255 bytes or a cluster name longer than
/// 255 bytes), never on data from the network: both are validated before they get here.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LEN]);
    match *frame {
        Frame::Hello {
            version,
            node_id,
            run_id,
            wants_bootstrap,
            auth,
            nonce,
            cluster,
        } => {
            out.push(T_HELLO);
            out.extend_from_slice(&MAGIC);
            out.push(version);
            out.push(node_id);
            out.extend_from_slice(&run_id.to_be_bytes());
            let mut bits = 0;
            if wants_bootstrap {
                bits |= HELLO_BOOTSTRAP;
            }
            if auth {
                bits |= HELLO_AUTH;
            }
            out.push(bits);
            out.extend_from_slice(&nonce);
            out.push(u8::try_from(cluster.len()).expect("cluster name validated to ≤255 bytes"));
            out.extend_from_slice(cluster);
        }
        Frame::State {
            version,
            flags,
            exptime,
            meta,
            key,
            counter,
            value,
        } => {
            out.push(if counter.is_some() {
                T_COUNTER
            } else {
                T_STATE
            });
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(&flags.to_be_bytes());
            out.extend_from_slice(&exptime.to_be_bytes());
            out.push(meta);
            push_key(out, key);
            if let Some(counter) = counter {
                // An encoding holds at most 255 entries: well under 64 KiB.
                let n = u16::try_from(counter.len()).expect("counter encodings are under 9 KiB");
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(counter);
            }
            out.extend_from_slice(value);
        }
        Frame::Tombstone { version, key } => {
            out.push(T_TOMBSTONE);
            out.extend_from_slice(&version.to_be_bytes());
            push_key(out, key);
        }
        Frame::Flush { watermark, at } => {
            out.push(T_FLUSH);
            out.extend_from_slice(&watermark.to_be_bytes());
            out.extend_from_slice(&at.to_be_bytes());
        }
        Frame::Heartbeat {
            wall_ms,
            hlc,
            pending,
        } => {
            out.push(T_HEARTBEAT);
            out.extend_from_slice(&wall_ms.to_be_bytes());
            out.extend_from_slice(&hlc.to_be_bytes());
            out.extend_from_slice(&pending.to_be_bytes());
        }
        Frame::BootstrapReq => out.push(T_BOOTSTRAP_REQ),
        Frame::BootstrapEnd { items } => {
            out.push(T_BOOTSTRAP_END);
            out.extend_from_slice(&items.to_be_bytes());
        }
        Frame::BootstrapBegin { items } => {
            out.push(T_BOOTSTRAP_BEGIN);
            out.extend_from_slice(&items.to_be_bytes());
        }
        Frame::Auth { proof } => {
            out.push(T_AUTH);
            out.extend_from_slice(&proof);
        }
        Frame::Ack { received } => {
            out.push(T_ACK);
            out.extend_from_slice(&received.to_be_bytes());
        }
    }
    let len = (out.len() - start - LEN) as u32;
    out[start..start + LEN].copy_from_slice(&len.to_be_bytes());
}

fn push_key(out: &mut Vec<u8>, key: &[u8]) {
    out.push(u8::try_from(key.len()).expect("keys are at most 250 bytes"));
    out.extend_from_slice(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter encoding with one entry (node 5, 2 up, 1 down) on base version 42 and
    /// base value 11.
    const COUNTER_SAMPLE: &[u8] = &[
        42, 0, 0, 0, 0, 0, 0, 0, // base version
        11, 0, 0, 0, 0, 0, 0, 0, // base value
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // floor
        5, // node
        2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // increments
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // decrements
        1, // entries
    ];

    #[test]
    fn a_counter_frame_with_a_bad_encoding_is_malformed() {
        let f = Frame::State {
            version: 1,
            flags: 0,
            exptime: 0,
            meta: 0,
            key: b"k",
            counter: Some(&COUNTER_SAMPLE[..COUNTER_SAMPLE.len() - 1]),
            value: b"1",
        };
        let mut buf = Vec::new();
        encode(&f, &mut buf);
        assert_eq!(decode(&buf), Err(FrameError::Malformed(T_COUNTER)));
        // A length field pointing past the frame.
        let mut buf = Vec::new();
        encode(
            &Frame::State {
                version: 1,
                flags: 0,
                exptime: 0,
                meta: 0,
                key: b"k",
                counter: Some(COUNTER_SAMPLE),
                value: b"",
            },
            &mut buf,
        );
        buf.truncate(buf.len() - 1);
        buf[3] -= 1;
        assert_eq!(decode(&buf), Err(FrameError::Malformed(T_COUNTER)));
    }

    fn samples() -> Vec<Frame<'static>> {
        vec![
            Frame::Hello {
                version: PROTOCOL_VERSION,
                node_id: 7,
                run_id: 0x0102_0304_0506_0708,
                wants_bootstrap: true,
                auth: true,
                nonce: [9; NONCE_LEN],
                cluster: b"prod",
            },
            Frame::State {
                version: 42,
                flags: 0xffff_ffff,
                exptime: 1_700_000_000,
                meta: 8,
                key: b"k",
                counter: None,
                value: b"v\r\n\0",
            },
            Frame::State {
                version: 1,
                flags: 0,
                exptime: 0,
                meta: 0,
                key: b"empty",
                counter: None,
                value: b"",
            },
            Frame::State {
                version: 43,
                flags: 3,
                exptime: 0,
                meta: 0,
                key: b"hits",
                counter: Some(COUNTER_SAMPLE),
                value: b"12 ",
            },
            Frame::Tombstone {
                version: u64::MAX,
                key: b"gone",
            },
            Frame::Flush {
                watermark: 99,
                at: 0,
            },
            Frame::Heartbeat {
                wall_ms: 5,
                hlc: 6,
                pending: 7,
            },
            Frame::BootstrapReq,
            Frame::BootstrapEnd { items: 200_000 },
            Frame::BootstrapBegin { items: 7 },
            Frame::Auth {
                proof: [3; PROOF_LEN],
            },
        ]
    }

    #[test]
    fn round_trips_every_frame_type() {
        for f in samples() {
            let mut buf = Vec::new();
            encode(&f, &mut buf);
            let (g, used) = decode(&buf).expect("valid").expect("complete");
            assert_eq!(g, f);
            assert_eq!(used, buf.len());
        }
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        for f in samples() {
            let mut buf = Vec::new();
            encode(&f, &mut buf);
            for n in 0..buf.len() {
                assert_eq!(decode(&buf[..n]), Ok(None), "prefix {n} of {f:?}");
            }
        }
    }

    #[test]
    fn concatenated_frames_decode_in_order() {
        let mut buf = Vec::new();
        for f in samples() {
            encode(&f, &mut buf);
        }
        let mut at = 0;
        for f in samples() {
            let (g, used) = decode(&buf[at..]).expect("valid").expect("complete");
            assert_eq!(g, f);
            at += used;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn rejects_corrupt_frames() {
        // A text command arriving on the peer port reads as an absurd length.
        assert!(matches!(
            decode(b"get foo\r\n"),
            Err(FrameError::BadLength(_))
        ));
        assert_eq!(decode(&[0, 0, 0, 0]), Err(FrameError::BadLength(0)));
        assert_eq!(decode(&[0, 0, 0, 1, 99]), Err(FrameError::UnknownType(99)));
        // A tombstone body one byte short.
        let mut buf = Vec::new();
        encode(
            &Frame::Tombstone {
                version: 1,
                key: b"ab",
            },
            &mut buf,
        );
        buf[3] -= 1;
        buf.pop();
        assert_eq!(decode(&buf), Err(FrameError::Malformed(T_TOMBSTONE)));
        // Trailing garbage after a fixed-size body.
        let mut buf = Vec::new();
        encode(
            &Frame::Flush {
                watermark: 1,
                at: 2,
            },
            &mut buf,
        );
        buf[3] += 1;
        buf.push(0);
        assert_eq!(decode(&buf), Err(FrameError::Malformed(T_FLUSH)));
        // A hello with the wrong magic.
        let mut buf = Vec::new();
        encode(&samples()[0], &mut buf);
        buf[5] ^= 0xff;
        assert_eq!(decode(&buf), Err(FrameError::Malformed(T_HELLO)));
        // A state with an empty key.
        let mut buf = Vec::new();
        encode(
            &Frame::State {
                version: 1,
                flags: 0,
                exptime: 0,
                meta: 0,
                key: b"k",
                counter: None,
                value: b"",
            },
            &mut buf,
        );
        buf[4 + 1 + 17] = 0;
        assert_eq!(decode(&buf), Err(FrameError::Malformed(T_STATE)));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut buf = Vec::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (x % 40) as usize;
            for i in 0..n {
                buf.push((x >> (i % 8 * 8)) as u8 ^ i as u8);
            }
            if let Ok(Some((_, used))) = decode(&buf) {
                assert!(used <= buf.len());
            }
        }
    }
}
