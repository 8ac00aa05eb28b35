mod proxy;
use std::io::{Read, Write};
#[test]
fn proxy_passes_cuts_and_blackholes() {
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let eaddr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in echo.incoming() {
            let mut s = s.unwrap();
            std::thread::spawn(move || {
                let mut b = [0u8; 1024];
                loop {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&b[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    let p = proxy::Proxy::start(eaddr);
    let mut c = std::net::TcpStream::connect(p.addr).unwrap();
    c.write_all(b"hello").unwrap();
    let mut b = [0u8; 5];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello");
    p.set(proxy::Mode::Cut);
    let mut b = [0u8; 5];
    c.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let _ = c.write_all(b"x");
    assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
    p.set(proxy::Mode::BlackHole);
    let mut c = std::net::TcpStream::connect(p.addr).unwrap();
    c.write_all(b"hello").unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    assert!(c.read(&mut b).is_err());
    p.set(proxy::Mode::Pass);
    let mut c = std::net::TcpStream::connect(p.addr).unwrap();
    c.write_all(b"again").unwrap();
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"again");
    drop(p);
}
