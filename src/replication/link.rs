//! One connection on the replication port: its socket, frame buffers and what its handshake
//! told us about the other side.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;

use crate::protocol::repl::NONCE_LEN;

/// What the other end said in its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerHello {
    pub node_id: u8,
    pub run_id: u64,
    pub wants_bootstrap: bool,
}

pub struct Link {
    pub stream: TcpStream,
    /// We opened this connection (it matters for the one-link tie-break).
    pub dialed: bool,
    /// A dial still waiting for its connect to complete.
    pub connecting: bool,
    /// Set once the handshake (and, with a secret, the peer's proof) is complete.
    pub peer: Option<PeerHello>,
    /// The peer's hello while its proof is awaited.
    pub pending: Option<(PeerHello, [u8; NONCE_LEN])>,
    /// This side's nonce for this connection.
    pub nonce: [u8; NONCE_LEN],
    /// Received bytes are `rbuf[rpos..rend]`. The rest of `rbuf` is initialised room that
    /// reads go straight into: no zeroing per read, and no second copy of every byte.
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    /// Output: `wbuf[wpos..]`, with the change-log buffers of `logs` spliced in at their
    /// offsets.
    pub wbuf: Vec<u8>,
    wpos: usize,
    logs: VecDeque<Queued>,
    /// Unsent bytes of `logs`.
    log_bytes: usize,
    pub last_rx: Instant,
    pub opened: Instant,
}

/// A change-log buffer (see `changelog.rs`) queued for sending where it is: it goes out
/// once the bytes of `wbuf` before offset `at` have. Copying it into `wbuf` instead cost a
/// second copy of every value on the core the workers use.
struct Queued {
    at: usize,
    buf: Arc<Vec<u8>>,
    sent: usize,
}

/// Most pieces one vectored write hands the socket.
const MAX_IOV: usize = 32;

/// Free room a read asks the socket to fill, at least.
const READ_ROOM: usize = 64 * 1024;

pub enum ReadResult {
    /// The socket has nothing more for now.
    Drained,
    /// The cap was reached; more may be waiting.
    More,
    Closed,
}

impl Link {
    pub fn new(stream: TcpStream, dialed: bool, connecting: bool) -> Link {
        let now = Instant::now();
        Link {
            stream,
            dialed,
            connecting,
            peer: None,
            pending: None,
            nonce: super::auth::nonce(),
            rbuf: Vec::new(),
            rpos: 0,
            rend: 0,
            wbuf: Vec::with_capacity(64 * 1024),
            wpos: 0,
            logs: VecDeque::new(),
            log_bytes: 0,
            last_rx: now,
            opened: now,
        }
    }

