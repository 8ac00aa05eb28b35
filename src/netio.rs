//! Writing a connection's pending output to a non-blocking socket, shared by client
//! connections and peer links.

use std::io::{self, Write};

/// Writes `buf[*pos..]` until the socket would block. Returns the bytes written, or an
/// error when the connection is dead. Once everything is written the buffer is emptied;
/// a buffer whose sent part dominates is compacted, so each byte moves O(1) times however
/// slowly the socket drains.
pub fn write_pending(w: &mut impl Write, buf: &mut Vec<u8>, pos: &mut usize) -> io::Result<usize> {
    let mut total = 0;
    while *pos < buf.len() {
        match w.write(&buf[*pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *pos += n;
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if *pos == buf.len() {
        buf.clear();
        *pos = 0;
    } else if *pos > buf.len() / 2 {
        buf.drain(..*pos);
        *pos = 0;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `room` bytes per call and then would block.
    struct Slow {
        got: Vec<u8>,
        room: usize,
        calls: usize,
    }

    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room);
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_everything_in_order_across_would_block() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut buf = data.clone();
        let mut pos = 0;
        let mut s = Slow {
            got: Vec::new(),
            room: 7,
            calls: 0,
        };
        while !buf.is_empty() {
            write_pending(&mut s, &mut buf, &mut pos).expect("write");
            assert!(pos <= buf.len());
        }
        assert_eq!(s.got, data);
        assert_eq!(pos, 0);
    }

    #[test]
    fn a_dead_socket_is_an_error() {
        struct Dead;
        impl Write for Dead {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut buf, mut pos) = (b"x".to_vec(), 0);
        assert!(write_pending(&mut Dead, &mut buf, &mut pos).is_err());
    }
}
