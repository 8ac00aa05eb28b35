//! One connection on the replication port: its socket, frame buffers and what its handshake
//! told us about the other side.

use std::io::{self, Read};
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
    pub wbuf: Vec<u8>,
    wpos: usize,
    pub last_rx: Instant,
    pub opened: Instant,
}

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
        self.wbuf.len() - self.wpos
    }

    /// Writes what the socket takes; an error means the link is dead.
    pub fn flush(&mut self) -> io::Result<()> {
        crate::netio::write_pending(&mut self.stream, &mut self.wbuf, &mut self.wpos).map(|_| ())
    }
}
