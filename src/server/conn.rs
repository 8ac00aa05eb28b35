//! One client connection's socket and buffers: reading into a reusable buffer, writing
//! out pending replies, and the byte-swallowing state after an oversized value.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::shared::ConnInfo;

/// A client socket, TCP or UNIX.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn fd(&self) -> i32 {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// Read granularity. memcached reads up to 16 KiB at a time, and its 2048-byte
/// line rule is applied to what one read brought in; reading the same amount keeps
/// the close-or-wait decision for long lines the same.
pub const READ_CHUNK: usize = 16 * 1024;

/// Buffers larger than this are given back after use, so a single big value does not pin
/// memory on an idle connection.
const KEEP_BUF: usize = 64 * 1024;

pub enum ReadOutcome {
    /// Some bytes arrived; `drained` when fewer than asked for, i.e. the socket had no more.
    Data { n: usize, drained: bool },
    /// Nothing available right now.
    WouldBlock,
    /// The peer closed its side (or the socket failed).
    Eof,
}

pub struct Conn {
    pub stream: Stream,
    pub info: Arc<ConnInfo>,
    /// Bytes `rbuf[rpos..rlen]` are received and not yet parsed. `rbuf` is kept zero-filled
    /// up to its capacity so reads go straight into it without re-initialising.
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    pub wbuf: Vec<u8>,
    wpos: usize,
    /// Bytes still to discard after an oversized value was refused.
    pub swallow: usize,
    /// Close once the pending output is written.
    pub closing: bool,
    /// The client has shut down its sending side.
    pub eof: bool,
    /// The last readiness event reported the client's side closed: read on to the EOF
    /// even after a short read.
    pub read_closed: bool,
    /// A read ahead of this connection's turn left its socket empty: its turn serves
    /// what was read without first asking the socket again.
    pub drained: bool,
    pub write_interest: bool,
}

impl Conn {
    pub fn new(stream: Stream, info: Arc<ConnInfo>) -> Conn {
        Conn {
            stream,
            info,
            rbuf: vec![0; READ_CHUNK],
            rpos: 0,
            rlen: 0,
            wbuf: Vec::new(),
            wpos: 0,
            swallow: 0,
            closing: false,
            eof: false,
            read_closed: false,
            drained: false,
            write_interest: false,
        }
    }

    /// The unparsed input and the output buffer, borrowed together so a request parsed
    /// from the one can be answered into the other without copying.
    #[inline]
    pub fn io_split(&mut self) -> (&[u8], &mut Vec<u8>) {
        (&self.rbuf[self.rpos..self.rlen], &mut self.wbuf)
    }

    /// The unparsed input.
    #[inline]
    pub fn input(&self) -> &[u8] {
        &self.rbuf[self.rpos..self.rlen]
    }

    /// Marks `n` bytes of the input as used.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.rpos = (self.rpos + n).min(self.rlen);
        if self.rpos == self.rlen {
            self.rpos = 0;
            self.rlen = 0;
        }
    }

    /// Discards swallowed bytes from the buffered input.
    pub fn swallow_buffered(&mut self) {
        if self.swallow > 0 {
            let n = self.swallow.min(self.rlen - self.rpos);
            self.swallow -= n;
            self.consume(n);
        }
    }

    /// Reads once into the buffer, growing it when the unparsed input fills it (a request
    /// bigger than the buffer, such as a large value or a long multi-get line).
    pub fn read_some(&mut self) -> ReadOutcome {
        if self.rpos > 0 && self.rlen == self.rbuf.len() {
            self.rbuf.copy_within(self.rpos..self.rlen, 0);
            self.rlen -= self.rpos;
            self.rpos = 0;
        }
        if self.rlen == self.rbuf.len() {
            let grown = (self.rbuf.len() * 2).max(READ_CHUNK);
            self.rbuf.resize(grown, 0);
        }
        let end = (self.rlen + READ_CHUNK).min(self.rbuf.len());
        let asked = end - self.rlen;
        loop {
            match self.stream.read(&mut self.rbuf[self.rlen..end]) {
                Ok(0) => return ReadOutcome::Eof,
                Ok(n) => {
                    self.rlen += n;
                    return ReadOutcome::Data {
                        n,
                        drained: n < asked,
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadOutcome::Eof,
            }
        }
    }

    /// Unparsed input size; the worker bounds it.
    pub fn buffered(&self) -> usize {
        self.rlen - self.rpos
    }

    pub fn pending_output(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes as much pending output as the socket takes. Returns bytes written, or an
    /// error when the connection is dead.
    pub fn flush(&mut self) -> io::Result<usize> {
        let n = crate::netio::write_pending(&mut self.stream, &mut self.wbuf, &mut self.wpos)?;
        if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP_BUF {
            self.wbuf = Vec::new();
        }
        Ok(n)
    }

    /// Gives back an oversized read buffer once it is empty.
    pub fn shrink_idle(&mut self) {
        if self.rlen == 0 && self.rbuf.len() > KEEP_BUF {
            self.rbuf = vec![0; READ_CHUNK];
        }
    }
}