    /// Reads what the socket has, up to about `cap` bytes, so a fast sender cannot make
    /// the receiver buffer a whole copy before applying it.
    pub fn read_some(&mut self, cap: usize) -> ReadResult {
        if self.rpos > 0 {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        let mut got = 0;
        while got < cap {
            if self.rbuf.len() - self.rend < READ_ROOM {
                self.rbuf.resize(self.rend + READ_ROOM, 0);
            }
            let Some(room) = self.rbuf.get_mut(self.rend..) else {
                return ReadResult::Closed;
            };
            match self.stream.read(room) {
                Ok(0) => return ReadResult::Closed,
                Ok(n) => {
                    self.rend += n;
                    self.last_rx = Instant::now();
                    got += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadResult::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadResult::Closed,
            }
        }
        ReadResult::More
    }

    /// Received bytes not yet decoded, and the output buffer, borrowed together so a frame
    /// (which borrows the input) can be answered into the output.
    pub fn split(&mut self) -> (&[u8], &mut Vec<u8>) {
        let input = self.rbuf.get(self.rpos..self.rend).unwrap_or(&[]);
        (input, &mut self.wbuf)
    }

    pub fn consume(&mut self, n: usize) {
        self.rpos = (self.rpos + n).min(self.rend);
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        }
    }

    pub fn pending_output(&self) -> usize {
        self.wbuf.len() - self.wpos + self.log_bytes
    }

    /// Queues a change-log buffer behind what `wbuf` holds now. The caller keeps its own
    /// reference until the peer acknowledges the frames.
    pub fn push_log(&mut self, buf: Arc<Vec<u8>>) {
        self.log_bytes += buf.len();
        self.logs.push_back(Queued {
            at: self.wbuf.len(),
            buf,
            sent: 0,
        });
    }

    /// Writes what the socket takes; an error means the link is dead.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.logs.is_empty() {
            let n = {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let mut n = 0;
                let (mut pos, mut all) = (self.wpos, true);
                for q in &self.logs {
                    if n + 2 > MAX_IOV {
                        all = false;
                        break;
                    }
                    if let Some(b) = self.wbuf.get(pos..q.at).filter(|b| !b.is_empty()) {
                        iov[n] = IoSlice::new(b);
                        n += 1;
                    }
                    iov[n] = IoSlice::new(q.buf.get(q.sent..).unwrap_or_default());
                    n += 1;
                    pos = q.at;
                }
                if all && n < MAX_IOV {
                    if let Some(b) = self.wbuf.get(pos..).filter(|b| !b.is_empty()) {
                        iov[n] = IoSlice::new(b);
                        n += 1;
                    }
                }
                match self.stream.write_vectored(&iov[..n]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.advance(n);
        }
        crate::netio::write_pending(&mut self.stream, &mut self.wbuf, &mut self.wpos).map(|_| ())
    }

    /// Counts `n` more bytes as written, in output order.
    fn advance(&mut self, mut n: usize) {
        loop {
            let end = self.logs.front().map_or(self.wbuf.len(), |q| q.at);
            let own = end.saturating_sub(self.wpos).min(n);
            self.wpos += own;
            n -= own;
            let Some(q) = self.logs.front_mut() else {
                break;
            };
            if self.wpos < q.at {
                break;
            }
            let take = (q.buf.len() - q.sent).min(n);
            q.sent += take;
            self.log_bytes -= take;
            n -= take;
            if q.sent < q.buf.len() {
                break;
            }
            self.logs.pop_front();
        }
        // What went out before the first queued log can go; the offsets move with it.
        if self.wpos > self.wbuf.len() / 2 || self.wpos == self.wbuf.len() {
            self.wbuf.drain(..self.wpos);
            for q in &mut self.logs {
                q.at -= self.wpos;
            }
            self.wpos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link writing into a loopback connection, and the std stream that reads it.
    fn pair() -> (Link, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let out = std::net::TcpStream::connect(addr).expect("connect");
        out.set_nonblocking(true).expect("nonblocking");
        let (inp, _) = l.accept().expect("accept");
        inp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        (Link::new(TcpStream::from_std(out), true, false), inp)
    }

    #[test]
    fn queued_logs_go_out_between_the_bytes_around_them_in_order() {
        let (mut link, mut inp) = pair();
        let mut want = Vec::new();
        // Several megabytes, so the socket fills and writes stop part-way through pieces.
        for i in 0..200u32 {
            let own = vec![(i % 251) as u8; 100 + (i as usize * 37) % 5000];
            link.wbuf.extend_from_slice(&own);
            want.extend_from_slice(&own);
            if i % 3 != 2 {
                let log: Vec<u8> = (0..(i as usize * 977) % 60_000)
                    .map(|j| (j as u32 ^ i) as u8)
                    .collect();
                want.extend_from_slice(&log);
                link.push_log(Arc::new(log));
            }
        }
        assert_eq!(link.pending_output(), want.len());
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 256 * 1024];
        let mut pending = link.pending_output();
        while got.len() < want.len() {
            link.flush().expect("flush");
            // Never more than what was not read yet; never growing.
            assert!(link.pending_output() <= (want.len() - got.len()).min(pending));
            pending = link.pending_output();
            let n = inp.read(&mut chunk).expect("read");
            assert!(n > 0, "the link closed early");
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes out of order");
        assert_eq!(link.pending_output(), 0);
        assert!(link.logs.is_empty() && link.wbuf.is_empty());
    }
}
